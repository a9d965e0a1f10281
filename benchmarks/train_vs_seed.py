"""Seed 000 script versus `dvc repro train@fashion_mlp`, whole process against whole process.

Run from the project root after the data stages (`dvc repro split@fashion_mnist`):

    .venv/bin/python benchmarks/train_vs_seed.py [--repeats 2] [--compile-cache cold|warm]
    .venv/bin/python benchmarks/train_vs_seed.py --quick   # a smoke run: no data stages needed

Both sides use the seed's hyperparameters (10 epochs, batch 128, Adam, dropout 0.3). The runs
alternate so that load on the machine hits both alike. The pipeline's test accuracy is measured
afterwards, untimed, on the held-out test set. Results go to stdout as a Markdown table. On JAX
the stage keeps XLA's compiled programs in a persistent cache (README, "Keras backends"):
`--compile-cache cold` (the default) gives each pipeline run an empty one, `warm` one that an
untimed run filled, as every run after an experiment's first finds it.

`--quick` checks that the script runs, in about a minute at most: in a temporary copy of the
project with scikit-learn's digits prepared, the seed's model (3 epochs) as a plain Keras script
against the command the train stage runs (`python -m pipeline train`, without DVC around it),
once. Its figures mean nothing; it writes nothing outside its temporary directory.
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
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "PATH": f"{BIN}:{os.environ['PATH']}",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PYTHONDONTWRITEBYTECODE": "1",  # --quick, run by the tests, leaves nothing in the repository
}

TEST_ACCURACY = """
import json, numpy as np, keras
model = keras.saving.load_model("models/{experiment}/best.keras", safe_mode=True)
x = np.load("data/prepared/{dataset}/x_test.npy")
y = np.load("data/prepared/{dataset}/y_test.npy")
print(json.dumps({{"test_accuracy": float((model.predict(x, verbose=0).argmax(1) == y).mean())}}))
"""

# --quick: seed 000's model and hyperparameters on digits, 3 epochs, both ways.
QUICK_EXPERIMENT = "digits_seed000"
QUICK_SETTINGS = {
    "dataset": "digits",
    "model": {"name": "mlp", "units": [256, 128], "dropout": [0.3, 0.0]},
    "optimizer": "adam",
    "epochs": 3,
    "batch_size": 128,
}
SEED_ON_DIGITS = """
import json, numpy as np, keras
from keras import layers
def rows(part):
    x = np.load(f"data/prepared/digits/x_{part}.npy").reshape(-1, 64).astype("float32") / 16
    return x, keras.utils.to_categorical(np.load(f"data/prepared/digits/y_{part}.npy"), 10)
(x, y), (x_test, y_test) = rows("train"), rows("test")
model = keras.Sequential([
    keras.Input((64,)),
    layers.Dense(256, activation="relu"),
    layers.Dropout(0.3),
    layers.Dense(128, activation="relu"),
    layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=3, batch_size=128, validation_split=0.2, verbose=0)
print(json.dumps({"test_accuracy": float(model.evaluate(x_test, y_test, verbose=0)[1])}))
"""


def timed(command: list[str], cwd: Path = ROOT, env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env={**ENV, **(env or {})}, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    return time.perf_counter() - started, done.stdout


def quick_project(directory: Path) -> Path:
    """A copy of the project in `directory`, params shrunk to digits, its data stages run."""
    shutil.copytree(
        ROOT / "pipeline", directory / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["datasets"] = ["digits"]
    params["experiments"] = {QUICK_EXPERIMENT: QUICK_SETTINGS}
    params["crossval"] = {"experiments": [], "folds": []}
    (directory / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("download", "preprocess", "split"):
        timed([sys.executable, "-m", "pipeline", stage, "digits"], cwd=directory)
    return directory


def compare(
    root: Path, seed: list[str], pipeline: list[str], accuracy: str, repeats: int, cache: str
):
    """Time `seed` and `pipeline` alternately in `root`; their test accuracies, best times.

    `cache`: JAX's persistent compilation cache for the pipeline's runs — `cold`, a new empty
    one for each run; `warm`, one shared cache, filled by an untimed run first."""
    seed_times, pipe_times, seed_acc, pipe_acc = [], [], [], []
    caches = Path(tempfile.mkdtemp(prefix="jax-cache-"))
    if cache == "warm":
        timed(pipeline, root, {"JAX_COMPILATION_CACHE_DIR": str(caches / "shared")})
    for index in range(repeats):
        elapsed, out = timed(seed, root)
        seed_times.append(elapsed)
        seed_acc.append(json.loads(out.strip().splitlines()[-1])["test_accuracy"])
        directory = caches / ("shared" if cache == "warm" else f"cold-{index}")
        elapsed, _ = timed(pipeline, root, {"JAX_COMPILATION_CACHE_DIR": str(directory)})
        pipe_times.append(elapsed)
        _, out = timed([sys.executable, "-c", accuracy], root)
        pipe_acc.append(json.loads(out.strip().splitlines()[-1])["test_accuracy"])
    shutil.rmtree(caches)
    return seed_times, pipe_times, seed_acc, pipe_acc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--compile-cache",
        choices=("warm", "cold"),
        default="cold",
        help="JAX's compilation cache for the pipeline's runs: empty each time (cold), or filled "
        "by an untimed run first (warm: a repeated run, as `dvc exp run` sweeps make)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run on digits (figures meaningless)"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
        with tempfile.TemporaryDirectory(prefix="train-vs-seed-") as directory:
            root = quick_project(Path(directory))
            seed_times, pipe_times, seed_acc, pipe_acc = compare(
                root,
                [sys.executable, "-c", SEED_ON_DIGITS],
                [sys.executable, "-m", "pipeline", "train", QUICK_EXPERIMENT],
                TEST_ACCURACY.format(experiment=QUICK_EXPERIMENT, dataset="digits"),
                args.repeats,
                args.compile_cache,
            )
        names = (
            "seed 000 model on digits (--quick)",
            f"`python -m pipeline train {QUICK_EXPERIMENT}`",
        )
    else:
        seed_times, pipe_times, seed_acc, pipe_acc = compare(
            ROOT,
            [sys.executable, "benchmarks/seed_000.py"],
            [str(BIN / "dvc"), "repro", "--force", "--single-item", "train@fashion_mlp"],
            TEST_ACCURACY.format(experiment="fashion_mlp", dataset="fashion_mnist"),
            args.repeats,
            args.compile_cache,
        )
        backend = yaml.safe_load((ROOT / "params.yaml").read_text())["experiments"][
            "fashion_mlp"
        ].get("backend")
        names = (
            "seed 000 script (TensorFlow)",
            f"`dvc repro train@fashion_mlp` ({backend}, {args.compile_cache} compilation cache)",
        )
    best_seed, best_pipe = min(seed_times), min(pipe_times)
    print(f"| run | wall time (best of {args.repeats}) | test accuracy |")
    print("|---|---|---|")
    print(f"| {names[0]} | {best_seed:.1f} s | {max(seed_acc):.4f} |")
    print(f"| {names[1]} | {best_pipe:.1f} s | {max(pipe_acc):.4f} |")
    print(f"\nSpeed-up (seed / pipeline): **{best_seed / best_pipe:.2f}×**")
    print(
        f"All times: seed {[round(t, 1) for t in seed_times]}, pipeline "
        f"{[round(t, 1) for t in pipe_times]}"
    )
    print(f"All test accuracies: seed {seed_acc}, pipeline {pipe_acc}")


if __name__ == "__main__":
    main()
