"""Time the multi-label input pipeline: `tf.data` stream against Pillow one file at a time.

A set of coloured garments (`pipeline.data.garments`, from Fashion-MNIST's training images where
Debian's mirror is installed, otherwise synthetic grey garments) is written as PNGs into a
temporary directory; then the same files are read, decoded and resized to `--size` pixels
square by:

- `make_image_dataset` (batches of `--batch`, no shuffle): one full pass over the set;
- `load_images_python`: Pillow open → RGB → bilinear resize → NumPy, one file after another.

Each is warmed up once (TensorFlow's graph tracing, the page cache), then both are timed
`--repeats` times, alternating which goes first. Printed: images per second (median, min–max),
process CPU time per image (all threads; less sensitive than wall time to other jobs on the
machine) and the ratio of the medians, as a Markdown table. Both outputs are also compared
(they differ by at most a rounding step). Usage:
`python benchmarks/multilabel_input.py [--n 3000] [--size 112] [--batch 64] [--repeats 3]`.
`--quick` times 256 images once: a check that the script still runs, not a measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
GOAL = 5.0


def source_images(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    images = FASHION_MNIST / "train-images-idx3-ubyte.gz"
    labels = FASHION_MNIST / "train-labels-idx1-ubyte.gz"
    if images.is_file() and labels.is_file():
        from pipeline.data.catalog import read_idx

        return read_idx(images), read_idx(labels), "Fashion-MNIST training images"
    rng = np.random.default_rng(0)
    x = np.zeros((2 * n, 28, 28), dtype=np.uint8)
    x[:, 1:27, 8:20] = rng.integers(120, 256, size=(2 * n, 26, 12), dtype=np.uint8)
    return x, (np.arange(2 * n) % 10).astype(np.uint8), "synthetic grey garments"


def time_pass(run) -> tuple[float, float, int]:
    """Wall seconds, process CPU seconds and images of one call of `run`."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = run()
    return time.perf_counter() - wall, time.process_time() - cpu, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="images in the set")
    parser.add_argument("--source-size", type=int, default=28, help="side of the PNGs on disk")
    parser.add_argument("--size", type=int, default=112, help="side after resizing")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="256 images, one pass: a smoke check")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeats = 256, 1

    from pipeline.data.garments import LABELS, generate
    from pipeline.data.labels import load_images_python, read_label_table
    from pipeline.modeling.inputs import make_image_dataset

    load_before = os.getloadavg()[0]
    x, y, origin = source_images(args.n)
    with tempfile.TemporaryDirectory(prefix="multilabel-bench-") as tmp:
        out = Path(tmp) / "garments"
        started = time.perf_counter()
        generate(x, y, out, n=args.n, seed=0, image_size=args.source_size)
        generated_s = time.perf_counter() - started
        table = read_label_table(out / "labels.csv", LABELS)

        import tensorflow as tf

        dataset = make_image_dataset(
            table.paths, table.labels, image_size=args.size, batch_size=args.batch,
            shuffle=False, seed=0,
        )  # fmt: skip

        def run_tf() -> int:
            return sum(int(images.shape[0]) for images, _ in dataset)

        def run_python() -> int:
            return len(load_images_python(table.paths, args.size))

        # Warm-up (graph tracing, page cache) and a check that both give the same pixels.
        streamed = np.concatenate([images.numpy() for images, _ in dataset])
        reference = load_images_python(table.paths, args.size)
        difference = np.abs(streamed.astype(np.int16) - reference.astype(np.int16))

        runs: dict[str, list[tuple[float, float, int]]] = {"tf.data": [], "python": []}
        for repeat in range(args.repeats):
            order = ("tf.data", "python") if repeat % 2 == 0 else ("python", "tf.data")
            for name in order:
                runs[name].append(time_pass(run_tf if name == "tf.data" else run_python))
    load_after = os.getloadavg()[0]

    def rates(name: str) -> list[float]:
        return [count / wall for wall, _, count in runs[name]]

    def cpu_us(name: str) -> float:
        return statistics.median(cpu / count * 1e6 for _, cpu, count in runs[name])

    medians = {name: statistics.median(rates(name)) for name in runs}
    ratio = medians["tf.data"] / medians["python"]
    cpu_ratio = cpu_us("python") / cpu_us("tf.data")
    labels = {
        "tf.data": f"`make_image_dataset` (batch {args.batch}, parallel map)",
        "python": "`load_images_python` (Pillow, one by one)",
    }
    print(
        f"{args.n:,} garments ({origin}), {args.source_size}×{args.source_size} RGB PNGs "
        f"(generated in {generated_s:.1f} s) → {args.size}×{args.size}; median of "
        f"{args.repeats} alternating passes after a warm-up.\n"
    )
    print("| reader | images/s, median (min–max) | CPU µs per image |")
    print("|---|---:|---:|")
    for name in runs:
        values = rates(name)
        print(
            f"| {labels[name]} | {medians[name]:,.0f} ({min(values):,.0f}–{max(values):,.0f}) "
            f"| {cpu_us(name):,.0f} |"
        )
    print(f"| **ratio** (tf.data / Python) | **{ratio:.2f}×** | {cpu_ratio:.2f}× less CPU |")
    print(
        f"\nGoal ≥ {GOAL:.0f}×: {'met' if ratio >= GOAL else 'not met'}. Pixels: max difference "
        f"{int(difference.max())}, mean {difference.mean():.4f} (of 255)."
    )
    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, TensorFlow "
        f"{tf.__version__}, {platform.system()}; load average {load_before:.2f} before, "
        f"{load_after:.2f} after."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
