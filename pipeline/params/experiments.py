"""One experiment: its dataset, its model (one settings class per builder) and how it trains."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from pipeline.data.catalog import CATALOG
from pipeline.params.common import (
    Activation,
    DropoutRate,
    InputScaling,
    PositiveInt,
    StrictModel,
    check_dataset_name,
)

# --- models -------------------------------------------------------------------------------------


class DenseStack(StrictModel):
    """Models with hidden Dense layers: `units` per layer and an optional dropout rate after each
    (the subclasses declare the fields, so that each lists its keys in its own order)."""

    @model_validator(mode="after")
    def _dropout_matches_units(self) -> DenseStack:
        if self.dropout is not None and len(self.dropout) != len(self.units):
            raise ValueError(
                f"dropout has {len(self.dropout)} rates for {len(self.units)} hidden layers "
                f"(units {self.units}): give one rate per layer, 0.0 for none"
            )
        return self


class SoftmaxRegressionParams(StrictModel):
    name: Literal["softmax_regression"]
    input_scaling: InputScaling = "rescale"


class MLPParams(DenseStack):
    name: Literal["mlp"]
    units: Annotated[list[PositiveInt], Field(min_length=1)]
    activation: Activation = "relu"
    dropout: list[DropoutRate] | None = Field(
        None, description="Dropout rate after each hidden layer (same length as units)."
    )
    input_scaling: InputScaling = "rescale"


class CNNParams(StrictModel):
    name: Literal["cnn"]
    filters: Annotated[list[PositiveInt], Field(min_length=1)] = [32, 64]
    kernel_size: PositiveInt = 3
    pool_size: PositiveInt = 2
    conv_dropout: DropoutRate = 0.25
    dense_units: PositiveInt = 128
    dense_dropout: DropoutRate = 0.5
    activation: Activation = "relu"
    input_scaling: InputScaling = "rescale"


class CompactCNNParams(StrictModel):
    """A small convolutional network built for accuracy per FLOP (`compact_cnn`): a stem
    convolution, stages of 3×3 convolutions (batch normalisation, ReLU) with 2×2 max pooling
    between them, a dense layer, dropout; optional training-only augmentation (random
    translation, horizontal flip). The experiment's `learning_rate` is the peak of a linear
    warm-up followed by a cosine decay to zero at the last epoch
    (`pipeline.modeling.optimizers.learning_rate_schedule`).

    The defaults are the CPU default run's (`fashion_compact_cnn`, 4 epochs): in so short a run
    augmentation and heavy dropout cost accuracy (benchmarks/RESULTS.md); turn them on for long
    schedules (README, "GPU").
    """

    name: Literal["compact_cnn"]
    stem_filters: Annotated[int, Field(ge=1, le=1024)] = Field(
        16, description="Filters of the first 3×3 convolution, applied with stride stem_stride."
    )
    stem_stride: Literal[1, 2] = Field(
        2,
        description="Stride of the first convolution: 2 halves the image at once (28×28 → "
        "14×14), which saves the cost of full-resolution feature maps; 1 keeps them.",
    )
    filters: Annotated[
        list[Annotated[int, Field(ge=1, le=1024)]], Field(min_length=1, max_length=4)
    ] = Field(
        [40, 96],
        description="Filters of each stage's convolutions after the stem; the feature maps "
        "are max-pooled 2×2 between stages (14×14 → 7×7 for two stages).",
    )
    convs_per_stage: Annotated[int, Field(ge=1, le=4)] = Field(
        1, description="3×3 convolutions per stage, each with batch normalisation and ReLU."
    )
    dense_units: Annotated[int, Field(ge=0, le=4096)] = Field(
        128,
        description="Units of the dense layer on the flattened last stage; 0 replaces it by "
        "global average pooling.",
    )
    dropout: DropoutRate = Field(0.1, description="Dropout rate before the softmax layer.")
    warmup_epochs: Annotated[float, Field(ge=0.0, le=100.0)] = Field(
        0.5,
        description="Epochs over which the learning rate rises linearly from 0 to the "
        "experiment's learning_rate (the peak); a cosine decay to 0 follows until the last epoch.",
    )
    translation: Annotated[float, Field(ge=0.0, le=0.5)] = Field(
        0.0,
        description="Training only: random shift of up to this fraction of the height and "
        "width, empty borders black; 0 for none.",
    )
    horizontal_flip: bool = Field(
        False, description="Training only: mirror half of the images left to right."
    )


class RegressorParams(DenseStack):
    """Seed 004's regression network: Dense(64) → Dense(32) → Dense(1) on z-scored features."""

    name: Literal["regressor"]
    units: Annotated[list[PositiveInt], Field(min_length=1)] = [64, 32]
    activation: Activation = "relu"
    dropout: list[DropoutRate] | None = Field(
        None, description="Dropout rate after each hidden layer (same length as units)."
    )


class MultilabelMLPParams(DenseStack):
    """Seed 004's apparel network: Flatten → Dense(128) → Dense(64) → Dense(labels, sigmoid)."""

    name: Literal["multilabel_mlp"]
    units: Annotated[list[PositiveInt], Field(min_length=1)] = [128, 64]
    activation: Activation = "relu"
    dropout: list[DropoutRate] | None = Field(
        None, description="Dropout rate after each hidden layer (same length as units)."
    )


class SGDLogisticParams(StrictModel):
    name: Literal["sgd_logistic"]
    max_iter: PositiveInt = 5
    alpha: Annotated[float, Field(gt=0)] = 1e-4
    cv_folds: Annotated[int, Field(ge=2, le=20)] = 5


ModelParams = Annotated[
    Union[  # noqa: UP007
        SoftmaxRegressionParams,
        MLPParams,
        CNNParams,
        CompactCNNParams,
        RegressorParams,
        MultilabelMLPParams,
        SGDLogisticParams,
    ],
    Field(discriminator="name"),
]
MODEL_NAMES = (
    "softmax_regression",
    "mlp",
    "cnn",
    "compact_cnn",
    "regressor",
    "multilabel_mlp",
    "sgd_logistic",
)

# What each task can learn with, and the metric Keras tracks for it besides the loss.
TASK_MODELS = {
    "classification": ("softmax_regression", "mlp", "cnn", "compact_cnn", "sgd_logistic"),
    "regression": ("regressor",),
    "multilabel": ("multilabel_mlp", "cnn"),  # cnn with a sigmoid head
}
TASK_METRIC = {"classification": "accuracy", "regression": "mae", "multilabel": "binary_accuracy"}


# --- experiments --------------------------------------------------------------------------------

# Read by Keras training only: `optimizer` … `monitor` have no effect on `sgd_logistic`.
TRAINING_KEYS = (
    "optimizer",
    "learning_rate",
    "epochs",
    "batch_size",
    "patience",
    "monitor",
    "backend",
)


class Experiment(StrictModel):
    dataset: str
    model: ModelParams
    optimizer: Literal["sgd", "rmsprop", "adam"] = "adam"
    learning_rate: Annotated[float, Field(gt=0, le=10)] = 1e-3
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 32
    patience: PositiveInt | None = Field(
        None, description="Early-stopping patience in epochs; null trains every epoch."
    )
    monitor: Literal["val_loss", "val_accuracy", "val_mae", "val_binary_accuracy"] = Field(
        "val_loss",
        description="Picks the best epoch: val_loss, or the task's metric (val_accuracy for "
        "classification, val_mae for regression, val_binary_accuracy for multi-label).",
    )
    backend: Literal["tensorflow", "jax"] | None = Field(
        None,
        description="The Keras backend that trains and evaluates it: tensorflow or jax; empty "
        "for runtime.backend.",
    )
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        0.5, description="Multi-label: a label is predicted when its probability exceeds this."
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        return check_dataset_name(name)

    @model_validator(mode="after")
    def _model_and_monitor_fit_the_task(self) -> Experiment:
        task = self.task
        if self.model.name not in TASK_MODELS[task]:
            raise ValueError(
                f"model {self.model.name!r} does not fit dataset {self.dataset!r}, a {task} "
                f"set; models for {task}: {', '.join(TASK_MODELS[task])}"
            )
        allowed = ("val_loss", f"val_{TASK_METRIC[task]}")
        if self.monitor not in allowed:
            raise ValueError(
                f"monitor {self.monitor!r} is not a {task} metric; use one of {', '.join(allowed)}"
            )
        return self

    @property
    def task(self) -> str:
        return CATALOG[self.dataset].task

    @property
    def is_keras(self) -> bool:
        return self.model.name != "sgd_logistic"

    def effective_keys(self) -> tuple[str, ...]:
        """The keys that take effect for this experiment, in the schema's order: `dataset` and
        `model` always; the training keys for a Keras model (the scikit-learn baseline trains
        by `model.max_iter`); `threshold` for a multi-label set only."""
        keys = ["dataset", "model"]
        if self.is_keras:
            keys += TRAINING_KEYS
            if self.task == "multilabel":
                keys.append("threshold")
        return tuple(keys)

    def effective_settings(self) -> dict[str, Any]:
        """Every key of `effective_keys` with its value, defaults filled in, the model's settings
        included: what `params.yaml` writes out, so that `dvc exp run -S` can set any of them."""
        settings = self.model_dump(mode="json")
        return {key: settings[key] for key in self.effective_keys()}
