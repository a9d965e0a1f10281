"""The model zoo: every builder against the seed's layer shapes and parameter counts.

Counts are the seeds' own arithmetic on 28×28 inputs and 10 classes, e.g. the 003 CNN:
conv 3·3·1·32+32 = 320, conv 3·3·32·64+64 = 18,496, 12·12·64 = 9,216 features after pooling,
dense 9,216·128+128 = 1,179,776, head 128·10+10 = 1,290; 1,199,882 in all.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.core.errors import AtelierError
from pipeline.modeling.models import InputSpec, build_model
from pipeline.params import (
    CNNParams,
    MLPParams,
    SGDLogisticParams,
    SoftmaxRegressionParams,
)

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
