"""What the metric diff compares: a revision's committed metrics and params (git, DVC) and the
workspace's metrics."""

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


def metrics_at(commit: str, root: Path) -> dict[str, dict]:
    """{experiment: metrics} as committed at `commit` (empty when it has no metrics/)."""
    found = {}
    for folder, suffix in ((paths.METRICS_DIR, ""), (paths.METRICS_DIR / "crossval", KFOLD_SUFFIX)):
        listing = _run(["git", "ls-tree", "--name-only", f"{commit}:./{folder.as_posix()}"], root)
        if listing.returncode != 0:
            continue
        for name in listing.stdout.split():
            if not name.endswith(".json"):
                continue
            shown = _run(["git", "show", f"{commit}:./{folder.as_posix()}/{name}"], root)
            if shown.returncode == 0:
                found[name.removesuffix(".json") + suffix] = json.loads(shown.stdout)
    return found


def metrics_in_workspace(root: Path, experiments: list[str] | None) -> dict[str, dict]:
    """{experiment: metrics} of the workspace, limited to `experiments` when given."""
    found = {}
    for folder, suffix in ((paths.METRICS_DIR, ""), (paths.METRICS_DIR / "crossval", KFOLD_SUFFIX)):
        folder = root / folder
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if experiments is None or path.stem in experiments:
                found[path.stem + suffix] = json.loads(path.read_text())
    return found
