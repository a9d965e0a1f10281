"""The building blocks every section of the schema shares: the strict base model, the constrained
value types, and the dataset-name check."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.data.catalog import CATALOG

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
DropoutRate = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
Activation = Literal["relu", "sigmoid", "tanh", "elu", "gelu", "selu", "swish"]
InputScaling = Literal["rescale", "standardize"]
EXPERIMENT_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
ExperimentName = Annotated[str, Field(pattern=EXPERIMENT_NAME_PATTERN)]


class StrictModel(BaseModel):
    """Refuses unknown keys and silent type coercion ("10" is not an int)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def check_dataset_name(name: str) -> str:
    """`name` if the catalog knows it; else a `ValueError` listing the datasets it knows."""
    if name not in CATALOG:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(CATALOG))}")
    return name
