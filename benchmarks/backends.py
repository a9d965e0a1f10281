"""The train stage on each Keras backend, side by side: whole process and training time.

Run from the project root after the data stages (`dvc repro split@fashion_mnist`):

    .venv/bin/python benchmarks/backends.py [--repeats 2] [--cnn-epochs 1]
    .venv/bin/python benchmarks/backends.py --quick   # a smoke run on digits (one small MLP)

For `fashion_mlp` (the seed 000 MLP, 10 epochs) and `fashion_compact_cnn` (its epochs cut to
`--cnn-epochs`), each backend runs `python -m pipeline train <experiment>` in a temporary copy of
the project (the code, params.yaml with the experiment's `backend` set, the prepared data linked,
not copied), alternating backends so that load on the machine hits both alike. Reported: the
whole process's wall time, the training time the stage records (`train_time_s`: model.fit, the
first epoch's compilation included) and its ratio between the backends, and the best epoch's
validation accuracy. Results go to stdout as a Markdown table; nothing in the repository is
written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax")
ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PYTHONDONTWRITEBYTECODE": "1",  # --quick, run by the tests, leaves nothing in the repository
    "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
}
QUICK = {
    "digits_mlp": {
        "dataset": "digits",
        "model": {"name": "mlp", "units": [64]},
        "epochs": 2,
        "batch_size": 32,
    },
}


def project(directory: Path, experiments: dict, datasets: list[str], data: Path | None) -> Path:
    shutil.copytree(
        ROOT / "pipeline", directory / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["datasets"] = datasets
    params["experiments"] = experiments
    params["crossval"] = {"experiments": [], "folds": []}
    (directory / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if data is not None:
        for part in ("prepared", "split"):
            for dataset in datasets:
                target = directory / "data" / part / dataset
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(data / part / dataset, target_is_directory=True)
    else:
        for stage in ("download", "preprocess", "split"):
            for dataset in datasets:
                run(directory, "-m", "pipeline", stage, dataset)
    return directory


def run(cwd: Path, *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def measure(directory: Path, name: str, settings: dict, backend: str) -> dict:
    params = yaml.safe_load((directory / "params.yaml").read_text())
    params["experiments"] = {name: {**settings, "backend": backend}}
    (directory / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(directory / "models", ignore_errors=True)
    wall = run(directory, "-m", "pipeline", "train", name)
    summary = json.loads((directory / "models" / name / "train.json").read_text())
    return {
        "wall_s": wall,
        "train_s": float(summary["train_time_s"]),
        "val_accuracy": float(summary["val_accuracy"]),
        "backend": summary["backend"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cnn-epochs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke run on digits")
    args = parser.parse_args()
    if args.quick:
        experiments, datasets, data, args.repeats = QUICK, ["digits"], None, 1
    else:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())["experiments"]
        experiments = {
            "fashion_mlp": params["fashion_mlp"],
            "fashion_compact_cnn": {**params["fashion_compact_cnn"], "epochs": args.cnn_epochs},
        }
        datasets, data = ["fashion_mnist"], ROOT / "data"
        if not (data / "split" / "fashion_mnist").is_dir():
            sys.exit("Run `dvc repro split@fashion_mnist` first.")

    rows = []
    with tempfile.TemporaryDirectory(prefix="backends-") as tmp:
        directory = project(Path(tmp), experiments, datasets, data)
        for name, settings in experiments.items():
            found = {backend: [] for backend in BACKENDS}
            for repeat in range(args.repeats):
                order = BACKENDS if repeat % 2 == 0 else BACKENDS[::-1]
                for backend in order:
                    found[backend].append(measure(directory, name, settings, backend))
            best = {b: min(found[b], key=lambda r: r["train_s"]) for b in BACKENDS}
            for backend in BACKENDS:
                assert best[backend]["backend"] == backend, best[backend]
            rows.append((name, settings["epochs"], best, found))

    print("| experiment | epochs | backend | process wall (s) | training (s) | val accuracy |")
    print("|---|--:|---|--:|--:|--:|")
    for name, epochs, best, _ in rows:
        for backend in BACKENDS:
            run_ = best[backend]
            print(
                f"| {name} | {epochs} | {backend} | {run_['wall_s']:.1f} | {run_['train_s']:.1f} "
                f"| {run_['val_accuracy']:.4f} |"
            )
    print()
    for name, _, best, found in rows:
        ratio = best["tensorflow"]["train_s"] / best["jax"]["train_s"]
        wall = best["tensorflow"]["wall_s"] / best["jax"]["wall_s"]
        print(f"{name}: TensorFlow / JAX, training {ratio:.2f}×, whole process {wall:.2f}× "
              f"(best of {args.repeats}; all: {json.dumps(found)})")  # fmt: skip


if __name__ == "__main__":
    main()
