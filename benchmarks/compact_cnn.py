"""`compact_cnn` on Fashion-MNIST: CPU epoch time against its FLOP floor, the GPU variant's, and
test accuracy over seeds beside the seed CNN's one-epoch run.

Run from the project root after the data stages (`dvc repro split@fashion_mnist`):

    .venv/bin/python benchmarks/compact_cnn.py [--images 9600] [--repeats 2]
    .venv/bin/python benchmarks/compact_cnn.py --accuracy [--seeds 42 43 44]
    .venv/bin/python benchmarks/compact_cnn.py --quick   # a smoke run: no data stages needed

Epoch time: `fashion_compact_cnn` as params.yaml sets it, and the GPU variant (the same
experiment with `GPU_VARIANT`'s settings, the README's `dvc exp run -S` line), each in its own
process, one after the other, through the train stage's code path (`build_model`, the stage's
optimizer and learning-rate schedule, `make_datasets`, `fit` with `steps_per_execution`, op
determinism on): one warm-up epoch over the first `--images` training rows (`--gpu-images` for
the GPU variant; tracing), then `--repeats` timed epochs, the best kept, extrapolated to the
stage's 48,000-row epoch; validation (128 rows) is left out of the timing. The FLOP floor is the
model's arithmetic at the machine's measured float32 matrix-multiply rate; the GPU variant's GPU
time is projected from its FLOPs at `--gpu-tflops`.

`--accuracy`: the train stage itself (`train_experiment`, in a temporary project whose data/
links to this one's) trains the seed CNN (`fashion_cnn`, one epoch, as its set defines it) once,
then `fashion_compact_cnn` once per seed, and records each training's wall and CPU time (the
CPU time, all threads of the process, is the steadier figure on a shared machine); each model's
test accuracy is measured afterwards, untimed. Results go to stdout as Markdown.

`--quick` checks that the script runs: 128 random 28×28 images for the epoch times (one timed
epoch, a small matrix for the rate) and one two-epoch run on scikit-learn's digits for the
accuracy path. Its figures mean nothing; it writes nothing outside a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # --quick, run by the tests, leaves nothing in the repository

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXPERIMENT = "fashion_compact_cnn"
STAGE_EPOCH_ROWS = 48_000  # 60,000 training images less the 20 % validation split
QUICK = {"images": 128, "repeats": 1, "matmul_size": 512}
# The GPU variant (README, "GPU"): full-resolution stem, three stages of two convolutions, a wider
# dense layer, 30 epochs. On the command line:
#   dvc exp run -S experiments.fashion_compact_cnn.epochs=30 \
#     -S experiments.fashion_compact_cnn.model.stem_stride=1 ... (every key below)
GPU_VARIANT = {
    "epochs": 30,
    "learning_rate": 0.003,
    "model": {
        "stem_filters": 32,
        "stem_stride": 1,
        "filters": [64, 128, 256],
        "convs_per_stage": 2,
        "dense_units": 256,
        "dropout": 0.3,
        "warmup_epochs": 2.0,
        "translation": 0.1,
        "horizontal_flip": True,
    },
}


def experiment_settings(variant: str) -> dict:
    """The experiment's settings from params.yaml, the GPU variant's applied over them."""
    from pipeline.params import load_params

    settings = load_params(ROOT / "params.yaml").experiment(EXPERIMENT).model_dump(mode="json")
    if variant == "gpu":
        model = {**settings["model"], **GPU_VARIANT["model"]}
        settings = {**settings, **GPU_VARIANT, "model": model}
    return settings


def seed_cnn_settings() -> dict:
    """The seed CNN (seed 003, one epoch on a CPU) as its set, `fashion_cnn`, defines it."""
    from pipeline.params.sets import load_sets

    return dict(load_sets()["fashion_cnn"].experiments["fashion_cnn"])


def training_flops(model_params) -> float:
    """FLOPs of one training image: forward multiply-adds, as many again for the weight
    gradients, and the input gradients of every layer but the stem (the image needs none)."""
    from pipeline.modeling.compact_cnn import forward_multiply_adds

    forward = forward_multiply_adds(model_params, (28, 28), 10)
    stem = 28 * 28 * 9 * model_params.stem_filters // model_params.stem_stride**2
    return 2.0 * (2 * forward + forward - stem)


# --- epoch time ---------------------------------------------------------------------------------


def _epoch_worker(variant: str, images: int, repeats: int, quick: bool) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from pipeline.modeling.device import seed_everything
    from pipeline.modeling.inputs import make_datasets
    from pipeline.modeling.models import InputSpec, build_model
    from pipeline.modeling.optimizers import learning_rate_schedule, make_optimizer
    from pipeline.params import load_params
    from pipeline.params.experiments import Experiment
    from pipeline.stages.train import TrainData, load_train_data

    params = load_params(ROOT / "params.yaml")
    experiment = Experiment.model_validate(experiment_settings(variant))
    batch = experiment.batch_size
    if quick:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (images + batch, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, images + batch, dtype=np.uint8)
        meta = {"task": "classification", "num_classes": 10, "value_max": 255}
        data = TrainData(x[:images], y[:images], x[images:], y[images:], meta)
    else:
        data = load_train_data(experiment.dataset, ROOT)
    seed_everything(params.base.seed, params.runtime.deterministic)
    subset = TrainData(
        data.x_train[:images],
        data.y_train[:images],
        data.x_val[:batch],
        data.y_val[:batch],
        data.meta,
    )
    model = build_model(experiment.model, InputSpec(shape=(28, 28), num_classes=10), name=variant)
    # The schedule spans the stage's epochs of 48,000 rows, as in a real run.
    rate = learning_rate_schedule(experiment, steps_per_epoch=-(-STAGE_EPOCH_ROWS // batch))
    model.compile(
        optimizer=make_optimizer(experiment.optimizer, rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=params.runtime.steps_per_execution,
    )
    epochs: list[tuple[float, float]] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = (time.perf_counter(), time.process_time())

        def on_train_batch_end(self, batch, logs=None):
            self.trained = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            wall, cpu = (end - start for end, start in zip(self.trained, self.started, strict=True))
            epochs.append((wall, cpu))

    train, val = make_datasets(subset, batch, params.base.seed)
    model.fit(
        train,
        validation_data=val,
        epochs=1 + repeats,
        shuffle=False,
        callbacks=[Timer()],
        verbose=0,
    )
    best = min(range(1, len(epochs)), key=lambda index: epochs[index][0])
    return {
        "variant": variant,
        "images": images,
        "wall_s": epochs[best][0],
        "cpu_s": epochs[best][1],
        "all_wall_s": [round(seconds, 2) for seconds, _ in epochs[1:]],
        "params": int(model.count_params()),
        "flops": training_flops(experiment.model),
        "epochs": experiment.epochs,
        "tf_matmul_gflops": _matmul_rate(tf, np, QUICK["matmul_size"] if quick else 2048),
    }


def _matmul_rate(tf, np, size: int) -> float:
    """Float32 matrix-multiply rate of this machine through TensorFlow (best of 5), GFLOP/s."""
    a = tf.constant(np.random.default_rng(0).random((size, size), dtype=np.float32))
    product = tf.function(lambda a: tf.reduce_sum(tf.matmul(a, a)))
    product(a).numpy()
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        product(a).numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def epoch_table(args) -> None:
    results = []
    # One at a time, so that they do not share the cores; the GPU variant costs about 40 times
    # as much per image, so it is timed on fewer.
    for variant, images in (("cpu", args.images), ("gpu", args.gpu_images)):
        command = [sys.executable, __file__, "--worker", variant, "--images", str(images)]
        command += ["--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONDONTWRITEBYTECODE": "1"}
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stderr)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    matmul = max(result["tf_matmul_gflops"] for result in results)
    print(
        f"{args.images} (GPU variant: {args.gpu_images}) images per timed epoch, best of "
        f"{args.repeats}; TensorFlow float32 matmul "
        f"rate here: {matmul:.0f} GFLOP/s; load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| variant | parameters | MFLOP per training image | s per 48,000-image epoch (CPU s) "
        "| achieved GFLOP/s | × floor | epochs | GPU s per epoch at "
        f"{args.gpu_tflops:g} TFLOP/s (all epochs) |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for result in results:
        per_image, flops = result["wall_s"] / result["images"], result["flops"]
        floor = STAGE_EPOCH_ROWS * flops / (matmul * 1e9)
        gpu = STAGE_EPOCH_ROWS * flops / (args.gpu_tflops * 1e12)
        print(
            f"| {result['variant']} | {result['params']:,} | {flops / 1e6:.1f} "
            f"| {per_image * STAGE_EPOCH_ROWS:.1f} "
            f"({result['cpu_s'] / result['images'] * STAGE_EPOCH_ROWS:.0f}) "
            f"| {flops / per_image / 1e9:.1f} | {per_image * STAGE_EPOCH_ROWS / floor:.2f} "
            f"| {result['epochs']} | {gpu:.2f} ({gpu * result['epochs']:.1f}) |"
        )
    print("Raw:", json.dumps(results))


# --- test accuracy over seeds -------------------------------------------------------------------


def _train_and_test(root: Path, name: str, settings: dict, dataset: str, seed: int) -> dict:
    """Train `settings` as experiment `name` with the train stage under `root`; its figures."""
    import keras
    import numpy as np

    from pipeline.params import parse_params
    from pipeline.stages.train import train_experiment

    params = parse_params(
        {"base": {"seed": seed}, "data": {"datasets": [dataset]}, "experiments": {name: settings}}
    )
    cpu = time.process_time()  # every thread of this process: steadier than wall time here
    summary = train_experiment(params, name, root=root)
    cpu = time.process_time() - cpu
    model = keras.saving.load_model(root / f"models/{name}/best.keras", safe_mode=True)
    x = np.load(root / f"data/prepared/{dataset}/x_test.npy")
    y = np.load(root / f"data/prepared/{dataset}/y_test.npy")
    accuracy = float(np.mean(model.predict(x, batch_size=1024, verbose=0).argmax(axis=1) == y))
    return {
        "run": name,
        "seed": seed,
        "test_accuracy": accuracy,
        "val_accuracy": summary["val_accuracy"],
        "best_epoch": summary["best_epoch"],
        "train_time_s": summary["train_time_s"],
        "cpu_s": round(cpu, 1),
        "load": round(os.getloadavg()[0], 1),
    }


def _quick_data(root: Path) -> None:
    from pipeline.data.catalog import DIGITS
    from pipeline.stages.download import DownloadSettings, download
    from pipeline.stages.preprocess import PreprocessSettings, preprocess
    from pipeline.stages.split import SplitSettings, split

    download(DIGITS, root / "data/raw/digits", DownloadSettings())
    preprocess(
        DIGITS,
        raw_dir=root / "data/raw/digits",
        out_dir=root / "data/prepared/digits",
        settings=PreprocessSettings(),
    )
    split(
        prepared_dir=root / "data/prepared/digits",
        out_dir=root / "data/split/digits",
        settings=SplitSettings(),
    )


def accuracy_table(args) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    settings = experiment_settings("cpu")
    runs = [("fashion_cnn", seed_cnn_settings())] + [(EXPERIMENT, settings)] * len(args.seeds)
    seeds = [42, *args.seeds]
    dataset = "fashion_mnist"
    with tempfile.TemporaryDirectory(prefix="compact-cnn-") as directory:
        root = Path(directory)
        if args.quick:  # digits: 8×8 images, two epochs, one seed
            dataset, seeds = "digits", [42]
            small = {"stem_filters": 8, "filters": [16], "dense_units": 32}
            runs = [
                (
                    EXPERIMENT,
                    {
                        **settings,
                        "dataset": dataset,
                        "epochs": 2,
                        "batch_size": 32,
                        "model": {**settings["model"], **small},
                    },
                )
            ]
            _quick_data(root)
        else:
            for part in ("prepared", "split"):
                (root / "data" / part).mkdir(parents=True)
                (root / "data" / part / dataset).symlink_to(ROOT / "data" / part / dataset)
        results = [
            _train_and_test(root, name, run, dataset, seed)
            for (name, run), seed in zip(runs, seeds, strict=False)
        ]
    print(
        "| run | seed | test accuracy | val accuracy | best epoch | training time | CPU time "
        "| load |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for result in results:
        print(
            f"| {result['run']} | {result['seed']} | {result['test_accuracy']:.4f} "
            f"| {result['val_accuracy']:.4f} | {result['best_epoch']} "
            f"| {result['train_time_s']:.1f} s | {result['cpu_s']:.0f} s | {result['load']} |"
        )
    ours = [result for result in results if result["run"] == EXPERIMENT]
    median = statistics.median(result["test_accuracy"] for result in ours)
    print(f"\n{EXPERIMENT}: median test accuracy {median:.4f} over {len(ours)} seeds")
    seed_cnn = [result for result in results if result["run"] == "fashion_cnn"]
    if seed_cnn:
        wall = statistics.median(r["train_time_s"] for r in ours) / seed_cnn[0]["train_time_s"]
        cpu = statistics.median(r["cpu_s"] for r in ours) / seed_cnn[0]["cpu_s"]
        print(
            f"training time: {wall:.2f}× the seed CNN's one epoch in wall time, {cpu:.2f}× in "
            "CPU time (all of the process's threads while it trained), measured alongside"
        )
    print("Raw:", json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=9600, help="training rows per epoch")
    parser.add_argument("--gpu-images", type=int, default=1280, help="the same, GPU variant")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs after the warm-up")
    parser.add_argument("--gpu-tflops", type=float, default=20.0, help="achieved GPU rate")
    parser.add_argument("--accuracy", action="store_true", help="full trainings, test accuracy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run on random images (figures meaningless)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick and not args.worker:
        args.images, args.gpu_images, args.repeats = QUICK["images"], 64, QUICK["repeats"]
    if args.worker:
        print(json.dumps(_epoch_worker(args.worker, args.images, args.repeats, args.quick)))
    elif args.accuracy:
        accuracy_table(args)
    else:
        epoch_table(args)
        if args.quick:
            accuracy_table(args)


if __name__ == "__main__":
    main()
