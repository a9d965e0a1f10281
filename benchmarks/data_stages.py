"""Time the data stages on Fashion-MNIST from the local (Debian) mirror; print a Markdown table.

What is measured, each as the wall time of a whole process (interpreter start and imports
included, as DVC runs them):

- `python -m pipeline download|preprocess|split fashion_mnist`, each stage alone (median of runs);
- `dvc repro download preprocess split` when all three must run (DVC's overhead included);
- a no-op `dvc repro` of those stages (median of runs);
- the size on disk of `data/prepared/fashion_mnist` (and of the raw files, for comparison).

Everything happens in a throwaway copy of the project (git + DVC initialised there), so the
project's own `data/` and `dvc.lock` are untouched. Usage: `python benchmarks/data_stages.py
[--repeats 3] [--keep]`; `make bench` runs it. `--quick` runs once on scikit-learn's bundled
digits instead (seconds; a check that the script still runs, not a measurement).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ruamel.yaml import YAML

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATASET = "fashion_mnist"
QUICK_DATASET = "digits"
STAGES = ("download", "preprocess", "split")
GOALS = {"three stages": 10.0, "no-op repro": 2.0, "prepared MB": 100.0}


def read_params(path: Path) -> dict:
    """`params.yaml` as DVC reads it: YAML 1.2 (PyYAML's 1.1 would read `1e-3` as text)."""
    return YAML(typ="safe", pure=True).load(path.read_text())


def write_params(path: Path, params: dict) -> None:
    with path.open("w") as stream:
        YAML(typ="safe", pure=True).dump(params, stream)


def make_copy(destination: Path, dataset: str) -> None:
    shutil.copytree(
        PROJECT_ROOT / "pipeline",
        destination / "pipeline",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("dvc.yaml", "pyproject.toml", ".dvcignore", ".gitignore"):
        if (PROJECT_ROOT / name).exists():
            shutil.copy2(PROJECT_ROOT / name, destination / name)
    params = read_params(PROJECT_ROOT / "params.yaml")
    params["data"]["datasets"] = [dataset]
    params["experiments"] = {}
    params["crossval"] = {"experiments": [], "folds": []}  # no experiments, so no K-fold runs
    write_params(destination / "params.yaml", params)


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed, result.stdout + result.stderr


def size_mb(directory: Path) -> float:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file()) / 1e6


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary project copy")
    parser.add_argument(
        "--quick", action="store_true", help="one run on the digits dataset: a smoke check"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    dataset = QUICK_DATASET if args.quick else DATASET

    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
    }
    root = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    try:
        make_copy(root, dataset)
        for command in (
            ["git", "init", "--quiet"],
            ["git", "config", "user.name", "bench"],
            ["git", "config", "user.email", "bench@atelier.invalid"],
            ["dvc", "init", "--quiet"],
        ):
            timed(command, root, env)
        shutil.copy2(PROJECT_ROOT / ".dvc" / "config", root / ".dvc" / "config")

        stage_times: dict[str, list[float]] = {stage: [] for stage in STAGES}
        for _ in range(args.repeats):
            for stage in STAGES:
                elapsed, _ = timed([sys.executable, "-m", "pipeline", stage, dataset], root, env)
                stage_times[stage].append(elapsed)

        targets = list(STAGES)
        full_repro, output = timed(["dvc", "repro", *targets], root, env)
        assert output.count("Running stage") == 3, output
        noop_times = []
        for _ in range(args.repeats):
            elapsed, output = timed(["dvc", "repro", *targets], root, env)
            assert "Running stage" not in output, output
            noop_times.append(elapsed)

        prepared = size_mb(root / "data" / "prepared" / dataset)
        raw = size_mb(root / "data" / "raw" / dataset)
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    medians = {stage: statistics.median(times) for stage, times in stage_times.items()}
    three = sum(medians.values())
    noop = statistics.median(noop_times)

    def verdict(value: float, goal: float) -> str:
        return "met" if value < goal else "**missed**"

    dvc_version = subprocess.run(
        ["dvc", "--version"], env=env, capture_output=True, text=True
    ).stdout.strip()
    source = (
        "scikit-learn's digits (--quick: not comparable with the goals)"
        if args.quick
        else "Fashion-MNIST from /usr/share/datasets/fashion-mnist"
    )
    print(
        f"Machine: {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, "
        f"DVC {dvc_version}; median of {args.repeats} runs; {source}.\n"
    )
    print("| Measure | Time / size | Goal | |")
    print("|---|---:|---:|---|")
    for stage in STAGES:
        spread = f"{min(stage_times[stage]):.2f}–{max(stage_times[stage]):.2f}"
        print(f"| `python -m pipeline {stage} {dataset}` | {medians[stage]:.2f} s ({spread}) | | |")
    print(
        f"| three stages, sum | {three:.2f} s | < {GOALS['three stages']:.0f} s "
        f"| {verdict(three, GOALS['three stages'])} |"
    )
    print(f"| `dvc repro` of the three stages (all run) | {full_repro:.2f} s | | |")
    print(
        f"| no-op `dvc repro` of the three stages | {noop:.2f} s | < {GOALS['no-op repro']:.0f} s "
        f"| {verdict(noop, GOALS['no-op repro'])} |"
    )
    print(
        f"| `data/prepared/{dataset}` on disk (sum of file sizes) | {prepared:.1f} MB | "
        f"< {GOALS['prepared MB']:.0f} MB | {verdict(prepared, GOALS['prepared MB'])} |"
    )
    print(f"| `data/raw/{dataset}` (gzip, for comparison) | {raw:.1f} MB | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
