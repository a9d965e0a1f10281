"""Seed 000 script versus `dvc repro train@fashion_mlp`, whole process against whole process.

Run from the project root after the data stages (`dvc repro split@fashion_mnist`):

    .venv/bin/python benchmarks/train_vs_seed.py [--repeats 2]

Both sides use the seed's hyperparameters (10 epochs, batch 128, Adam, dropout 0.3). The runs
alternate so that load on the machine hits both alike. The pipeline's test accuracy is measured
afterwards, untimed, on the held-out test set. Results go to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TF_CPP_MIN_LOG_LEVEL": "3"}

TEST_ACCURACY = """
import json, numpy as np, keras
model = keras.saving.load_model("models/fashion_mlp/best.keras", safe_mode=True)
x = np.load("data/prepared/fashion_mnist/x_test.npy")
y = np.load("data/prepared/fashion_mnist/y_test.npy")
print(json.dumps({"test_accuracy": float((model.predict(x, verbose=0).argmax(1) == y).mean())}))
"""


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    seed_times, pipe_times, seed_acc, pipe_acc = [], [], [], []
    for _ in range(args.repeats):
        elapsed, out = timed([sys.executable, "benchmarks/seed_000.py"])
        seed_times.append(elapsed)
        seed_acc.append(json.loads(out.strip().splitlines()[-1])["test_accuracy"])
        elapsed, _ = timed(
            [str(BIN / "dvc"), "repro", "--force", "--single-item", "train@fashion_mlp"]
        )
        pipe_times.append(elapsed)
        _, out = timed([sys.executable, "-c", TEST_ACCURACY])
        pipe_acc.append(json.loads(out.strip().splitlines()[-1])["test_accuracy"])
    best_seed, best_pipe = min(seed_times), min(pipe_times)
    print(f"| run | wall time (best of {args.repeats}) | test accuracy |")
    print("|---|---|---|")
    print(f"| seed 000 script | {best_seed:.1f} s | {max(seed_acc):.4f} |")
    print(f"| `dvc repro train@fashion_mlp` | {best_pipe:.1f} s | {max(pipe_acc):.4f} |")
    print(f"\nSpeed-up (seed / pipeline): **{best_seed / best_pipe:.2f}×**")
    print(
        f"All times: seed {[round(t, 1) for t in seed_times]}, pipeline "
        f"{[round(t, 1) for t in pipe_times]}"
    )
    print(f"All test accuracies: seed {seed_acc}, pipeline {pipe_acc}")


if __name__ == "__main__":
    main()
