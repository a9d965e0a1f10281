"""How much an experiment's test figures move when only the CPU's instruction set changes.

Two runs of the same commit on two x86 machines differ in their metrics: TensorFlow (oneDNN)
picks its kernels by the instruction set, and the sums come out in another order. This script
measures that spread on one machine by capping oneDNN's instruction set (`ONEDNN_MAX_CPU_ISA`:
SSE4.1, AVX2, and the machine's own), training and evaluating the same experiment, same seed,
once per setting, in a throwaway git + DVC copy of the project. The figures behind the default
tolerances of `diff.tolerance` in `params.yaml` (see `benchmarks/RESULTS.md`).

Usage: `python benchmarks/metric_spread.py [--experiment fashion_mlp] [--quick]`; `--quick`
measures `digits_mlp` with two settings (a minute), as the test suite does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SETTINGS = ("SSE41", "AVX2", "native")
SHOWN = ("test_accuracy", "macro_f1", "test_loss", "test_mae", "micro_f1")


def tool_env(isa: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONHASHSEED": "0",
    }
    env.pop("PYTHONPATH", None)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa and isa != "native":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    return env


def run(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def make_copy(destination: Path, experiment: str) -> None:
    """A git + DVC copy of the project with only `experiment`, its data prepared."""
    shutil.copytree(
        PROJECT_ROOT / "pipeline",
        destination / "pipeline",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("dvc.yaml", "pyproject.toml", ".dvcignore", ".gitignore"):
        shutil.copy2(PROJECT_ROOT / name, destination / name)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    if experiment not in params["experiments"]:
        sys.exit(
            f"error: no experiment {experiment!r} in params.yaml; "
            f"pick one of {', '.join(sorted(params['experiments']))}."
        )
    chosen = params["experiments"][experiment]
    params["data"]["datasets"] = [chosen["dataset"]]
    params["experiments"] = {experiment: chosen}
    params["crossval"] = {"experiments": [], "folds": []}
    (destination / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = tool_env()
    for command in (
        ["git", "init", "--quiet"],
        ["git", "config", "user.name", "Atelier benchmark"],
        ["git", "config", "user.email", "bench@atelier.invalid"],
        ["dvc", "init", "--quiet"],
    ):
        run(command, destination, env)
    shutil.copy2(PROJECT_ROOT / ".dvc" / "config", destination / ".dvc" / "config")
    run(["git", "add", "--all"], destination, env)  # DVCLive wants a commit to refer to
    run(["git", "commit", "--quiet", "-m", "project copy"], destination, env)
    run(["dvc", "repro", f"split@{chosen['dataset']}"], destination, env)


def measure(root: Path, experiment: str, isa: str) -> dict:
    env = tool_env(isa)
    shutil.rmtree(root / "checkpoints", ignore_errors=True)
    for stage in ("train", "evaluate"):
        run([sys.executable, "-m", "pipeline", stage, experiment], root, env)
    return json.loads((root / "metrics" / f"{experiment}.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="fashion_mlp")
    parser.add_argument("--quick", action="store_true", help="digits_mlp, two settings")
    args = parser.parse_args(argv)
    experiment = "digits_mlp" if args.quick else args.experiment
    settings = SETTINGS[1:] if args.quick else SETTINGS
    with tempfile.TemporaryDirectory(prefix="atelier-spread-") as tmp:
        root = Path(tmp)
        make_copy(root, experiment)
        results = {isa: measure(root, experiment, isa) for isa in settings}
    keys = [key for key in SHOWN if key in results[settings[0]]]
    print(f"`{experiment}`, seed as in params.yaml, one run per instruction-set cap:\n")
    print("| metric | " + " | ".join(settings) + " | spread (max − min) |")
    print("|---|" + "--:|" * (len(settings) + 1))
    for key in keys:
        values = [float(results[isa][key]) for isa in settings]
        cells = " | ".join(f"{value:.4f}" for value in values)
        print(f"| {key} | {cells} | {max(values) - min(values):.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
