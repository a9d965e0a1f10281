"""One training epoch of the seed 000 MLP, four ways, against its FLOP floor.

Run from the project root after the data stages (`dvc repro split@fashion_mnist`):

    .venv/bin/python benchmarks/mlp_epoch.py [--epochs 3] [--rounds 2]
    .venv/bin/python benchmarks/mlp_epoch.py --quick   # a smoke run: no data stages needed

The model is seed 000's (Dense256-Dropout0.3-Dense128-Dense10, batch 128, Adam at 1e-3) on the
48,000 training rows of Fashion-MNIST. Each way runs in its own process, the ways alternating
for `--rounds`: one warm-up epoch (tracing), then `--epochs` timed ones, the median kept.

- `seed`: the seed script's plain Keras — float32 inputs scaled beforehand, one-hot labels,
  `Sequential.fit` on NumPy arrays with `validation_split=0.2`;
- `pipeline, Keras Adam`: the train stage's code path (`build_model` with `uint8` input scaled in
  the model, `make_datasets`, `fit` with the stage's `steps_per_execution`, validation on the
  12,000 validation rows) with `keras.optimizers.Adam`;
- `pipeline`: the same with the stage's optimizer (`FusedAdam`, `pipeline/modeling/optimizers.py`);
- `bare loop`: a lower bound for TensorFlow on this machine — one `tf.function` per epoch
  doing only the arithmetic (batch gather, scaling, the three layers, dropout, the loss, its
  gradient, the fused Adam update); no metrics, no validation, no callbacks, no Keras.

The FLOP floor is the model's arithmetic (2 × multiply-adds, forward and backward) at the
machine's measured float32 matrix-multiply rate. Results go to stdout as Markdown.

`--quick` checks that the script runs, in well under a minute: 640 random 28×28 images (512 to
train on) instead of Fashion-MNIST, one round of one timed epoch, a small matrix for the rate. Its
figures mean nothing; it writes nothing (not even bytecode caches).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # --quick, run by the tests, leaves nothing in the repository

from cnn_epoch import _matmul_rate, _result, _start  # noqa: E402 (this folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
BATCH, ROWS, UNITS = 128, 48_000, (784, 256, 128, 10)
QUICK_ROWS, QUICK_VAL_ROWS = 512, 128
WAYS = ("seed", "pipeline, Keras Adam", "pipeline", "bare loop")


def flops_per_epoch(rows: int = ROWS) -> float:
    """Forward and backward arithmetic of one epoch (the 48,000 training rows), in FLOP."""
    layers = list(zip(UNITS, UNITS[1:], strict=False))
    forward = sum(a * b for a, b in layers)
    # Backward: every weight gradient, and the input gradients of all but the first layer.
    backward = forward + sum(a * b for a, b in layers[1:])
    return 2.0 * (forward + backward) * rows


def _arrays(np, quick: bool):
    """Fashion-MNIST's training images and labels (random ones, of the same shapes, `--quick`)."""
    if quick:
        rng = np.random.default_rng(0)
        rows = QUICK_ROWS + QUICK_VAL_ROWS
        x = rng.integers(0, 256, (rows, 28, 28), dtype=np.uint8)
        return x, rng.integers(0, 10, rows, dtype=np.uint8)
    prepared = ROOT / "data" / "prepared" / "fashion_mnist"
    return np.load(prepared / "x_train.npy"), np.load(prepared / "y_train.npy")


def _worker(way: str, epochs: int, quick: bool) -> dict:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import tensorflow as tf

    x, y = _arrays(np, quick)
    if way == "seed":
        times = _seed_epochs(np, x, y, epochs)
    elif way == "bare loop":
        times = _bare_epochs(np, tf, x, y, epochs, QUICK_ROWS if quick else ROWS)
    else:
        times = _pipeline_epochs(way, epochs, (x, y) if quick else None)
    matmul = _matmul_rate(tf, np, 512 if quick else 2048)
    return {"way": way, "epoch_s": times, "tf_matmul_gflops": matmul}


def _timing_callback(times: list):
    import keras

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)

    return EpochTimes()


def _seed_epochs(np, images, labels, epochs: int) -> list[float]:
    import keras
    from keras import layers

    x = images.reshape(-1, 784).astype("float32") / 255
    y = keras.utils.to_categorical(labels, 10)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            layers.Dense(256, activation="relu"),
            layers.Dropout(0.3),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    times: list[float] = []
    model.fit(
        x,
        y,
        epochs=epochs + 1,
        batch_size=BATCH,
        validation_split=0.2,
        callbacks=[_timing_callback(times)],
        verbose=0,
    )
    return times[1:]


def _pipeline_epochs(way: str, epochs: int, arrays=None) -> list[float]:
    """The train stage's way; on `arrays` (images, labels) if given, else on the split stage's."""
    import keras

    from pipeline.modeling.device import seed_everything
    from pipeline.modeling.inputs import make_datasets
    from pipeline.modeling.models import InputSpec, build_model
    from pipeline.modeling.optimizers import make_optimizer
    from pipeline.params import load_params
    from pipeline.stages.train import TrainData, load_train_data

    params = load_params(ROOT / "params.yaml")
    experiment = params.experiment("fashion_mlp")
    if arrays is None:
        data = load_train_data(experiment.dataset, ROOT)
    else:
        x, y = arrays
        meta = {"task": "classification", "num_classes": 10, "value_max": 255}
        data = TrainData(x[:QUICK_ROWS], y[:QUICK_ROWS], x[QUICK_ROWS:], y[QUICK_ROWS:], meta)
    seed_everything(params.base.seed, params.runtime.deterministic)
    model = build_model(experiment.model, InputSpec(shape=(28, 28), num_classes=10), name="mlp")
    optimizer = (
        keras.optimizers.Adam(learning_rate=experiment.learning_rate)
        if way == "pipeline, Keras Adam"
        else make_optimizer(experiment.optimizer, experiment.learning_rate)
    )
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=params.runtime.steps_per_execution,
    )
    train, val = make_datasets(data, experiment.batch_size, params.base.seed)
    times: list[float] = []
    model.fit(
        train,
        epochs=epochs + 1,
        validation_data=val,
        callbacks=[_timing_callback(times)],
        shuffle=False,
        verbose=0,
    )
    return times[1:]


def _bare_epochs(np, tf, x, y, epochs: int, n_rows: int) -> list[float]:
    images = tf.constant(x[:n_rows].reshape(n_rows, 784))
    labels = tf.constant(y[:n_rows].astype(np.int64))
    rng = np.random.default_rng(0)
    weights = []
    for fan_in, fan_out in zip(UNITS, UNITS[1:], strict=False):
        limit = np.sqrt(6 / (fan_in + fan_out))
        weights.append(tf.Variable(rng.uniform(-limit, limit, (fan_in, fan_out)), dtype=tf.float32))
        weights.append(tf.Variable(tf.zeros(fan_out)))
    moments = [(tf.Variable(tf.zeros_like(w)), tf.Variable(tf.zeros_like(w))) for w in weights]
    step = tf.Variable(0.0)

    @tf.function
    def epoch(order):
        loss = tf.constant(0.0)
        for batch in tf.range(n_rows // BATCH):
            rows = order[batch * BATCH : (batch + 1) * BATCH]
            x = tf.cast(tf.gather(images, rows), tf.float32) / 255.0
            with tf.GradientTape() as tape:
                h = tf.nn.relu(x @ weights[0] + weights[1])
                h = tf.nn.dropout(h, 0.3)
                h = tf.nn.relu(h @ weights[2] + weights[3])
                logits = h @ weights[4] + weights[5]
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(tf.gather(labels, rows), logits)
                )
            step.assign_add(1.0)
            for w, (m, v), g in zip(weights, moments, tape.gradient(loss, weights), strict=True):
                tf.raw_ops.ResourceApplyAdam(
                    var=w.handle,
                    m=m.handle,
                    v=v.handle,
                    beta1_power=tf.pow(0.9, step),
                    beta2_power=tf.pow(0.999, step),
                    lr=1e-3,
                    beta1=0.9,
                    beta2=0.999,
                    epsilon=1e-7,
                    grad=g,
                )
        return loss

    times = []
    for _ in range(epochs + 1):
        started = time.perf_counter()
        epoch(tf.random.shuffle(tf.range(n_rows))).numpy()
        times.append(time.perf_counter() - started)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="processes per way, alternating")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run on random images (figures meaningless)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.rounds = 1, 1
    if args.worker:
        print(json.dumps(_worker(args.worker, args.epochs, args.quick)))
        return

    epochs: dict[str, list[float]] = {way: [] for way in WAYS}
    matmul = 0.0
    for _ in range(args.rounds):
        # One way at a time, so that they do not share the cores; --quick, whose figures mean
        # nothing, starts them together.
        workers = {}
        for way in WAYS:
            command = [sys.executable, __file__, "--worker", way, "--epochs", str(args.epochs)]
            command += ["--quick"] if args.quick else []
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONDONTWRITEBYTECODE": "1"}
            workers[way] = _start(command, env)
            if not args.quick:
                workers[way] = _result(workers[way])
        for way, worker in workers.items():
            result = worker if isinstance(worker, dict) else _result(worker)
            epochs[way] += result["epoch_s"]
            matmul = max(matmul, result["tf_matmul_gflops"])

    rows = QUICK_ROWS if args.quick else ROWS
    floor = flops_per_epoch(rows) / (matmul * 1e9)
    seed = statistics.median(epochs["seed"])
    print(
        f"{flops_per_epoch(rows) / 1e9:.1f} GFLOP per {rows:,}-row epoch; TensorFlow float32 "
        f"matmul rate here: {matmul:.0f} GFLOP/s, so a floor of {floor:.2f} s per epoch; "
        f"{args.rounds} processes × {args.epochs} timed epochs per way; "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| way | s per epoch (median) | min–max | × floor | seed / way |")
    print("|---|---:|---:|---:|---:|")
    for way in WAYS:
        median = statistics.median(epochs[way])
        print(
            f"| {way} | {median:.2f} | {min(epochs[way]):.2f}–{max(epochs[way]):.2f} "
            f"| {median / floor:.1f} | {seed / median:.2f}× |"
        )
    raw = {way: [round(seconds, 3) for seconds in times] for way, times in epochs.items()}
    print("\nRaw:", json.dumps(raw))


if __name__ == "__main__":
    main()
