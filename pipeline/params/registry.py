"""The `registry` section: which checkpoint is a dataset's champion, and the promotion rules.

Which way a metric is better is not decided here: `pipeline.core.metrics` holds the one rule that
early stopping, checkpoints, report, diff, flows and the registry share.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from pipeline.core import metrics
from pipeline.data.catalog import CATALOG
from pipeline.params.common import StrictModel, check_dataset_name

# GTO's and DVC's rule for artifact names (lower case, digits, dashes).
ARTIFACT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
RegistryStage = Literal["staging", "prod"]


class TaskRegistryParams(StrictModel):
    """The registry rules of regression or multi-label datasets (no baseline to beat)."""

    metric: Annotated[str, Field(min_length=1)]
    stages: dict[RegistryStage, dict[str, float]] = Field(default_factory=dict)


class RegistryParams(StrictModel):
    """Which checkpoint is a dataset's champion, and what a version must show to be promoted.

    A metric's direction is `pipeline.core.metrics.direction`'s: lower is better for losses,
    errors and spreads (`test_mae`, `val_loss`, `test_mae_std`), higher for everything else.
    Thresholds under `stages` are minimums (maximums for lower-is-better metrics).
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
            check_dataset_name(dataset)
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
        """Whether `metric` (default: this rule set's `metric`) is better when lower."""
        return metrics.lower_is_better(metric or self.metric)
