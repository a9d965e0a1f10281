"""What the metric diff judges: each experiment's headline metric, which change is noise (its
tolerance), which is a regression, and whether the two sides ran on the same hardware."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.metrics import direction
from pipeline.params import Tolerance, load_params

Tolerances = dict[str, Tolerance] | None  # metric → the change that is noise


@dataclass(frozen=True)
class ExperimentDiff:
    name: str
    old: dict | None  # None: no metrics at the base revision
    new: dict | None  # None: no metrics in the workspace


# The metric each kind of experiment is summarised by: classification, regression, multi-label,
# K-fold aggregate.
HEADLINES = ("test_accuracy", "test_mae", "micro_f1", "ensemble_test_mae")


def headline_metric(metrics: dict) -> str:
    """The first of `HEADLINES` that `metrics` holds (`test_accuracy` when none)."""
    return next((key for key in HEADLINES if key in metrics), HEADLINES[0])


def better(key: str, delta: float) -> bool | None:
    """Whether a change of `delta` in `key` is an improvement; None for neutral counts."""
    kind = direction(key)
    if kind == "neutral":
        return None
    return delta < 0 if kind == "lower" else delta > 0


def load_tolerances(root: Path) -> dict[str, Tolerance]:
    """`diff.tolerance` of the workspace's params.yaml (checked by the schema)."""
    return load_params(root / "params.yaml").diff.tolerance


def regressions(diffs: list[ExperimentDiff], tolerances: Tolerances = None) -> list[str]:
    """One line per experiment whose headline metric got worse beyond its tolerance."""
    found = []
    for diff in diffs:
        if not diff.old or not diff.new:
            continue
        key = headline_metric(diff.new)
        old, new = diff.old.get(key), diff.new.get(key)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new)):
            continue
        tolerance = (tolerances or {}).get(key) or Tolerance()
        if better(key, new - old) is False and not tolerance.allows(old, new):
            found.append(
                f"{diff.name}: {key} {old:.4f} → {new:.4f} ({new - old:+.4f}), worse beyond "
                f"its tolerance {tolerance.describe()}"
            )
    return found


def regression_lines(diffs: list[ExperimentDiff], tolerances: Tolerances) -> list[str]:
    found = regressions(diffs, tolerances)
    if not found:
        return []
    return ["", "🔴 **Worse beyond tolerance:**", "", *[f"- {line}" for line in found], ""]


def hardware_notes(diffs: list[ExperimentDiff]) -> list[str]:
    """Experiments whose two sides ran on different hardware: their figures differ by noise."""
    notes = []
    for diff in diffs:
        if not diff.old or not diff.new:
            continue
        sides = [(m.get("cpu_isa"), m.get("gpu")) for m in (diff.old, diff.new)]
        if None not in (sides[0][0], sides[1][0]) and sides[0] != sides[1]:
            old, new = (" + ".join(str(x) for x in side if x) for side in sides)
            notes.append(f"- `{diff.name}` ran on different hardware: {old} at the base, {new} now")
    if not notes:
        return []
    return [
        "",
        "⚠️ Different hardware on the two sides (TensorFlow picks its kernels by instruction set, "
        "so the figures differ by noise even at the same commit):",
        "",
        *notes,
        "",
    ]
