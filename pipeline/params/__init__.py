"""The schema of `params.yaml`: one typed object, parsed once, unknown keys refused.

Every stage reads its settings from `Params`; outside this package nothing opens `params.yaml`.
A mistake is reported as a `ParamsError` whose lines name the key path
(`experiments.fashion_mlp.epochs`), the value found and what is allowed.

Modules by topic: `common` (strict base model, value types), `sections` (base, data, split,
runtime), `experiments` (models and experiments), `crossval`, `registry`, `schema` (`Params` and
its cross-section checks) and `loading` (reading the file, error messages). The built-in
experiment sets, `sets.yaml`, are read by `sets` and written into `params.yaml` by `switch`
(`atelier sets enable|disable`), through the line edits of `yamltext`; the stages never read them.
"""

from __future__ import annotations

from pipeline.params.common import (
    EXPERIMENT_NAME_PATTERN,
    Activation,
    DropoutRate,
    ExperimentName,
    Fraction,
    InputScaling,
    PositiveInt,
    StrictModel,
)
from pipeline.params.crossval import CrossvalParams
from pipeline.params.experiments import (
    MODEL_NAMES,
    TASK_METRIC,
    TASK_MODELS,
    CNNParams,
    DenseStack,
    Experiment,
    MLPParams,
    ModelParams,
    MultilabelMLPParams,
    RegressorParams,
    SGDLogisticParams,
    SoftmaxRegressionParams,
)
from pipeline.params.loading import load_params, parse_params
from pipeline.params.registry import (
    ARTIFACT_NAME_PATTERN,
    RegistryParams,
    RegistryStage,
    TaskRegistryParams,
)
from pipeline.params.schema import Params
from pipeline.params.sections import (
    BaseParams,
    DataParams,
    DiffParams,
    RuntimeParams,
    SplitParams,
    Tolerance,
)

__all__ = [
    "DiffParams",
    "Tolerance",
    "ARTIFACT_NAME_PATTERN",
    "EXPERIMENT_NAME_PATTERN",
    "MODEL_NAMES",
    "TASK_METRIC",
    "TASK_MODELS",
    "Activation",
    "BaseParams",
    "CNNParams",
    "CrossvalParams",
    "DataParams",
    "DenseStack",
    "DropoutRate",
    "Experiment",
    "ExperimentName",
    "Fraction",
    "InputScaling",
    "MLPParams",
    "ModelParams",
    "MultilabelMLPParams",
    "Params",
    "PositiveInt",
    "RegistryParams",
    "RegistryStage",
    "RegressorParams",
    "RuntimeParams",
    "SGDLogisticParams",
    "SoftmaxRegressionParams",
    "SplitParams",
    "StrictModel",
    "TaskRegistryParams",
    "load_params",
    "parse_params",
]
