"""One training per run at a time: an exclusive `flock` on the run's checkpoint directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from pipeline.core.errors import AtelierError
from pipeline.core.processes import alive

LOCK_NAME = "lock"


class TrainingInProgress(AtelierError):
    """The run is being trained by another live process (it holds the run's lock)."""


class RunLock:
    """An exclusive `flock` on `<directory>/lock`, held while this process trains `run`.

    The kernel releases the lock when its holder exits, however it exits (SIGKILL included), so
    a lock file left by a dead process can be taken at once: its state is stale, not in use. The
    holder writes its PID into the file, for the message that refuses a second training. On
    release, a directory that holds nothing but the lock is removed (with `checkpoints/` when
    that is left empty), still under the lock.
    """

    def __init__(self, directory: Path, run: str):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.run = run
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise `TrainingInProgress` naming the run and the holder's PID."""
        for _ in range(100):
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the previous holder removed the directory meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_pid(fd)
                os.close(fd)
                raise TrainingInProgress(self._refusal(holder)) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            # The file was removed by its last holder after we opened it: lock the new one.
            os.close(fd)
        raise OSError(f"Could not take the lock {self.path}: it kept being replaced.")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            with contextlib.suppress(OSError):  # best effort: a leftover lock file is harmless
                if [entry.name for entry in self.directory.iterdir()] == [LOCK_NAME]:
                    self.path.unlink()
                    self.directory.rmdir()
                    self.directory.parent.rmdir()  # checkpoints/, when no other run has state
        finally:
            os.close(self._fd)
            self._fd = None

    def _refusal(self, holder: int | None) -> str:
        who = f"process {holder}" if holder else "another process"
        stop = f"stop it (`kill {holder}`)" if holder else "stop it"
        return (
            f"Experiment {self.run!r} is already being trained by {who}, which holds "
            f"{self.path}; a second training of the same run would corrupt its state. Wait for "
            f"it to finish, or {stop} and run again: the new run resumes where it stopped."
        )


def _holder_pid(fd: int) -> int | None:
    """The PID the holder wrote into the lock file.

    It writes it just after locking, over the PID of the file's last holder (a dead process):
    until then, wait a little.
    """
    deadline = time.monotonic() + 1.0
    while True:
        raw = os.pread(fd, 32, 0)
        if raw.endswith(b"\n") and raw.strip().isdigit() and alive(int(raw)):
            return int(raw)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)
