"""The `registry` section: which checkpoint is a dataset's champion, and the promotion rules.

Which way a metric is better is not decided here: `pipeline.core.metrics` holds the one rule that
early stopping, checkpoints, report, diff, flows and the registry share.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator

from pipeline.core import metrics
from pipeline.data.catalog import CATALOG
from pipeline.params.common import StrictModel, check_dataset_name

# GTO's and DVC's rule for artifact names (lower case, digits, dashes).
ARTIFACT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
RegistryStage = Literal["staging", "prod"]
# The order `release` climbs the stages in; `stage_order` may not contradict it.
STAGE_NAMES: tuple[str, ...] = get_args(RegistryStage)


class TaskRegistryParams(StrictModel):
    """The registry rules of regression or multi-label datasets (no baseline to beat)."""

    metric: Annotated[str, Field(min_length=1)]
    stages: dict[RegistryStage, dict[str, float]] = Field(default_factory=dict)


class RegistryParams(StrictModel):
    """Which checkpoint is a dataset's champion, and what a version must show to be promoted.

    A metric's direction is `pipeline.core.metrics.direction`'s: lower is better for losses,
    errors and spreads (`test_mae`, `val_loss`, `test_mae_std`), higher for everything else.
    Thresholds under `stages` are minimums (maximums for lower-is-better metrics).
    `stage_order` applies to every dataset's artifact, whatever its task kind.
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
    stage_order: list[str] = Field(
        default_factory=list,
        description="Stages in promotion order: a version is given a stage only if it has held "
        "the one listed before it ([staging, prod]: prod only from staging). Empty: any order.",
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

    @field_validator("stage_order")
    @classmethod
    def _known_stages_in_release_order(cls, order: list[str]) -> list[str]:
        for stage in order:
            if stage not in STAGE_NAMES:
                close = difflib.get_close_matches(stage, STAGE_NAMES, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"unknown stage {stage!r}{hint}; stages are {', '.join(STAGE_NAMES)}"
                )
        if len(set(order)) != len(order):
            raise ValueError("lists a stage twice; list each stage once, in promotion order")
        if len(order) == 1:
            raise ValueError(
                "needs two stages or more (the first is entered freely, each next one only "
                "after the one before it); leave it out for no order"
            )
        if order != sorted(order, key=STAGE_NAMES.index):
            raise ValueError(
                f"must follow the order `release` climbs the stages: "
                f"{', '.join(s for s in STAGE_NAMES if s in order)}"
            )
        return order

    def required_before(self, stage: str) -> str | None:
        """The stage a version must have held before it is given `stage`, if `stage_order`
        names one (the stage listed just before `stage`)."""
        if stage not in self.stage_order:
            return None
        index = self.stage_order.index(stage)
        return self.stage_order[index - 1] if index > 0 else None

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
