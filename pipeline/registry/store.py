"""A version's files, read through DVC and verified against `dvc.lock` before anything uses them.

A version is a commit; `dvc.lock` at that commit records the hash of its champion directory
(`md5: <hash>.dir`), and git is what the registry trusts. The files themselves come from the
DVC cache or the default remote, which anyone with write access to either can change. So every
reader — `get` and `load` (the files handed out), `promote`, `release` and `show` (the card whose
metrics decide or are displayed), `rollback` (the version given the stage back) — goes through
`fetch_verified`: the files are copied while being hashed, and nothing is returned unless they
hash to what `dvc.lock` recorded. A mismatch is a `FilesMismatch` that names the file, both
hashes, which copy is bad and how to restore it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.registry.errors import FilesMismatch, FilesUnavailable, RegistryError
from pipeline.registry.tags import git
from pipeline.stages.select import CARD_FILE


@dataclass(frozen=True)
class Champion:
    """Where a version's files are: output `path` of DVC stage `stage` as of git `commit`."""

    label: str  # `digits-classifier v0.1.0 (commit 1a2b3c4)`, for messages
    commit: str
    stage: str  # `select@digits`
    path: str  # `models/champions/digits`


def tree_md5(files: dict[str, str]) -> str:
    """DVC's hash of a directory, from `{relative path: md5}` of its files (`<md5>.dir`)."""
    listing = [{"md5": md5, "relpath": path} for path, md5 in sorted(files.items())]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def lock_md5(root: Path, commit: str, stage: str, path: str) -> str | None:
    """The md5 that dvc.lock at `commit` records for output `path` of `stage`, if any."""
    try:
        text = git(root, "show", f"{commit}:dvc.lock")
    except RegistryError:
        return None
    outs = (yaml.safe_load(text) or {}).get("stages", {}).get(stage, {}).get("outs", [])
    for out in outs:
        if out.get("path") == path:
            return out.get("md5")
    return None


def fetch_verified(root: Path, champion: Champion, into: Path) -> dict[str, str]:
    """Copy `champion`'s files into directory `into` and verify them against dvc.lock.

    The files come from DVC (the local cache, else the default remote) as of the champion's
    commit, hashed while they are copied. Returns `{relative path: md5}` when they hash to the
    directory hash dvc.lock recorded at that commit.

    Raises:
        FilesMismatch: a file (or DVC's listing of the directory) differs from what dvc.lock
            recorded; the files already copied into `into` must not be used.
        FilesUnavailable: neither the cache nor the remote has the files.
        RegistryError: dvc.lock at the commit records no such output.
    """
    expected = lock_md5(root, champion.commit, champion.stage, champion.path)
    if expected is None:
        raise RegistryError(
            f"dvc.lock at {champion.commit[:7]} ({champion.label}) records no output "
            f"{champion.path} of {champion.stage}: this commit is not a registrable version."
        )
    with _dvc_fs(root, champion.commit) as fs:
        listing, actual = _copy_all(fs, champion, into)
        if tree_md5(actual) == expected:
            return actual
        raise FilesMismatch(
            _mismatch_message(root, fs, champion, expected, listing, actual)
            + " Nothing was decided, written or tagged on these files."
        )


def read_verified_card(root: Path, champion: Champion) -> dict:
    """The `card.json` of `champion`, once all its files passed `fetch_verified`."""
    with tempfile.TemporaryDirectory(prefix="atelier-verify-") as tmp:
        fetch_verified(root, champion, Path(tmp))
        card = Path(tmp) / CARD_FILE
        if not card.is_file():
            raise RegistryError(
                f"{champion.label} has no {CARD_FILE} in {champion.path}: it was not written by "
                "the select stage. Register a champion that `dvc repro select@...` produced."
            )
        return json.loads(card.read_text())


def verify(root: Path, champion: Champion) -> dict[str, str]:
    """`fetch_verified` into a scratch directory: `{file: md5}` when the files are intact."""
    with tempfile.TemporaryDirectory(prefix="atelier-verify-") as tmp:
        return fetch_verified(root, champion, Path(tmp))


def write_verified(root: Path, champion: Champion, out: Path) -> Path:
    """Write `champion`'s model file and card.json into `out` if they pass `fetch_verified`.

    The files are fetched into a scratch directory inside `out` and moved into place only
    once verified, so a mismatch leaves `out` as it was. Returns the model file's path.
    """
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".registry-get-", dir=out))
    try:
        fetch_verified(root, champion, staging)
        model_name = json.loads((staging / CARD_FILE).read_text())["model_file"]
        for name in (model_name, CARD_FILE):
            (staging / name).replace(out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / model_name


def _copy_all(fs, champion: Champion, into: Path) -> tuple[dict, dict[str, str]]:
    """Copy every file under the champion's path; `(DVC's listed md5s, the copies' md5s)`."""
    prefix = champion.path
    listing: dict[str, str | None] = {}
    actual: dict[str, str] = {}
    try:
        for path, info in sorted(fs.find(prefix, detail=True).items()):
            relative = path[len(prefix) :].lstrip("/")
            listing[relative] = info.get("md5")
            actual[relative] = _copy_hashing(fs, path, into / relative)
    except Exception as exc:  # DVC raises several kinds for an object it cannot find
        raise FilesUnavailable(
            f"Cannot fetch {prefix} of {champion.label} from the DVC cache or remote: {exc}. "
            "Run `dvc fetch --all-tags`, or configure the remote it was pushed to "
            "(`dvc remote add -d ...`)."
        ) from None
    return listing, actual


def _mismatch_message(root, fs, champion: Champion, expected: str, listing, actual) -> str:
    """Say which file differs, both hashes, which copy (cache or remote) is bad, and the fix."""
    head = f"{champion.label} failed verification against dvc.lock at {champion.commit[:7]}:"
    if None in listing.values() or tree_md5(listing) != expected:
        # DVC's own listing of the directory (its `.dir` object) is not the recorded one, so
        # no single file can be blamed: report the directory.
        return (
            f"{head} the files of {champion.path} hash to {tree_md5(actual)} "
            f"({', '.join(sorted(actual)) or 'no files'}), but dvc.lock records {expected}. "
            "The DVC cache or remote holds a different directory than the one registered: run "
            "`dvc fetch --all-tags` from the remote that has it, or register a new version."
        )
    problems, fixes = [], []
    for relative, recorded in sorted(listing.items()):
        if actual[relative] == recorded:
            continue
        problems.append(
            f"{champion.path}/{relative} hashes to md5 {actual[relative]}, but dvc.lock "
            f"records md5 {recorded} (through {champion.path} {expected})"
        )
        cached = _cache_file(root, fs, recorded)
        if cached.is_file():
            shown = cached.relative_to(root) if cached.is_relative_to(root) else cached
            fixes.append(
                f"the DVC cache entry {shown} was changed after the version was registered: "
                "delete it and run `dvc fetch --all-tags` to restore it from the DVC remote"
            )
        else:
            fixes.append(
                f"the DVC remote's copy of {relative} is corrupt: push an intact copy from a "
                "clone that has one (`dvc push`), or run the pipeline again and register a new "
                "version"
            )
    return f"{head} {'; '.join(problems)}. To fix: {'; '.join(dict.fromkeys(fixes))}."


def _cache_file(root: Path, fs, md5: str) -> Path:
    """Where the local DVC cache keeps the object `md5` (whether or not it is there)."""
    try:
        return Path(fs.repo.cache.local.oid_to_path(md5))
    except Exception:  # an older DVC or no repo attribute: DVC 3's default cache layout
        return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _copy_hashing(fs, path: str, target: Path) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5()
    with fs.open(path, "rb") as source, open(target, "wb") as sink:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
            sink.write(block)
    return digest.hexdigest()


class _ClosingFS:
    """Context manager that closes a `DVCFileSystem` (and the repository it opened)."""

    def __init__(self, fs):
        self.fs = fs

    def __enter__(self):
        return self.fs

    def __exit__(self, *exc_info) -> None:
        close = getattr(self.fs, "close", None)
        if close is not None:
            close()


def _dvc_fs(root: Path, commit: str) -> _ClosingFS:
    from dvc.api import DVCFileSystem

    return _ClosingFS(DVCFileSystem(str(root), rev=commit))
