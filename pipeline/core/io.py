"""Atomic output helpers: a stage's output appears whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_dir(out_dir: Path, *, owner: str = "") -> Iterator[Path]:
    """Yield a staging directory beside `out_dir`; on success it replaces `out_dir`.

    On any exception the staging directory is removed and `out_dir` is left as it was. A process
    killed outright (SIGKILL) cannot remove it: `owner` (such as `<pid>@<host>`) then goes into
    its name, `.<name>.partial-<owner>-<random>`, so that a later run can tell a leftover from a
    directory that a live process is still filling.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out_dir.name}.partial-" + (f"{owner}-" if owner else "")
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir.parent))
    try:
        yield staging
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any, *, sort_keys: bool = True) -> None:
    text = json.dumps(payload, indent=2, sort_keys=sort_keys)
    atomic_write_bytes(path, (text + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def mirror_tree(source: Path, target: Path) -> None:
    """Make `target` hold the files of `source`: each changed file replaced atomically, files
    that `source` no longer has removed. For small trees that a reader may open at any moment
    (DVCLive's files under `live/`, read by `dvc exp show` while a run trains)."""
    files = source.rglob("*") if source.is_dir() else ()
    wanted = {path.relative_to(source) for path in files if path.is_file()}
    for relative in sorted(wanted):
        data = (source / relative).read_bytes()
        destination = target / relative
        if not destination.is_file() or destination.read_bytes() != data:
            atomic_write_bytes(destination, data)
    if target.is_dir():
        for path in target.rglob("*"):
            if path.is_file() and path.relative_to(target) not in wanted:
                path.unlink()
