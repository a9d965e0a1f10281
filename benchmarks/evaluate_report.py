"""Time the evaluate and report stages for every experiment in params.yaml; print a Markdown table.

What is measured, each as the wall time of a whole process (interpreter start and imports —
TensorFlow's included — as DVC runs them):

- `python -m pipeline evaluate <experiment>` for each experiment (median of runs);
- `python -m pipeline report` across all experiments (median of runs), and whether that process
  imported TensorFlow (it must not);
- the size of what the two stages commit to git (`metrics/`, `plots/`, `reports/`).

Everything happens in a throwaway copy of the project (git + DVC initialised there): the data
stages and the train stage run first, untimed, with every experiment's epochs capped at
`--epochs` (default 1) — evaluation scores the same test set whatever the number of epochs, so
the cap changes the setup time only. Usage: `python benchmarks/evaluate_report.py [--repeats 3]
[--epochs 1] [--keep] [--reuse DIR]`. `--quick` keeps only the digits experiments and runs each
stage once (under a minute; a check that the script still runs, not a measurement).
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
GOALS = {"evaluate": 10.0, "report": 15.0}
REPORT_PROBE = (
    "import sys\n"
    "from pipeline.__main__ import main\n"
    "code = main(['report'])\n"
    "print('TENSORFLOW_IMPORTED=' + str('tensorflow' in sys.modules))\n"
    "sys.exit(code)\n"
)


def read_params(path: Path) -> dict:
    """`params.yaml` as DVC reads it: YAML 1.2 (PyYAML's 1.1 would read `1e-3` as text)."""
    return YAML(typ="safe", pure=True).load(path.read_text())


def write_params(path: Path, params: dict) -> None:
    with path.open("w") as stream:
        YAML(typ="safe", pure=True).dump(params, stream)


def make_copy(destination: Path, epochs: int, datasets: list[str] | None = None) -> list[str]:
    """Copy the project into `destination` with epochs capped; return the experiments' names.

    `datasets`, when given, keeps only those datasets and their experiments (and the K-fold runs
    of the experiments kept).
    """
    shutil.copytree(
        PROJECT_ROOT / "pipeline",
        destination / "pipeline",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("dvc.yaml", "pyproject.toml", ".dvcignore", ".gitignore"):
        if (PROJECT_ROOT / name).exists():
            shutil.copy2(PROJECT_ROOT / name, destination / name)
    (destination / ".dvc").mkdir()
    shutil.copy2(PROJECT_ROOT / ".dvc/config", destination / ".dvc/config")
    params = read_params(PROJECT_ROOT / "params.yaml")
    if datasets is not None:
        keep_datasets(params, datasets)
    for experiment in params["experiments"].values():
        if experiment["model"]["name"] != "sgd_logistic":
            experiment["epochs"] = min(int(experiment.get("epochs", 10)), epochs)
    write_params(destination / "params.yaml", params)
    return list(params["experiments"])


def keep_datasets(params: dict, datasets: list[str]) -> None:
    params["data"]["datasets"] = datasets
    params["experiments"] = {
        name: experiment
        for name, experiment in params["experiments"].items()
        if experiment["dataset"] in datasets
    }
    crossval = params.get("crossval", {})
    kept = [name for name in crossval.get("experiments", []) if name in params["experiments"]]
    params["crossval"] = (
        {**crossval, "experiments": kept} if kept else {"experiments": [], "folds": []}
    )


def set_up(workdir: Path, experiments: list[str], env: dict[str, str]) -> float:
    """git + DVC in the copy, then the data and train stages; return the seconds it took."""
    started = time.perf_counter()
    run(["git", "init", "-q"], workdir, env)
    git_identity = {"user.name": "Atelier benchmark", "user.email": "bench@atelier.invalid"}
    for key, value in git_identity.items():
        run(["git", "config", key, value], workdir, env)
    run(["git", "add", "-A"], workdir, env)
    run(["git", "commit", "-q", "-m", "benchmark copy"], workdir, env)  # DVCLive needs a HEAD
    run(["dvc", "repro", *(f"train@{name}" for name in experiments)], workdir, env)
    return time.perf_counter() - started


def run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed, result.stdout + result.stderr


def size_mb(path: Path) -> float:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file()) / 1e6


def summary(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s ({min(times):.2f}–{max(times):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the throwaway copy")
    parser.add_argument(
        "--reuse", type=Path, help="a copy kept by an earlier --keep run: skip the setup"
    )
    parser.add_argument(
        "--quick", action="store_true", help="digits experiments only, one run: a smoke check"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_before = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    workdir = args.reuse or Path(tempfile.mkdtemp(prefix="atelier-bench-eval-"))
    keep = args.keep or args.reuse is not None
    try:
        if args.reuse:  # the trained models stay; the code under test is today's
            shutil.copytree(
                PROJECT_ROOT / "pipeline",
                workdir / "pipeline",
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
            experiments = list(read_params(workdir / "params.yaml")["experiments"])
        else:
            experiments = make_copy(workdir, args.epochs, ["digits"] if args.quick else None)
        setup_s = 0.0
        if not args.reuse:
            setup_s = set_up(workdir, experiments, env)

        rows = []
        for name in experiments:
            times = [
                run([sys.executable, "-m", "pipeline", "evaluate", name], workdir, env)[0]
                for _ in range(args.repeats)
            ]
            rows.append((name, times))
        report_times, imported = [], set()
        for _ in range(args.repeats):
            elapsed, output = run([sys.executable, "-c", REPORT_PROBE], workdir, env)
            report_times.append(elapsed)
            imported.add("TENSORFLOW_IMPORTED=True" in output)
        sizes = {name: size_mb(workdir / name) for name in ("metrics", "plots", "reports")}
    finally:
        if keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()}; {'digits experiments only (--quick); ' if args.quick else ''}"
        f"{args.repeats} runs each; setup (data + train, epochs ≤ "
        f"{args.epochs}) {setup_s:.0f} s, untimed; load average before: {load_before}.\n"
    )
    print("| Measure | Time / size | Goal | |")
    print("|---|---:|---:|---|")
    for name, times in rows:
        met = "met" if statistics.median(times) < GOALS["evaluate"] else "**missed**"
        print(
            f"| `python -m pipeline evaluate {name}` | {summary(times)} "
            f"| < {GOALS['evaluate']:.0f} s | {met} |"
        )
    met = "met" if statistics.median(report_times) < GOALS["report"] else "**missed**"
    print(
        f"| `python -m pipeline report` ({len(rows)} experiments) | {summary(report_times)} "
        f"| < {GOALS['report']:.0f} s | {met} |"
    )
    print(
        f"| report imported TensorFlow | {'yes' if True in imported else 'no'} | no "
        f"| {'**missed**' if True in imported else 'met'} |"
    )
    for name, megabytes in sizes.items():
        print(f"| `{name}/` committed to git | {megabytes:.2f} MB | | |")


if __name__ == "__main__":
    main()
