"""The sections of `params.yaml` that hold plain settings: `base`, `data`, `split`, `runtime`,
`diff`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from pipeline.params.common import Fraction, StrictModel, check_dataset_name


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
            check_dataset_name(name)
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
    checkpoint_every: Annotated[int, Field(ge=0, le=10_000)] = Field(
        0,
        description="Push a Keras run's resume state to the DVC remote every N epochs, so that "
        "a run retried on another machine resumes from it; 0 keeps it on this machine only "
        "(pipeline/modeling/resume_store.py).",
    )
    backend: Literal["tensorflow", "jax"] = Field(
        "tensorflow",
        description="The Keras backend of experiments whose own `backend` is empty "
        "(pipeline/modeling/backend.py).",
    )


NonNegative = Annotated[float, Field(ge=0)]


class Tolerance(StrictModel):
    """How far a metric may move between two runs of the same code (another machine, another
    CPU instruction set) and still count as unchanged: `abs`, or `rel` times the old value,
    whichever is larger."""

    abs: NonNegative = 0.0
    rel: NonNegative = 0.0

    def allows(self, old: float, new: float) -> bool:
        return abs(new - old) <= max(self.abs, self.rel * abs(old)) + 1e-12

    def describe(self) -> str:
        parts = [f"±{self.abs:g}" if self.abs else "", f"±{self.rel:.0%}" if self.rel else ""]
        return " or ".join(part for part in parts if part) or "0"


class DiffParams(StrictModel):
    """`python -m pipeline diff`: per metric, the change that is noise, not a change."""

    tolerance: dict[str, Tolerance] = Field(default_factory=dict)
