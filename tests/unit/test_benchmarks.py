"""Every benchmark script still runs on today's code and params: each one in its `--quick` mode.

Speed itself is never asserted (benchmarks/RESULTS.md records it, as ratios); these tests only
check that each script exits 0 and leaves the repository's working tree as it found it, so that
none of them rots between the runs that measure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = PROJECT_ROOT / "benchmarks"
NOT_BENCHMARKS = {"seed_000.py"}  # the seed tutorial's script, kept verbatim
# Under about 20 s in --quick on 2 cores; every other script (DVC pipelines, Prefect, Keras
# training) is marked slow, a new one included until it is timed and listed here.
FAST = {"multilabel_input.py", "seed_workloads.py"}
SCRIPTS = sorted(path.name for path in BENCHMARKS.glob("*.py") if path.name not in NOT_BENCHMARKS)


def working_tree_status() -> set[str]:
    """`git status --porcelain` of the repository, one entry per changed or untracked file."""
    result = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"not a git work tree: {result.stderr.strip()}")
    return set(result.stdout.splitlines())


@pytest.mark.parametrize(
    "script",
    [name if name in FAST else pytest.param(name, marks=pytest.mark.slow) for name in SCRIPTS],
)
def test_benchmark_runs_quick_and_leaves_the_repository_untouched(script):
    env = {**os.environ, "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    before = working_tree_status()

    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--quick"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )

    assert result.returncode == 0, (
        f"benchmarks/{script} --quick exited {result.returncode}:\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    after = working_tree_status()
    assert after == before, (
        f"benchmarks/{script} --quick changed the repository: "
        f"new {sorted(after - before)}, gone {sorted(before - after)}"
    )
