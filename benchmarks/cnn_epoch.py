"""CPU time of one training epoch of the `fashion_cnn` model, against its FLOP floor.

Run from the project root after the data stages (`dvc repro split@fashion_mnist`):

    .venv/bin/python benchmarks/cnn_epoch.py [--images 3840] [--repeats 2] [--onednn]
    .venv/bin/python benchmarks/cnn_epoch.py --quick   # a smoke run: no data stages needed

The model is seed 003's CNN (Conv32-Conv64-MaxPool-Dropout0.25-Flatten-Dense128-Dropout0.5-
Dense10, batch 128, Adam). Two ways of training it, each in its own process, alternating:

- `pipeline`: the train stage's code path — `build_model` (uint8 input scaled in the model), the
  stage's optimizer (`make_optimizer`), `make_datasets` (`tf.data` batches gathered from constant
  tensors) and `fit` with the stage's `steps_per_execution`;
- `seed`: the seed's plain Keras — float32 inputs scaled beforehand, one-hot labels,
  `Sequential.fit` on NumPy arrays.

A full epoch on 2 cores takes minutes, so each process trains on the first `--images` training
rows: one warm-up epoch (tracing), then `--repeats` timed epochs; the time per image is
extrapolated to the stage's 48,000-row epoch and to 60,000 images. Validation is left out of the
timing (128 rows). `--onednn` adds both ways again with `TF_ENABLE_ONEDNN_OPTS=1` (oneDNN's own
convolution kernels instead of Eigen's). The FLOP floor is the model's arithmetic (counted below)
at the machine's measured float32 matrix-multiply rate, and at 150 GFLOP/s for reference.
Results go to stdout as Markdown.

`--quick` checks that the script runs, in well under a minute: 128 random 28×28 images instead of
Fashion-MNIST, one timed epoch, a small matrix for the rate. Its figures mean nothing; it writes
nothing (not even bytecode caches).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # --quick, run by the tests, leaves nothing in the repository

ROOT = Path(__file__).resolve().parents[1]
BATCH = 128
QUICK = {"images": 128, "repeats": 1, "matmul_size": 512}
STAGE_EPOCH_ROWS = 48_000  # 60,000 training images less the 20 % validation split


def flops_per_training_image() -> float:
    """Forward and backward multiply-adds of the CNN on one 28×28 image, times two."""
    conv0 = 26 * 26 * 32 * (3 * 3 * 1)
    conv1 = 24 * 24 * 64 * (3 * 3 * 32)
    dense = (12 * 12 * 64) * 128
    head = 128 * 10
    forward = conv0 + conv1 + dense + head
    # Backward: every layer's weight gradient (as many MACs as its forward pass) and the input
    # gradients of all but the first convolution, whose input (the image) needs none.
    backward = forward + conv1 + dense + head
    return 2.0 * (forward + backward)


def seed_cnn(params):
    """`fashion_cnn` as params.yaml enables it, else as its set in the catalog defines it (the
    default run has `fashion_compact_cnn` in its place)."""
    from pipeline.params.experiments import Experiment
    from pipeline.params.sets import load_sets

    if "fashion_cnn" in params.experiments:
        return params.experiments["fashion_cnn"]
    return Experiment.model_validate(load_sets()["fashion_cnn"].experiments["fashion_cnn"])


def _random_data(images: int):
    """Fashion-MNIST's shapes and types, random pixels: for `--quick`, which needs no data."""
    import numpy as np

    from pipeline.stages.train import TrainData

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images + BATCH, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, images + BATCH, dtype=np.uint8)
    meta = {"task": "classification", "num_classes": 10, "value_max": 255}
    return TrainData(x[:images], y[:images], x[images:], y[images:], meta)


def _worker(way: str, images: int, repeats: int, quick: bool) -> dict:
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np
    import tensorflow as tf

    from pipeline.modeling.device import seed_everything
    from pipeline.modeling.inputs import make_datasets
    from pipeline.modeling.optimizers import make_optimizer
    from pipeline.params import load_params
    from pipeline.stages.train import TrainData, load_train_data

    params = load_params(ROOT / "params.yaml")
    experiment = seed_cnn(params)
    data = _random_data(images) if quick else load_train_data(experiment.dataset, ROOT)
    if way == "pipeline":  # the stage's settings (op determinism included); the seed sets none
        seed_everything(params.base.seed, params.runtime.deterministic)
    x, y = data.x_train[:images], data.y_train[:images]
    x_val, y_val = data.x_val[:BATCH], data.y_val[:BATCH]

    epochs: list[tuple[float, float]] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = (time.perf_counter(), time.process_time())

        def on_train_batch_end(self, batch, logs=None):
            self.trained = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            wall, cpu = (end - start for end, start in zip(self.trained, self.started, strict=True))
            epochs.append((wall, cpu))

    if way == "pipeline":
        from pipeline.modeling.models import InputSpec, build_model

        spec = InputSpec(shape=x.shape[1:], num_classes=10, value_max=255)
        model = build_model(experiment.model, spec, name="fashion_cnn")
        model.compile(
            optimizer=make_optimizer(experiment.optimizer, experiment.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            steps_per_execution=params.runtime.steps_per_execution,
        )
        subset = TrainData(x, y, x_val, y_val, data.meta)
        train, val = make_datasets(subset, BATCH, params.base.seed)
        model.fit(
            train,
            validation_data=val,
            epochs=1 + repeats,
            shuffle=False,
            callbacks=[Timer()],
            verbose=0,
        )
    else:
        from keras import layers

        x_float = x.reshape(-1, 28, 28, 1).astype("float32") / 255
        y_hot = keras.utils.to_categorical(y, 10)
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(32, 3, activation="relu"),
                layers.Conv2D(64, 3, activation="relu"),
                layers.MaxPooling2D(2),
                layers.Dropout(0.25),
                layers.Flatten(),
                layers.Dense(128, activation="relu"),
                layers.Dropout(0.5),
                layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        model.fit(
            x_float, y_hot, batch_size=BATCH, epochs=1 + repeats, callbacks=[Timer()], verbose=0
        )
    timed = epochs[1:]
    wall = min(seconds for seconds, _ in timed)
    return {
        "way": way,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "images": images,
        "warmup_s": epochs[0][0],
        "wall_s": wall,
        "cpu_s": min(cpu for _, cpu in timed),
        "all_wall_s": [round(seconds, 2) for seconds, _ in timed],
        "params": int(model.count_params()),
        "tf_matmul_gflops": _matmul_rate(tf, np, QUICK["matmul_size"] if quick else 2048),
    }


def _matmul_rate(tf, np, size: int = 2048) -> float:
    """Float32 matrix-multiply rate of this machine through TensorFlow (best of 5), GFLOP/s."""
    a = tf.constant(np.random.default_rng(0).random((size, size), dtype=np.float32))
    product = tf.function(lambda a: tf.reduce_sum(tf.matmul(a, a)))
    product(a).numpy()
    best = min(_timed(lambda: product(a).numpy()) for _ in range(5))
    return 2 * size**3 / best / 1e9


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _start(command: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _result(worker: subprocess.Popen) -> dict:
    """The worker's JSON line; its stderr as the error if it failed."""
    stdout, stderr = worker.communicate()
    if worker.returncode != 0:
        sys.exit(stderr)
    return json.loads(stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=3840, help="training rows per epoch")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs after the warm-up")
    parser.add_argument("--onednn", action="store_true", help="also with TF_ENABLE_ONEDNN_OPTS=1")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run on random images (figures meaningless)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats, args.onednn = QUICK["images"], QUICK["repeats"], False
    if args.worker:
        print(json.dumps(_worker(args.worker, args.images, args.repeats, args.quick)))
        return

    settings = [("pipeline", None), ("seed", None)]
    if args.onednn:
        settings += [("pipeline", "1"), ("seed", "1")]
    workers = []
    for way, onednn in settings:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONDONTWRITEBYTECODE": "1"}
        if onednn:
            env["TF_ENABLE_ONEDNN_OPTS"] = onednn
        command = [sys.executable, __file__, "--worker", way]
        command += ["--images", str(args.images), "--repeats", str(args.repeats)]
        command += ["--quick"] if args.quick else []
        workers.append(_start(command, env))
        if not args.quick:  # one way at a time, so that they do not share the cores
            workers[-1] = _result(workers[-1])
    results = [worker if isinstance(worker, dict) else _result(worker) for worker in workers]

    flops = flops_per_training_image()
    matmul = max(result["tf_matmul_gflops"] for result in results)
    floor_measured = STAGE_EPOCH_ROWS * flops / (matmul * 1e9)
    print(
        f"{flops / 1e6:.1f} MFLOP per training image; {args.images} images per timed epoch, "
        f"best of {args.repeats}; TensorFlow float32 matmul rate here: {matmul:.0f} GFLOP/s; "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| way | oneDNN | s per 128-image batch | s per 48,000-image epoch (extrapolated) "
        "| s per 60,000 images | achieved GFLOP/s | CPU s / wall s | × floor at measured rate |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for result in results:
        per_image = result["wall_s"] / result["images"]
        print(
            f"| {result['way']} | {result['onednn']} | {per_image * BATCH:.3f} "
            f"| {per_image * STAGE_EPOCH_ROWS:.0f} | {per_image * 60_000:.0f} "
            f"| {flops / per_image / 1e9:.1f} | {result['cpu_s'] / result['wall_s']:.2f} "
            f"| {per_image * STAGE_EPOCH_ROWS / floor_measured:.1f} |"
        )
    print(
        f"\nFLOP floor, 48,000 images: {floor_measured:.0f} s at {matmul:.0f} GFLOP/s (measured "
        f"matmul rate), {STAGE_EPOCH_ROWS * flops / 150e9:.0f} s at 150 GFLOP/s; 60,000 images: "
        f"{60_000 * flops / (matmul * 1e9):.0f} s and {60_000 * flops / 150e9:.0f} s."
    )
    print("Raw:", json.dumps(results))


if __name__ == "__main__":
    main()
