"""The `crossval` section, and the checks that tie it to `split` and `experiments`.

DVC's `matrix` cannot look up an experiment's dataset, so `crossval.dataset` names the one dataset
whose experiments are cross-validated: the `train_fold` and `crossval` stages depend on that
dataset's prepared and split data only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import Field, field_validator

from pipeline.params.common import ExperimentName, StrictModel, check_dataset_name
from pipeline.params.experiments import Experiment
from pipeline.params.sections import SplitParams


class CrossvalParams(StrictModel):
    """K-fold cross-validation: which experiments, and the fold ids DVC's `matrix` iterates.

    Each listed experiment is trained once per fold (`train_fold@<experiment>-<fold>`) on the
    other folds of the training set and validated on its own fold (`split.folds` folds).
    """

    dataset: str | None = Field(
        None,
        description="The dataset of every listed experiment; required when experiments are "
        "listed (DVC's matrix cannot look up an experiment's dataset).",
    )
    experiments: list[ExperimentName] = Field(default_factory=list)
    folds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list, description="[0, 1, ..., split.folds - 1], spelled out for DVC."
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str | None) -> str | None:
        return name if name is None else check_dataset_name(name)


def check_folds(crossval: CrossvalParams, split: SplitParams) -> None:
    """`split` writes the folds that `crossval.folds` lists, at least two of them."""
    if split.folds < 2:
        raise ValueError(
            f"crossval.experiments lists {crossval.experiments} but split.folds is "
            f"{split.folds}: set split.folds to 2 or more"
        )
    expected = list(range(split.folds))
    if crossval.folds != expected:
        raise ValueError(
            f"crossval.folds is {crossval.folds} but split.folds={split.folds} "
            f"needs {expected} (DVC's matrix iterates this list): set crossval.folds to it"
        )


def check_experiments(crossval: CrossvalParams, experiments: Mapping[str, Experiment]) -> None:
    """Every listed experiment exists and is a Keras model."""
    for name in crossval.experiments:
        experiment = experiments.get(name)
        if experiment is None:
            raise ValueError(
                f"crossval.experiments names {name!r}, which is not under `experiments` "
                f"({', '.join(sorted(experiments)) or 'none'})"
            )
        if not experiment.is_keras:
            raise ValueError(
                f"crossval.experiments names {name!r}, a {experiment.model.name} model: "
                "K-fold runs Keras experiments (the baseline records its own CV scores)"
            )


def check_dataset(crossval: CrossvalParams, experiments: Mapping[str, Experiment]) -> None:
    """`crossval.dataset` is set, and every listed experiment trains on it."""
    datasets = sorted({experiments[name].dataset for name in crossval.experiments})
    if crossval.dataset is None:
        fix = (
            f"set crossval.dataset to {datasets[0]!r}, their dataset"
            if len(datasets) == 1
            else f"list the experiments of one dataset only (they use {', '.join(datasets)}) "
            "and set crossval.dataset to it"
        )
        raise ValueError(
            f"crossval.experiments lists {crossval.experiments} but crossval.dataset is not "
            f"set: {fix} (the train_fold and crossval stages depend on that dataset's data)"
        )
    for name in crossval.experiments:
        dataset = experiments[name].dataset
        if dataset != crossval.dataset:
            raise ValueError(
                f"crossval.experiments names {name!r}, an experiment on dataset {dataset!r}, "
                f"but crossval.dataset is {crossval.dataset!r}: K-fold runs one dataset's "
                f"experiments; remove {name!r} from crossval.experiments, or set "
                f"crossval.dataset to {dataset!r} if every listed experiment uses it"
            )
