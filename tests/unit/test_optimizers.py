"""`FusedAdam` against Keras' Adam, and the checkpoint that names neither `FusedAdam` nor pipeline.

Real training steps on small arrays: the fused kernel must take the same path through weight
space as Keras' own update (rounding aside), and a model trained with it must load with Keras
alone, in a process that never imports this project.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.modeling.models import InputSpec, build_model  # noqa: E402
from pipeline.modeling.optimizers import FusedAdam, make_optimizer, serving_copy  # noqa: E402
from pipeline.params import MLPParams  # noqa: E402

SPEC = InputSpec(shape=(8, 8), num_classes=10, value_max=16)


def digits_like(rows: int = 256, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 17, size=(rows, 8, 8), dtype=np.uint8)
    y = (x[:, :4].sum(axis=(1, 2)) % 10).astype(np.int64)  # a function of the pixels
    return x, y


def trained_weights(optimizer, *, epochs: int = 3) -> list[np.ndarray]:
    """The weights after `epochs` of mini-batch training from the same start, without dropout."""
    keras.utils.set_random_seed(7)
    model = build_model(MLPParams(name="mlp", units=[32, 16]), SPEC, name="m")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    x, y = digits_like()
    model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0)
    return [np.asarray(w) for w in model.get_weights()]


def test_fused_adam_takes_the_same_steps_as_keras_adam():
    start = trained_weights(keras.optimizers.Adam(learning_rate=0.01), epochs=0)
    keras_adam = trained_weights(keras.optimizers.Adam(learning_rate=0.01))
    fused = trained_weights(FusedAdam(learning_rate=0.01))

    # 24 steps moved the weights well away from where they started…
    assert max(np.abs(a - b).max() for a, b in zip(keras_adam, start, strict=True)) > 0.05
    # …and both updates moved them to the same place, to float32 rounding.
    for ours, theirs in zip(fused, keras_adam, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_fused_adam_uses_the_fused_kernel_for_dense_gradients_on_one_device():
    import tensorflow as tf

    optimizer = FusedAdam(learning_rate=0.01)
    variable = keras.Variable(np.ones((3, 2), dtype=np.float32))
    optimizer.build([variable])
    gradient = tf.ones((3, 2))

    assert optimizer._fused(gradient, variable)
    assert not FusedAdam(amsgrad=True)._fused(gradient, variable)  # AMSGrad: Keras' update
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert not optimizer._fused(gradient, variable)  # a strategy's variables: Keras' update

    optimizer.apply([gradient], [variable])
    # Adam's first step moves every weight by the learning rate against the gradient's sign.
    np.testing.assert_allclose(np.asarray(variable), np.full((3, 2), 0.99), rtol=1e-6)


def test_amsgrad_falls_back_to_keras_update_and_matches_it():
    ours = trained_weights(FusedAdam(learning_rate=0.01, amsgrad=True), epochs=1)
    theirs = trained_weights(keras.optimizers.Adam(learning_rate=0.01, amsgrad=True), epochs=1)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_make_optimizer_names_and_the_distributed_case():
    assert type(make_optimizer("adam", 0.002)) is FusedAdam
    assert type(make_optimizer("adam", 0.002, distributed=True)) is keras.optimizers.Adam
    assert type(make_optimizer("sgd", 0.1)) is keras.optimizers.SGD
    rmsprop = make_optimizer("rmsprop", 0.001)
    assert type(rmsprop) is keras.optimizers.RMSprop
    assert float(rmsprop.learning_rate) == pytest.approx(0.001)


LOAD_WITH_KERAS_ALONE = """
import json, sys, numpy as np, keras
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
x = np.load(sys.argv[2])
print(json.dumps({
    "optimizer": type(model.optimizer).__module__ + "." + type(model.optimizer).__name__,
    "inner": type(getattr(model.optimizer, "inner_optimizer", model.optimizer)).__name__,
    "learning_rate": float(model.optimizer.learning_rate),
    "loss": model.loss,
    "pipeline_imported": any(name.split(".")[0] == "pipeline" for name in sys.modules),
    "predictions": model.predict(x, verbose=0).tolist(),
}))
"""


@pytest.fixture(params=["float32", "mixed_float16"])
def precision(request):
    """Each policy the train stage can pick (mixed_float16 on GPUs with tensor cores)."""
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def test_serving_copy_loads_with_keras_alone_and_predicts_like_the_trained_model(
    tmp_path, precision
):
    keras.utils.set_random_seed(3)
    model = build_model(MLPParams(name="mlp", units=[16]), SPEC, name="m")
    model.compile(
        optimizer=FusedAdam(learning_rate=0.005),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x, y = digits_like(64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    if precision == "mixed_float16":  # Keras wrapped FusedAdam for loss scaling
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    serving_copy(model).save(tmp_path / "best.keras")
    np.save(tmp_path / "x.npy", x[:5])

    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_KERAS_ALONE, "best.keras", "x.npy"],
        cwd=tmp_path,  # not the project root: `pipeline` cannot be imported from here
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "pipeline" not in loaded["optimizer"] and loaded["inner"] == "Adam"
    assert loaded["learning_rate"] == pytest.approx(0.005)
    assert loaded["loss"] == "sparse_categorical_crossentropy"
    assert loaded["pipeline_imported"] is False
    np.testing.assert_allclose(
        np.array(loaded["predictions"]), model.predict(x[:5], verbose=0), rtol=1e-3, atol=1e-4
    )
