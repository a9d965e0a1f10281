"""`compact_cnn`: a small convolutional network built for accuracy per FLOP.

The seed CNN (seed 003) spends 12.0 M multiply-adds per 28×28 image, 10.6 M of them in one
64-filter convolution at 24×24, and reaches 0.87 on Fashion-MNIST in the single epoch a CPU run
affords. This network spends its arithmetic where the feature maps are small: a stem (one 3×3
convolution, stride 2 by default, so that no layer works at full resolution), then stages of 3×3
convolutions with 2×2 max pooling between them (a stage at half the resolution costs a quarter as
much per filter), each convolution followed by batch normalisation and ReLU; then a dense layer on
the flattened last stage (or global average pooling), dropout and the softmax. The defaults
(stem 16, stages of 40 and 96, Dense 128) make 3.45 M multiply-adds per image, 29 % of the seed
CNN's, and 644,986 parameters. On a CPU, full-resolution feature maps cost far more than their
multiply-adds: batch normalisation, ReLU and pooling pass over every value several times (a
stride-1 stem of 16 filters alone took about 60 % of the time of a whole stride-2 network;
benchmarks/RESULTS.md, "compact_cnn").

Training-only augmentation (a random translation and a horizontal flip, Keras preprocessing
layers that pass images through unchanged at inference) and the learning-rate schedule (linear
warm-up, cosine decay: `pipeline.modeling.optimizers.learning_rate_schedule`) are settings.
Every layer is a standard Keras layer, so a saved model loads with
`keras.saving.load_model(path, safe_mode=True)` and Keras alone.
"""

from __future__ import annotations

from pipeline.core.errors import AtelierError
from pipeline.params.experiments import CompactCNNParams

# Batch normalisation's moving averages: 0.9 rather than Keras' 0.99, so that they settle within
# the few hundred steps of a short CPU run (at 0.99 they still carry a third of their initial
# values after 100 steps, and inference is poor until they settle).
MOMENTUM = 0.9


def forward_multiply_adds(params: CompactCNNParams, shape: tuple[int, ...], classes: int) -> int:
    """Multiply-adds of one forward pass over one image of `shape` (height, width[, channels]):
    the convolutions and dense layers (batch normalisation, pooling and activations, which are
    element-wise, are left out)."""
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    height, width = -(-height // params.stem_stride), -(-width // params.stem_stride)
    total = height * width * 9 * channels * params.stem_filters
    channels = params.stem_filters
    for stage, filters in enumerate(params.filters):
        if stage:
            height, width = height // 2, width // 2
        for _ in range(params.convs_per_stage):
            total += height * width * 9 * channels * filters
            channels = filters
    features = channels if params.dense_units == 0 else height * width * channels
    if params.dense_units:
        total += features * params.dense_units
        features = params.dense_units
    return total + features * classes


def build_compact_cnn(params: CompactCNNParams, spec, name: str):
    """The `compact_cnn` Keras model (not compiled) for image inputs described by `spec` (a
    `pipeline.modeling.models.InputSpec`: shape, classes, value range)."""
    import keras
    from keras import layers

    _check_fits(params, spec)
    inputs = keras.Input(shape=spec.shape, dtype="uint8", name="pixels")
    x = layers.Rescaling(1.0 / spec.value_max, name="rescale")(inputs)
    if len(spec.shape) == 2:
        x = layers.Reshape((*spec.shape, 1), name="channel")(x)
    x = _augmentation(x, params)
    x = _conv_norm_relu(x, params.stem_filters, "stem", strides=params.stem_stride)
    for stage, filters in enumerate(params.filters):
        if stage:
            x = layers.MaxPooling2D(2, name=f"pool_{stage}")(x)
        for index in range(params.convs_per_stage):
            x = _conv_norm_relu(x, filters, f"{stage}_{index}")
    if params.dense_units:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(params.dense_units, use_bias=False, name="dense")(x)
        x = layers.BatchNormalization(momentum=MOMENTUM, name="norm_dense")(x)
        x = layers.ReLU(name="relu_dense")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="average")(x)
    if params.dropout > 0:
        x = layers.Dropout(params.dropout, name="dropout")(x)
    # float32 output keeps the softmax stable under mixed precision.
    outputs = layers.Dense(spec.num_classes, activation="softmax", dtype="float32", name="classes")(
        x
    )
    return keras.Model(inputs, outputs, name=name)


def _conv_norm_relu(x, filters: int, label: str, strides: int = 1):
    from keras import layers

    # No bias: the batch normalisation that follows has its own offset.
    x = layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=f"conv_{label}"
    )(x)
    x = layers.BatchNormalization(momentum=MOMENTUM, name=f"norm_{label}")(x)
    return layers.ReLU(name=f"relu_{label}")(x)


def _augmentation(x, params: CompactCNNParams):
    """Random translation and flip: active in `fit` only (`training=True`); identity otherwise.

    They run in float32 whatever the precision policy (the image transform has no float16
    kernel on every device); the convolutions cast back.
    """
    from keras import layers

    if params.translation > 0:
        x = layers.RandomTranslation(
            params.translation,
            params.translation,
            fill_mode="constant",  # Fashion-MNIST's background is black, and so is the border
            fill_value=0.0,
            dtype="float32",
            name="translate",
        )(x)
    if params.horizontal_flip:
        x = layers.RandomFlip("horizontal", dtype="float32", name="flip")(x)
    return x


def _check_fits(params: CompactCNNParams, spec) -> None:
    if len(spec.shape) not in (2, 3) or spec.task != "classification":
        raise AtelierError(
            f"Model 'compact_cnn' needs single-label image inputs (height, width[, channels]); "
            f"this dataset's rows have shape {spec.shape} ({spec.task}). Use 'mlp' for tabular "
            "data."
        )
    smallest = min(spec.shape[:2])
    needed = params.stem_stride * 2 ** (len(params.filters) - 1)
    if smallest < needed:
        raise AtelierError(
            f"Model 'compact_cnn' does not fit {spec.shape[0]}×{spec.shape[1]} images: "
            f"a stem of stride {params.stem_stride} and {len(params.filters)} stages pooled "
            f"{len(params.filters) - 1} times need at least {needed}×{needed}. Give fewer "
            "filters (stages) or stem_stride 1."
        )
