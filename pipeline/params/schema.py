"""`Params`, the whole of `params.yaml`, and the checks that span its sections."""

from __future__ import annotations

from pydantic import Field, model_validator

from pipeline.core.errors import ParamsError
from pipeline.params.common import ExperimentName, StrictModel
from pipeline.params.crossval import (
    CrossvalParams,
    check_dataset,
    check_experiments,
    check_folds,
)
from pipeline.params.experiments import Experiment
from pipeline.params.registry import RegistryParams
from pipeline.params.sections import (
    BaseParams,
    DataParams,
    DiffParams,
    RuntimeParams,
    SplitParams,
)


class Params(StrictModel):
    base: BaseParams = BaseParams()
    data: DataParams
    split: SplitParams = SplitParams()
    runtime: RuntimeParams = RuntimeParams()
    # The enabled experiments, each written out once: every stage iterates them. The built-in
    # sets they come from are pipeline/params/sets.yaml (`atelier sets`), not part of this file.
    experiments: dict[ExperimentName, Experiment] = Field(default_factory=dict)
    crossval: CrossvalParams = CrossvalParams()
    registry: RegistryParams = RegistryParams()
    diff: DiffParams = DiffParams()

    @model_validator(mode="after")
    def _crossval_matches_split(self) -> Params:
        if self.crossval.experiments:
            check_folds(self.crossval, self.split)
            check_experiments(self.crossval, self.experiments)
            check_dataset(self.crossval, self.experiments)
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
