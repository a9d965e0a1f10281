"""The schema of `params.yaml`: one typed object, parsed once, unknown keys refused.

Every stage reads its settings from `Params`; nothing else in `pipeline/` opens `params.yaml`.
A mistake is reported as a `ParamsError` whose lines name the key path
(`experiments.fashion_mlp.epochs`), the value found and what is allowed.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.data.catalog import CATALOG
from pipeline.core.errors import ParamsError

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
DropoutRate = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
Activation = Literal["relu", "sigmoid", "tanh", "elu", "gelu", "selu", "swish"]
InputScaling = Literal["rescale", "standardize"]
EXPERIMENT_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"


class StrictModel(BaseModel):
    """Refuses unknown keys and silent type coercion ("10" is not an int)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BaseParams(StrictModel):
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 42


class DataParams(StrictModel):
    datasets: Annotated[list[str], Field(min_length=1)]
    mirrors: list[str] = Field(
        default_factory=list,
        description="Extra local directories searched before the catalog's own sources.",
    )
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    test_fraction: Fraction = Field(
        0.2, description="Share held out as the test set for datasets that publish none."
    )

    @field_validator("datasets")
    @classmethod
    def _known_and_unique(cls, names: list[str]) -> list[str]:
        for name in names:
            _check_dataset_name(name)
        if len(set(names)) != len(names):
            raise ValueError(f"lists a dataset twice: {names}")
        return names


class SplitParams(StrictModel):
    val_fraction: Fraction = 0.2
    folds: Annotated[int, Field(ge=0, le=20)] = 0

    @field_validator("folds")
    @classmethod
    def _zero_or_at_least_two(cls, folds: int) -> int:
        if folds == 1:
            raise ValueError("must be 0 (no folds) or at least 2")
        return folds


class RuntimeParams(StrictModel):
    """How training runs, not what it learns: changing these never changes the experiment."""

    mixed_precision: Literal["auto", "on", "off"] = "auto"
    steps_per_execution: Annotated[int, Field(ge=1, le=1000)] = 32
    deterministic: bool = True


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
        RegressorParams,
        MultilabelMLPParams,
        SGDLogisticParams,
    ],
    Field(discriminator="name"),
]
MODEL_NAMES = ("softmax_regression", "mlp", "cnn", "regressor", "multilabel_mlp", "sgd_logistic")

# What each task can learn with, and the metric Keras tracks for it besides the loss.
TASK_MODELS = {
    "classification": ("softmax_regression", "mlp", "cnn", "sgd_logistic"),
    "regression": ("regressor",),
    "multilabel": ("multilabel_mlp", "cnn"),  # cnn with a sigmoid head
}
TASK_METRIC = {"classification": "accuracy", "regression": "mae", "multilabel": "binary_accuracy"}


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
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        0.5, description="Multi-label: a label is predicted when its probability exceeds this."
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        return _check_dataset_name(name)

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


# --- the model registry -------------------------------------------------------------------------

# GTO's and DVC's rule for artifact names (lower case, digits, dashes).
ARTIFACT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
RegistryStage = Literal["staging", "prod"]
# Metric names ending so are better when lower (losses and regression errors).
LOWER_IS_BETTER_SUFFIXES = ("loss", "error", "mae", "mse", "rmse")


class TaskRegistryParams(StrictModel):
    """The registry rules of regression or multi-label datasets (no baseline to beat)."""

    metric: Annotated[str, Field(min_length=1)]
    stages: dict[RegistryStage, dict[str, float]] = Field(default_factory=dict)


class RegistryParams(StrictModel):
    """Which checkpoint is a dataset's champion, and what a version must show to be promoted.

    A metric whose name ends in `loss`, `error`, `mae`, `mse` or `rmse` is better when lower; every
    other metric is better when higher. Thresholds under `stages` are minimums (maximums for
    loss-like metrics).
    """

    metric: Annotated[str, Field(min_length=1)] = Field(
        "test_accuracy", description="Key of metrics/<experiment>.json that ranks experiments."
    )
    min_improvement: Annotated[float, Field(ge=0)] = Field(
        0.0, description="How much a version must beat the current holder of a stage by."
    )
    require_beat_baseline: bool = Field(
        True, description="A version must beat the best sgd_logistic experiment on its dataset."
    )
    stages: dict[RegistryStage, dict[str, float]] = Field(
        default_factory=dict, description="Per stage: {metric: threshold}."
    )
    artifacts: dict[str, Annotated[str, Field(pattern=ARTIFACT_NAME_PATTERN)]] = Field(
        default_factory=dict,
        description="Registry name of each dataset's champion; default <dataset>-classifier "
        "(<dataset>-regressor for regression sets).",
    )
    regression: TaskRegistryParams = TaskRegistryParams(metric="test_mae")
    multilabel: TaskRegistryParams = TaskRegistryParams(metric="micro_f1")

    @field_validator("artifacts")
    @classmethod
    def _known_datasets_unique_names(cls, artifacts: dict[str, str]) -> dict[str, str]:
        for dataset in artifacts:
            _check_dataset_name(dataset)
        names = list(artifacts.values())
        if len(set(names)) != len(names):
            raise ValueError(f"gives two datasets the same artifact name: {artifacts}")
        return artifacts

    def artifact_name(self, dataset: str) -> str:
        """The registry name of `dataset`'s champion (e.g. `fashion-mnist-classifier`)."""
        kind = "regressor" if CATALOG[dataset].task == "regression" else "classifier"
        return self.artifacts.get(dataset, f"{dataset.replace('_', '-')}-{kind}")

    def for_dataset(self, dataset: str) -> RegistryParams:
        """The rules that apply to `dataset`'s artifact: these, or `regression`'s /
        `multilabel`'s for such a set (their metric and stage thresholds; no baseline rule)."""
        task = CATALOG[dataset].task
        if task == "classification":
            return self
        rules = self.regression if task == "regression" else self.multilabel
        return self.model_copy(
            update={"metric": rules.metric, "stages": rules.stages, "require_beat_baseline": False}
        )

    def lower_is_better(self, metric: str | None = None) -> bool:
        name = (metric or self.metric).lower()
        return name.endswith(LOWER_IS_BETTER_SUFFIXES)


ExperimentName = Annotated[str, Field(pattern=EXPERIMENT_NAME_PATTERN)]


class CrossvalParams(StrictModel):
    """K-fold cross-validation: which experiments, and the fold ids DVC's `matrix` iterates.

    Each listed experiment is trained once per fold (`train_fold@<experiment>-<fold>`) on the
    other folds of the training set and validated on its own fold (`split.folds` folds).
    """

    experiments: list[ExperimentName] = Field(default_factory=list)
    folds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list, description="[0, 1, ..., split.folds - 1], spelled out for DVC."
    )


class Params(StrictModel):
    base: BaseParams = BaseParams()
    data: DataParams
    split: SplitParams = SplitParams()
    runtime: RuntimeParams = RuntimeParams()
    # Named groups of experiments; `experiments` merges the enabled ones with YAML's `<<`.
    experiment_sets: dict[
        Annotated[str, Field(pattern=EXPERIMENT_NAME_PATTERN)], dict[ExperimentName, Experiment]
    ] = Field(default_factory=dict)
    experiments: dict[ExperimentName, Experiment] = Field(default_factory=dict)
    crossval: CrossvalParams = CrossvalParams()
    registry: RegistryParams = RegistryParams()

    @model_validator(mode="after")
    def _crossval_matches_split(self) -> Params:
        if not self.crossval.experiments:
            return self
        if self.split.folds < 2:
            raise ValueError(
                f"crossval.experiments lists {self.crossval.experiments} but split.folds is "
                f"{self.split.folds}: set split.folds to 2 or more"
            )
        expected = list(range(self.split.folds))
        if self.crossval.folds != expected:
            raise ValueError(
                f"crossval.folds is {self.crossval.folds} but split.folds={self.split.folds} "
                f"needs {expected} (DVC's matrix iterates this list): set crossval.folds to it"
            )
        for name in self.crossval.experiments:
            experiment = self.experiments.get(name)
            if experiment is None:
                raise ValueError(
                    f"crossval.experiments names {name!r}, which is not under `experiments` "
                    f"({', '.join(sorted(self.experiments)) or 'none'})"
                )
            if not experiment.is_keras:
                raise ValueError(
                    f"crossval.experiments names {name!r}, a {experiment.model.name} model: "
                    "K-fold runs Keras experiments (the baseline records its own CV scores)"
                )
        return self

    @model_validator(mode="after")
    def _experiments_use_listed_datasets(self) -> Params:
        for name, experiment in self.experiments.items():
            if experiment.dataset not in self.data.datasets:
                raise ValueError(
                    f"experiments.{name}.dataset is {experiment.dataset!r}, which is not in "
                    f"data.datasets {self.data.datasets}: add it there so its download, "
                    "preprocess and split stages run"
                )
        return self

    def experiment(self, name: str) -> Experiment:
        try:
            return self.experiments[name]
        except KeyError:
            raise ParamsError(
                f"Unknown experiment {name!r}: params.yaml defines "
                f"{', '.join(sorted(self.experiments)) or 'none'}. Add it under `experiments:` "
                "or pick one of those."
            ) from None


def _check_dataset_name(name: str) -> str:
    if name not in CATALOG:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(CATALOG))}")
    return name


# --- loading and error messages -----------------------------------------------------------------


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate `path`; raise `ParamsError` naming every mistake found."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(
            f"{path} not found: run from the project root (where dvc.yaml is) or pass its path."
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    return parse_params(raw, source=str(path))


def parse_params(raw: Any, *, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source} must be a mapping with keys base, data, split, experiments.")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(error) for error in exc.errors()]
        raise ParamsError(
            f"{source} has {len(lines)} problem{'s' if len(lines) > 1 else ''}:\n"
            + "\n".join(f"  - {line}" for line in lines)
            + "\nFix the key(s) named above; see README.md, section 'Configuration'."
        ) from None


def _key_path(loc: tuple) -> str:
    parts: list[str] = []
    for part in loc:
        # Discriminated unions add the tag to the location: experiments.x.model.mlp.units.
        if parts and parts[-1] == "model" and part in MODEL_NAMES:
            continue
        if part == "[key]":
            continue
        parts.append(f"[{part}]" if isinstance(part, int) else str(part))
    return ".".join(parts).replace(".[", "[")


def _describe(error: dict) -> str:
    loc = tuple(error["loc"])
    key = _key_path(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = ""
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        where = _key_path(loc[:-1]) or "the top level"
        return f"{key}: unknown key{hint}; allowed keys under {where}: {', '.join(allowed)}"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "union_tag_invalid":
        return f"{key}.name = {error['input'].get('name')!r}: unknown model; known models: " + (
            ", ".join(MODEL_NAMES)
        )
    if kind == "union_tag_not_found":
        return f"{key}: needs a `name`; known models: {', '.join(MODEL_NAMES)}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if "[key]" in loc:
        return f"{key}: name {error['input']!r} {message.lower()} (letters, digits, underscores)"
    if not key:  # a check across sections: its message names the keys
        return message
    if isinstance(error["input"], dict):  # a check across a section's keys: name the section
        return f"{key}: {message}"
    return f"{key} = {error['input']!r}: {message}"


def _allowed_keys(loc: tuple) -> list[str]:
    """The field names of the model found at `loc`, walking the schema from `Params`."""
    annotation: Any = Params
    for part in loc:
        annotation = _unwrap(annotation, part)
        if annotation is None:
            return []
    annotation = _unwrap(annotation, None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any, part: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0], part)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(annotation):
            fields = getattr(option, "model_fields", {})
            tag = fields.get("name")
            if part in MODEL_NAMES and tag is not None and part in typing.get_args(tag.annotation):
                return option
        return _unwrap(typing.get_args(annotation)[0], part) if part is None else None
    if part is None:
        return annotation
    if origin is dict:
        return typing.get_args(annotation)[1]
    if origin is list:
        return typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part)
        return field.annotation if field is not None else None
    return None
