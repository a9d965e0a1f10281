"""Processes: whether one is alive, and the `<pid>@<host>` tag that names the owner of a file."""

from __future__ import annotations

import os
import re
import socket


def owner_tag(pid: int | None = None) -> str:
    """`<pid>@<host>`: what a staging directory's name says about the process that made it."""
    return f"{os.getpid() if pid is None else pid}@{host()}"


def host() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64] or "localhost"


def alive(pid: int) -> bool:
    """Whether process `pid` exists; True when that cannot be told (not POSIX, a bad PID)."""
    if os.name != "posix" or pid <= 0:
        return True  # cannot tell: keep the directory
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True
