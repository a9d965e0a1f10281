"""What the metric diff compares: a revision's committed figures and params (git, DVC) and the
workspace's figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.core import paths
from pipeline.core.errors import AtelierError

KFOLD_SUFFIX = " (K-fold)"  # metrics/crossval/<experiment>.json appear as "<experiment> (K-fold)"


def _run(command: list[str], root: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise AtelierError(
            f"`{command[0]}` is not installed or not on PATH; the diff needs git and DVC."
        ) from None


def resolve_revision(base_rev: str, root: Path) -> str:
    """The full commit id of `base_rev`, or an `AtelierError` that says how to get it."""
    inside = _run(["git", "rev-parse", "--is-inside-work-tree"], root)
    if inside.returncode != 0:
        raise AtelierError(f"{root.resolve()} is not inside a git repository: run the diff there.")
    found = _run(["git", "rev-parse", "--verify", "--quiet", f"{base_rev}^{{commit}}"], root)
    if found.returncode != 0 or not found.stdout.strip():
        raise AtelierError(
            f"Base revision {base_rev!r} does not exist in this repository. Pass a branch, tag or "
            f"commit that `git rev-parse` knows; in a shallow CI checkout fetch it first "
            f"(`git fetch origin {base_rev}`, or check out with fetch-depth: 0)."
        )
    return found.stdout.strip()


def params_diff(base_commit: str, root: Path) -> dict[str, dict[str, dict]]:
    """`dvc params diff <base> --json`: {file: {key: {"old": ..., "new": ...}}}."""
    command = [sys.executable, "-m", "dvc", "params", "diff", base_commit, "--json"]
    result = _run(command, root)
    if result.returncode != 0:
        raise AtelierError(
            f"`dvc params diff {base_commit[:12]}` failed: "
            f"{(result.stderr or result.stdout).strip()}"
        )
    text = result.stdout.strip()
    return json.loads(text) if text else {}


def _show(commit: str, path: Path, root: Path) -> dict | None:
    shown = _run(["git", "show", f"{commit}:./{path.as_posix()}"], root)
    return json.loads(shown.stdout) if shown.returncode == 0 else None


def metrics_at(commit: str, root: Path) -> dict[str, dict]:
    """{experiment: figures} as committed at `commit` (empty when it has no metrics/): each
    experiment's evaluation record (`plots/<experiment>/evaluation.json`; `metrics/<name>.json`
    where a revision has none, as before the summaries) and each K-fold summary."""
    found = {}
    for folder, suffix in ((paths.METRICS_DIR, ""), (paths.METRICS_DIR / "crossval", KFOLD_SUFFIX)):
        listing = _run(["git", "ls-tree", "--name-only", f"{commit}:./{folder.as_posix()}"], root)
        if listing.returncode != 0:
            continue
        for name in listing.stdout.split():
            if not name.endswith(".json"):
                continue
            stem = name.removesuffix(".json")
            record = None if suffix else _show(commit, paths.evaluation_file(stem), root)
            if record is None:
                record = _show(commit, folder / name, root)
            if record is not None:
                found[stem + suffix] = record
    return found


def metrics_in_workspace(root: Path, experiments: list[str] | None) -> dict[str, dict]:
    """{experiment: figures} of the workspace, as `metrics_at` reads them, limited to
    `experiments` when given."""
    found = {}
    for folder, suffix in ((paths.METRICS_DIR, ""), (paths.METRICS_DIR / "crossval", KFOLD_SUFFIX)):
        folder = root / folder
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if experiments is None or path.stem in experiments:
                record = None if suffix else paths.evaluation_file(path.stem, root)
                source = record if record is not None and record.is_file() else path
                found[path.stem + suffix] = json.loads(source.read_text())
    return found
