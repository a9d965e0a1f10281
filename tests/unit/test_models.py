"""The model zoo: every builder against the seed's layer shapes and parameter counts.

Counts are the seeds' own arithmetic on 28×28 inputs and 10 classes, e.g. the 003 CNN:
conv 3·3·1·32+32 = 320, conv 3·3·32·64+64 = 18,496, 12·12·64 = 9,216 features after pooling,
dense 9,216·128+128 = 1,179,776, head 128·10+10 = 1,290; 1,199,882 in all.

`compact_cnn` (stem 24, stages 48 and 96, dense 128), convolutions and dense layer without bias,
batch normalisation 4 weights per channel: stem 3·3·1·24 = 216 + 96, conv 3·3·24·48 = 10,368 +
192, conv 3·3·48·96 = 41,472 + 384, 7·7·96 = 4,704 features, dense 4,704·128 = 602,112 + 512,
head 1,290; 656,642 in all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from pipeline.core.errors import AtelierError
from pipeline.modeling.compact_cnn import forward_multiply_adds
from pipeline.modeling.models import InputSpec, build_model
from pipeline.modeling.optimizers import learning_rate_schedule, make_optimizer
from pipeline.params import (
    CNNParams,
    MLPParams,
    SGDLogisticParams,
    SoftmaxRegressionParams,
    parse_params,
)
from pipeline.params.experiments import CompactCNNParams, Experiment

MNIST_LIKE = InputSpec(shape=(28, 28), num_classes=10)


def layer_shapes(model) -> dict[str, tuple]:
    return {layer.name: tuple(layer.output.shape) for layer in model.layers}


def trainable_layers(model) -> list[tuple[str, tuple]]:
    return [(layer.name, tuple(layer.output.shape)) for layer in model.layers if layer.weights]


@pytest.mark.parametrize(
    ("params", "expected_params", "expected_layers"),
    [
        pytest.param(
            MLPParams(name="mlp", units=[256, 128], dropout=[0.3, 0.0]),
            235_146,
            [("dense_0", (None, 256)), ("dense_1", (None, 128)), ("classes", (None, 10))],
            id="000-mlp-256-drop0.3-128",
        ),
        pytest.param(
            MLPParams(name="mlp", units=[100], activation="sigmoid"),
            79_510,
            [("dense_0", (None, 100)), ("classes", (None, 10))],
            id="002-mlp-100-sigmoid",
        ),
        pytest.param(
            MLPParams(name="mlp", units=[100], activation="relu"),
            79_510,
            [("dense_0", (None, 100)), ("classes", (None, 10))],
            id="002-mlp-100-relu",
        ),
        pytest.param(
            MLPParams(name="mlp", units=[512]),
            407_050,
            [("dense_0", (None, 512)), ("classes", (None, 10))],
            id="003-mlp-512",
        ),
        pytest.param(
            MLPParams(name="mlp", units=[64, 32]),
            52_650,
            [("dense_0", (None, 64)), ("dense_1", (None, 32)), ("classes", (None, 10))],
            id="004-mlp-64-32",
        ),
        pytest.param(
            SoftmaxRegressionParams(name="softmax_regression"),
            7_850,
            [("classes", (None, 10))],
            id="001-softmax-regression",
        ),
        pytest.param(
            CNNParams(name="cnn"),
            1_199_882,
            [
                ("conv_0", (None, 26, 26, 32)),
                ("conv_1", (None, 24, 24, 64)),
                ("dense", (None, 128)),
                ("classes", (None, 10)),
            ],
            id="003-cnn",
        ),
    ],
)
def test_builder_matches_the_seed(params, expected_params, expected_layers):
    model = build_model(params, MNIST_LIKE, name="seed")

    assert model.count_params() == expected_params
    assert trainable_layers(model) == expected_layers
    assert tuple(model.output_shape) == (None, 10)
    assert model.inputs[0].dtype == "uint8"
    assert tuple(model.inputs[0].shape) == (None, 28, 28)


def test_mlp_dropout_sits_after_the_layer_it_is_given_for():
    model = build_model(
        MLPParams(name="mlp", units=[256, 128], dropout=[0.3, 0.0]), MNIST_LIKE, name="m"
    )

    names = [layer.name for layer in model.layers]
    assert names.index("dropout_0") == names.index("dense_0") + 1
    assert "dropout_1" not in names  # a 0.0 rate adds no layer
    assert model.get_layer("dropout_0").rate == pytest.approx(0.3)


def test_cnn_has_the_seed_pooling_and_dropouts():
    model = build_model(CNNParams(name="cnn"), MNIST_LIKE, name="c")

    shapes = layer_shapes(model)
    assert (None, 12, 12, 64) in shapes.values()  # MaxPooling2D(2) after the two convolutions
    assert (None, 9216) in shapes.values()  # Flatten
    rates = sorted(layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout))
    assert rates == pytest.approx([0.25, 0.5])


def test_models_take_raw_uint8_and_rescale_inside():
    spec = InputSpec(shape=(8, 8), num_classes=10, value_max=16)
    model = build_model(SoftmaxRegressionParams(name="softmax_regression"), spec, name="s")
    pixels = np.arange(64, dtype=np.uint8).reshape(1, 8, 8) % 17

    scaled = keras.Model(model.input, model.get_layer("rescale").output)(pixels)

    np.testing.assert_allclose(np.asarray(scaled), pixels / 16.0, rtol=1e-6)
    probabilities = np.asarray(model(pixels))
    assert probabilities.shape == (1, 10)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_standardize_uses_the_given_training_statistics():
    spec = InputSpec(shape=(8, 8), num_classes=10, value_max=16, mean=5.5, std=2.0)
    model = build_model(
        MLPParams(name="mlp", units=[8], input_scaling="standardize"), spec, name="z"
    )
    pixels = np.array([[0, 5, 11, 16] * 16], dtype=np.uint8).reshape(1, 8, 8)

    standardized = keras.Model(model.input, model.get_layer("standardize").output)(pixels)

    np.testing.assert_allclose(np.asarray(standardized), (pixels - 5.5) / 2.0, rtol=1e-5)
    assert "rescale" not in [layer.name for layer in model.layers]


def test_standardize_without_statistics_is_refused():
    with pytest.raises(AtelierError, match="standardize.*needs training statistics"):
        build_model(
            MLPParams(name="mlp", units=[8], input_scaling="standardize"),
            InputSpec(shape=(8, 8), num_classes=10),
        )


def test_cnn_on_tabular_rows_is_refused():
    with pytest.raises(AtelierError) as caught:
        build_model(CNNParams(name="cnn"), InputSpec(shape=(13,), num_classes=3))

    message = str(caught.value)
    assert "'cnn' needs image inputs" in message
    assert "(13,)" in message
    assert "Use 'mlp'" in message


def test_cnn_on_too_small_images_is_refused():
    with pytest.raises(AtelierError) as caught:
        build_model(CNNParams(name="cnn", kernel_size=5), InputSpec(shape=(8, 8), num_classes=10))

    message = str(caught.value)
    assert "does not fit 8×8 images" in message
    assert "kernel_size" in message


def test_cnn_on_8x8_digits_fits_with_the_seed_kernel():
    model = build_model(CNNParams(name="cnn"), InputSpec(shape=(8, 8), num_classes=10))

    assert layer_shapes(model)["conv_1"] == (None, 4, 4, 64)
    assert tuple(model.output_shape) == (None, 10)


def test_sgd_logistic_is_not_a_keras_model():
    with pytest.raises(AtelierError, match="fit_sgd_logistic"):
        build_model(SGDLogisticParams(name="sgd_logistic"), MNIST_LIKE)


# --- compact_cnn --------------------------------------------------------------------------------

COMPACT = CompactCNNParams(
    name="compact_cnn",
    stem_filters=24,
    filters=[48, 96],
    dense_units=128,
    warmup_epochs=1.0,
    translation=0.1,
    horizontal_flip=True,
)


def test_compact_cnn_shapes_and_parameter_count():
    model = build_model(COMPACT, MNIST_LIKE, name="compact")

    assert model.count_params() == 656_642
    assert trainable_layers(model) == [
        ("conv_stem", (None, 14, 14, 24)),
        ("norm_stem", (None, 14, 14, 24)),
        ("conv_0_0", (None, 14, 14, 48)),
        ("norm_0_0", (None, 14, 14, 48)),
        ("conv_1_0", (None, 7, 7, 96)),
        ("norm_1_0", (None, 7, 7, 96)),
        ("dense", (None, 128)),
        ("norm_dense", (None, 128)),
        ("classes", (None, 10)),
    ]
    assert model.inputs[0].dtype == "uint8" and tuple(model.output_shape) == (None, 10)
    # The forward multiply-adds the benchmarks' FLOP floor is built on, counted by hand.
    convolutions = 14 * 14 * 9 * (1 * 24 + 24 * 48) + 7 * 7 * 9 * 48 * 96
    assert forward_multiply_adds(COMPACT, (28, 28), 10) == convolutions + 4704 * 128 + 128 * 10


def test_compact_cnn_augments_training_inputs_only():
    model = build_model(COMPACT.model_copy(update={"translation": 0.2}), MNIST_LIKE, name="a")
    pixels = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    augment = keras.Model(model.input, model.get_layer("flip").output)
    scaled = pixels[..., None] / 255.0

    np.testing.assert_allclose(np.asarray(augment(pixels, training=False)), scaled, rtol=1e-6)
    first, second = (np.asarray(augment(pixels, training=True)) for _ in range(2))
    assert not np.allclose(first, scaled) and not np.allclose(first, second)
    np.testing.assert_array_equal(
        np.asarray(model(pixels, training=False)), np.asarray(model(pixels, training=False))
    )
    assert not np.allclose(
        np.asarray(model(pixels, training=True)), np.asarray(model(pixels, training=True))
    )


def test_compact_cnn_without_augmentation_has_no_random_layers():
    params = COMPACT.model_copy(update={"translation": 0.0, "horizontal_flip": False})
    names = [layer.name for layer in build_model(params, MNIST_LIKE).layers]

    assert "translate" not in names and "flip" not in names


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (InputSpec(shape=(13,), num_classes=3), "'compact_cnn' needs single-label image inputs"),
        (InputSpec(shape=(6, 6), num_classes=10), "does not fit 6×6 images"),
    ],
)
def test_compact_cnn_refuses_inputs_it_cannot_take(spec, expected):
    params = COMPACT.model_copy(update={"filters": [8, 8, 8]})  # needs 2·2² = 8 pixels a side
    with pytest.raises(AtelierError, match=expected):
        build_model(params, spec)


def scheduled_experiment(**settings) -> Experiment:
    return Experiment(dataset="fashion_mnist", model=COMPACT, **settings)


def test_schedule_warms_up_linearly_then_decays_to_zero_at_the_last_epoch():
    experiment = scheduled_experiment(learning_rate=0.004, epochs=4)
    schedule = learning_rate_schedule(experiment, steps_per_epoch=10)  # warm-up: 1 epoch

    rates = [float(schedule(step)) for step in range(41)]
    assert rates[0] == 0.0
    assert rates[5] == pytest.approx(0.002) and rates[10] == pytest.approx(0.004)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))
    assert rates[25] == pytest.approx(0.002, rel=1e-3)  # half-way through the cosine
    assert rates[40] == pytest.approx(0.0, abs=1e-9)


def test_models_without_a_schedule_keep_a_constant_learning_rate():
    experiment = Experiment(
        dataset="fashion_mnist", model=MLPParams(name="mlp", units=[8]), learning_rate=0.01
    )

    assert learning_rate_schedule(experiment, steps_per_epoch=10) == 0.01


def test_a_restored_backup_continues_the_schedule(tmp_path):
    """The schedule lives in the optimizer's config and counts its `iterations`, which the
    resume backup (the model's weights file, optimizer variables included) carries over."""
    from pipeline.modeling.resume import _load_backup

    experiment = scheduled_experiment(learning_rate=0.004, epochs=3)
    spec = InputSpec(shape=(8, 8), num_classes=10, value_max=16)

    def compiled():
        model = build_model(experiment.model, spec)
        rate = learning_rate_schedule(experiment, steps_per_epoch=4)
        model.compile(
            optimizer=make_optimizer("adam", rate), loss="sparse_categorical_crossentropy"
        )
        model.optimizer.build(model.trainable_variables)
        return model, rate

    model, schedule = compiled()
    model.optimizer.iterations.assign(6)  # as after one and a half epochs
    model.save_weights(tmp_path / "backup.weights.h5")  # what the resume backup writes
    resumed, _ = compiled()

    assert _load_backup(resumed, tmp_path / "backup.weights.h5") is None
    assert int(resumed.optimizer.iterations) == 6
    assert float(resumed.optimizer.learning_rate) == pytest.approx(float(schedule(6)))
    assert float(schedule(6)) != pytest.approx(float(schedule(0)))


LOAD_IN_SAFE_MODE = """
import json, sys
import keras, numpy as np
x = np.load(sys.argv[1])
found = {}
for path in sys.argv[2:]:
    model = keras.saving.load_model(path, safe_mode=True)
    rate = keras.optimizers.serialize(model.optimizer)["config"]["learning_rate"]
    found[path] = {
        "predictions": model.predict(x, verbose=0).argmax(axis=1).tolist(),
        "schedule": rate.get("class_name") if isinstance(rate, dict) else None,
    }
found["pipeline_imported"] = any(name.split(".")[0] == "pipeline" for name in sys.modules)
print(json.dumps(found))
"""


def test_compact_cnn_learns_digits_and_its_checkpoint_loads_in_safe_mode(tmp_path):
    from pipeline.stages.train import train_experiment
    from tests.conftest import prepare_digits

    experiment = {
        "dataset": "digits",
        "model": {"name": "compact_cnn", "stem_filters": 16, "filters": [32], "dense_units": 64},
        "learning_rate": 0.005,
        "epochs": 6,
        "batch_size": 32,
    }
    params = parse_params({"data": {"datasets": ["digits"]}, "experiments": {"cnn": experiment}})
    prepare_digits(tmp_path)
    summary = train_experiment(params, "cnn", root=tmp_path)
    assert summary["val_accuracy"] > 0.8  # chance is 0.1
    x_val = np.load(tmp_path / "data/prepared/digits/x_train.npy")[
        np.load(tmp_path / "data/split/digits/val_idx.npy")
    ]
    np.save(tmp_path / "x.npy", x_val)
    best = tmp_path / "models/cnn/best.keras"

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_IN_SAFE_MODE, "x.npy", str(best)],
        cwd=tmp_path,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert not found["pipeline_imported"]
    y_val = np.load(tmp_path / "data/prepared/digits/y_train.npy")[
        np.load(tmp_path / "data/split/digits/val_idx.npy")
    ]
    accuracy = np.mean(np.asarray(found[str(best)]["predictions"]) == y_val)
    assert accuracy == pytest.approx(summary["val_accuracy"], abs=1e-6)
    # The train stage compiled it with the warm-up and cosine schedule, kept in its config.
    assert found[str(best)]["schedule"] == "CosineDecay"
