"""The GPU path, measured where only Keras and JAX are installed: epoch time and images/s of the
seed 000 MLP and the seed 003 CNN, with mixed precision off and on, and the device they ran on.

    KERAS_BACKEND=jax python benchmarks/gpu_check.py [--epochs 3] [--images 60000] [--json out.json]
    python benchmarks/gpu_check.py --quick     # a smoke run on the CPU: tiny, figures meaningless

On a GPU host with nothing installed but JAX (with CUDA), Keras and NumPy, copy this one file
and run it there: it imports nothing of the project.

It needs Keras, JAX (with CUDA for a GPU) and NumPy only: no TensorFlow, no DVC, nothing of the
project's, so it runs on a GPU host that has none of them. The models are the seeds' own
(seed 000: Dense 256 → Dropout 0.3 → Dense 128 → softmax; seed 003: Conv 32 → Conv 64 → max
pooling → Dropout 0.25 → Dense 128 → Dropout 0.5 → softmax), Adam, batch 128, on random 28×28
uint8 images (the time of an epoch does not depend on what the pixels show). Mixed precision is
`mixed_bfloat16` on a GPU of compute capability 8.0 or later (as the train stage chooses it),
else `mixed_float16`; on a CPU only float32 is timed, unless `--quick`.

The first epoch compiles; the figures are the median of the later ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.dont_write_bytecode = True  # --quick, run by the tests, leaves nothing in the repository


def build(kind: str):
    import keras
    from keras import layers

    inputs = keras.Input((28, 28), dtype="uint8")
    x = layers.Rescaling(1 / 255)(inputs)
    if kind == "mlp":
        x = layers.Flatten()(x)
        x = layers.Dense(256, activation="relu")(x)
        x = layers.Dropout(0.3)(x)
        x = layers.Dense(128, activation="relu")(x)
    else:
        x = layers.Reshape((28, 28, 1))(x)
        x = layers.Conv2D(32, 3, activation="relu")(x)
        x = layers.Conv2D(64, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.25)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(128, activation="relu")(x)
        x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(10, activation="softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name=f"seed_{kind}")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def device() -> dict:
    import jax

    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    capability = str(getattr(gpus[0], "compute_capability", "0.0")) if gpus else None
    return {
        "backend": os.environ["KERAS_BACKEND"],
        "device": str(gpus[0].device_kind) if gpus else "cpu",
        "devices": len(gpus) or 1,
        "compute_capability": capability,
        "jax_version": jax.__version__,
    }


def mixed_policy(facts: dict) -> str:
    capability = tuple(int(part) for part in (facts["compute_capability"] or "0.0").split("."))
    return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"


def time_epochs(kind: str, policy: str, images: int, epochs: int, batch: int) -> dict:
    import keras
    import numpy as np

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(images, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=images)
    model = build(kind)
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)

    model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, callbacks=[Clock()])
    later = times[1:] or times
    epoch = statistics.median(later)
    return {
        "model": kind,
        "policy": policy,
        "images": images,
        "first_epoch_s": round(times[0], 3),
        "epoch_s": round(epoch, 3),
        "images_per_s": round(images / epoch),
        "params": model.count_params(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--quick", action="store_true", help="a smoke run (figures meaningless)")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.images, args.batch_size = 2, 64, 32

    if os.environ["KERAS_BACKEND"] != "tensorflow":
        # Keras imports TensorFlow whenever it is installed (to seed it, to recognise its
        # tensors); this is its switch for "not installed", the state of a JAX-only GPU host.
        from keras.src.utils import module_utils

        module_utils.tensorflow._available = False
    facts = device()
    policies = ["float32"]
    if facts["device"] != "cpu" or args.quick:
        policies.append(mixed_policy(facts))
    runs = [(kind, policy) for kind in ("mlp", "cnn") for policy in policies]
    if args.quick:  # XLA's CPU convolutions compile slowly: the CNN once, in float32
        runs = [run for run in runs if run[0] == "mlp" or run[1] == "float32"]
    rows = [
        time_epochs(kind, policy, args.images, args.epochs, args.batch_size)
        for kind, policy in runs
    ]
    print(
        f"Device: {facts['device']} ({facts['devices']}), Keras on {facts['backend']} "
        f"(jax {facts['jax_version']}), {args.images} images per epoch, batch {args.batch_size}"
    )
    print("\n| model | precision | first epoch (s) | epoch (s, median of later) | images/s |")
    print("|---|---|--:|--:|--:|")
    for row in rows:
        print(
            f"| {row['model']} | {row['policy']} | {row['first_epoch_s']} | {row['epoch_s']} "
            f"| {row['images_per_s']:,} |"
        )
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"device": facts, "runs": rows}, stream, indent=2)


if __name__ == "__main__":
    main()
