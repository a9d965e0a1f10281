"""Metric names: which way each one is better, and how many digits are kept.

One rule, used by early stopping and the best checkpoint (`mode`), the report's leaderboard and
the flows' (`sort_key`), the metric diff (`direction`) and the registry's rules (`lower_is_better`):

- *lower is better* for losses, errors and spreads: a name that contains `loss`, has `error`,
  `mae`, `mse` or `rmse` as a word (`test_mae`, `test_mae_mean`), ends in `error` or `_std`,
  and the training time;
- *neutral* (no direction; a diff shows the change without judging it) for counts and settings:
  parameter count, epochs, the best epoch, the multi-label threshold, the number of folds, a
  fold's row count;
- *higher is better* for everything else (accuracy, F1, precision, recall, R², CV mean).
"""

from __future__ import annotations

from typing import Literal

Direction = Literal["higher", "lower", "neutral"]

# Metrics files are rounded so that re-runs and diffs are not noisy in the last bits.
ROUND_DIGITS = 6

LOWER_WORDS = {"error", "mae", "mse", "rmse"}  # anywhere in the name: `test_mae_mean` too
LOWER_SUFFIXES = ("error", "_std")
LOWER_NAMES = ("train_time_s",)
NEUTRAL_NAMES = ("params_count", "epochs_run", "best_epoch", "threshold", "folds", "n_train")
NEUTRAL_SUFFIXES = ("_best_epoch", "_n_train", "_epochs_run")


def direction(name: str) -> Direction:
    """Which way `name` is better: `higher`, `lower`, or `neutral` for counts and settings."""
    key = name.lower()
    if key in NEUTRAL_NAMES or key.endswith(NEUTRAL_SUFFIXES):
        return "neutral"
    words = set(key.split("_"))
    if "loss" in key or words & LOWER_WORDS or key.endswith(LOWER_SUFFIXES) or key in LOWER_NAMES:
        return "lower"
    return "higher"


def lower_is_better(name: str) -> bool:
    return direction(name) == "lower"


def mode(name: str) -> Literal["min", "max"]:
    """Keras' `mode` for monitoring `name` (`val_loss` → min, `val_accuracy` → max)."""
    return "min" if lower_is_better(name) else "max"


def is_better(name: str, new: float, old: float, *, by: float = 0.0) -> bool:
    """Whether `new` beats `old` on `name` by more than `by`; never for a neutral name."""
    kind = direction(name)
    if kind == "neutral":
        return False
    return (old - new if kind == "lower" else new - old) > by


def sort_key(name: str, value: float | None) -> float:
    """Ascending sort key that puts the best value of `name` first and a missing one last."""
    if value is None:
        return float("inf")
    return float(value) if lower_is_better(name) else -float(value)
