"""What `register` requires of the workspace, and the push that makes a version fetchable.

A version is a commit whose `dvc.lock` matches the workspace: no uncommitted changes, and
`dvc status` clean for the champion's `select` stage and everything it depends on. (This is
also what verifies the champion's card at HEAD: `dvc status` hashes the workspace files.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pipeline.registry.errors import NothingToRegister, RegistryError
from pipeline.registry.tags import git

log = logging.getLogger(__name__)

DVC_LOCK_ATTEMPTS = 10
_T = TypeVar("_T")


def require_clean_tree(root: Path) -> None:
    changes = git(root, "status", "--porcelain", strip=False).splitlines()
    if changes:
        listed = ", ".join(line[3:] for line in changes[:5])
        more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
        raise RegistryError(
            f"The git working tree has uncommitted changes ({listed}{more}): a version must "
            "be a commit. Commit (or stash) them, then register."
        )


def require_pipeline_current(root: Path, dataset: str) -> None:
    from dvc.repo import Repo

    target = f"select@{dataset}"

    def status() -> dict:
        with Repo(str(root)) as repo:
            return repo.status(targets=[stage_target(root, target)], with_deps=True)

    try:
        changed = retry_dvc_lock(status)
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(f"`dvc status {target} --with-deps` failed: {exc}") from None
    if changed:
        stages = ", ".join(sorted(key.rpartition(":")[2] for key in changed))
        raise RegistryError(
            f"dvc.lock is out of date with the workspace for {stages}: run "
            f"`dvc repro {target}`, commit dvc.lock, then register."
        )


def push(root: Path, dataset: str) -> None:
    """`dvc push select@<dataset>` to the default remote; only a warning when there is none."""
    from dvc.repo import Repo

    def run() -> bool:
        with Repo(str(root)) as repo:
            if not repo.config["core"].get("remote"):
                return False
            repo.push(targets=[stage_target(root, f"select@{dataset}")])
            return True

    try:
        pushed = retry_dvc_lock(run)
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(
            f"`dvc push select@{dataset}` failed: {exc}. No version was created."
        ) from None
    if not pushed:
        log.warning(
            "No default DVC remote: the champion of %s stays in this repository's cache "
            "only (`dvc remote add -d NAME URL` makes versions fetchable elsewhere).",
            dataset,
        )


def stage_target(root: Path, stage: str) -> str:
    # DVC resolves a bare stage name against the current directory, not the repo's root.
    return f"{root / 'dvc.yaml'}:{stage}"


def retry_dvc_lock(call: Callable[[], _T]) -> _T:
    """Run `call`, retrying while another DVC process holds the repository lock."""
    from dvc.lock import LockError

    for attempt in range(DVC_LOCK_ATTEMPTS):
        try:
            return call()
        except LockError:
            if attempt == DVC_LOCK_ATTEMPTS - 1:
                raise RegistryError(
                    "Another DVC process kept the repository locked (.dvc/tmp/lock): wait for "
                    "it to finish, then try again."
                ) from None
            log.info("DVC repository locked by another process; retrying")
    raise AssertionError("unreachable")


def require_head_unregistered(artifact: str, head: str, versions: list) -> None:
    """`NothingToRegister` when a version of `artifact` is at `head` already. Checked before
    the workspace is read: a registered HEAD has nothing to register, whatever the state of its
    files (which `promote` then verifies)."""
    at_head = [v.version for v in versions if v.commit == head]
    if at_head:
        raise NothingToRegister(
            f"HEAD ({head[:7]}) is already registered as {artifact} {at_head[-1]}: "
            "nothing to register. Commit a new champion first."
        )
