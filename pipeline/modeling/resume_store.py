"""A run's resume state kept on the DVC remote as well (`runtime.checkpoint_every`), so that a
run retried on another machine resumes where the lost one stopped.

Layout on the project's default DVC remote: `atelier-resume/<run>-<key>/`, `key` the first 16 hex
digits of the SHA-256 of the run's fingerprint (params, data, code): only the same run finds it.
Each push writes a new generation, `gen-<epoch>/` (every file of `checkpoints/<run>/` but the
lock), then `latest.json` naming it, then removes the older generations, so a kill during a push
leaves the previous generation in force. A fetched state is checked like a local one
(`ResumeState.start`): one that does not load is discarded with a log line saying why.

Nothing here imports DVC unless `checkpoint_every` is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from pipeline.core.errors import AtelierError
from pipeline.core.runlock import LOCK_NAME
from pipeline.modeling.resume import Fingerprint

log = logging.getLogger(__name__)

PREFIX = "atelier-resume"
LATEST = "latest.json"


class RemoteResumeStore:
    """One run's resume state on the DVC remote: fetched before training, pushed every
    `every` epochs, discarded when the run finishes."""

    def __init__(self, fs, base: str, every: int, remote: str):
        self.fs = fs
        self.base = base
        self.every = every
        self.remote = remote

    @classmethod
    def open(
        cls, root: Path, run: str, fingerprint: Fingerprint, every: int
    ) -> RemoteResumeStore | None:
        """The store of this run on `root`'s default DVC remote; None when `every` is 0.

        Raises:
            AtelierError: `every` is set but the project has no default DVC remote.
        """
        if every <= 0:
            return None
        from dvc.config import NoRemoteError
        from dvc.repo import Repo

        try:
            with Repo(str(root)) as repo:
                remote = repo.cloud.get_remote(command="train")
        except NoRemoteError:
            raise AtelierError(
                f"runtime.checkpoint_every is {every}, but the project has no default DVC remote "
                "to keep the resume state on: add one (`dvc remote add -d storage <url>`) or set "
                "runtime.checkpoint_every to 0 (the state then stays on this machine)."
            ) from None
        digest = hashlib.sha256(
            json.dumps(fingerprint.to_json(), sort_keys=True).encode()
        ).hexdigest()
        base = remote.fs.join(remote.path, PREFIX, f"{run}-{digest[:16]}")
        return cls(remote.fs, base, every, remote.name)

    def fetch(self, directory: Path) -> int | None:
        """Copy the latest generation into `directory` unless it already holds a state;
        return that generation's epoch, or None when there was nothing to fetch."""
        directory = Path(directory)
        if directory.is_dir() and any(e.name != LOCK_NAME for e in directory.iterdir()):
            return None
        latest = self.fs.join(self.base, LATEST)
        if not self.fs.exists(latest):
            return None
        try:
            pointer = json.loads(self.fs.cat_file(latest))
            generation, epoch = str(pointer["generation"]), int(pointer["epoch"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("resume state on remote %r unreadable (%s); not using it", self.remote, exc)
            return None
        source = self.fs.join(self.base, generation)
        for path in self.fs.find(source):
            target = directory / Path(path).relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(path, str(target))
        log.info(
            "resume state after epoch %d fetched from DVC remote %r (%s)",
            epoch, self.remote, self.base,
        )  # fmt: skip
        return epoch

    def push(self, directory: Path, epoch: int) -> None:
        """Every `every` epochs: `directory` as generation `gen-<epoch>`, then point to it."""
        if epoch % self.every:
            return
        generation = f"gen-{epoch:05d}"
        target = self.fs.join(self.base, generation)
        directory = Path(directory)
        for path in sorted(directory.rglob("*")):
            if path.is_file() and path.name != LOCK_NAME:
                destination = self.fs.join(target, *path.relative_to(directory).parts)
                self.fs.makedirs(self.fs.parent(destination), exist_ok=True)
                self.fs.put_file(str(path), destination)
        pointer = {"generation": generation, "epoch": epoch}
        self.fs.pipe_file(self.fs.join(self.base, LATEST), json.dumps(pointer).encode())
        for entry in self.fs.ls(self.base, detail=False):
            name = self.fs.name(entry)
            if name.startswith("gen-") and name != generation:
                self.fs.rm(entry, recursive=True)
        log.debug("resume state after epoch %d pushed to DVC remote %r", epoch, self.remote)

    def discard(self) -> None:
        """Remove the run's state from the remote (the run finished)."""
        if self.fs.exists(self.base):
            self.fs.rm(self.base, recursive=True)
