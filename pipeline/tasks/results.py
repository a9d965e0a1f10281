"""The results the report reads back: one per experiment, its evaluation record and plot data."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import paths
from pipeline.core.errors import AtelierError
from pipeline.core.io import read_json
from pipeline.figures.curves import plot_curves
from pipeline.params import Params
from pipeline.tasks.kinds import rank

BASELINE_MODEL = "sgd_logistic"


@dataclass(frozen=True)
class ExperimentResult:
    name: str
    metrics: dict
    plots_dir: Path

    @property
    def is_baseline(self) -> bool:
        return self.metrics.get("model") == BASELINE_MODEL

    @property
    def accuracy(self) -> float:
        return float(self.metrics["test_accuracy"])

    @property
    def task(self) -> str:
        return str(self.metrics.get("task", "classification"))

    def sort_key(self) -> tuple:
        return rank(self.task, self.metrics, self.name)


# Figures the seed tutorials report, shown beside the pipeline's own.
SEED_REFERENCE = {
    "boston_housing": "seed 004: test MAE 2.26 with one model, 2.05 as the mean of 3 folds",
    "mnist": "seed 004: accuracy ≈ 0.97 (Dense 64-32)",
}


def load_results(params: Params, root: Path) -> list[ExperimentResult]:
    """Every experiment of `params` with its evaluation record, best test accuracy first."""
    results, missing = [], []
    for name in params.experiments:
        evaluation = paths.evaluation_file(name, root)
        if not evaluation.is_file():
            missing.append(name)
            continue
        results.append(ExperimentResult(name, read_json(evaluation), evaluation.parent))
    if missing:
        raise AtelierError(
            f"No evaluation for experiment(s) {', '.join(missing)} "
            f"({paths.PLOTS_DIR}/<name>/{paths.EVALUATION_FILE} missing): run `dvc repro` (or "
            "`python -m pipeline evaluate <name>`) first."
        )
    if not results:
        raise AtelierError("params.yaml defines no experiments: there is nothing to report.")
    return sorted(results, key=ExperimentResult.sort_key)


def baselines_by_dataset(results: list[ExperimentResult]) -> dict[str, ExperimentResult]:
    """The best-scoring baseline of each dataset (results are sorted, so the first one seen)."""
    chosen: dict[str, ExperimentResult] = {}
    for result in results:
        if result.is_baseline:
            chosen.setdefault(result.metrics["dataset"], result)
    return chosen


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def seconds(value: float) -> str:
    value = float(value)
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def parent_link(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def curves_section(result: ExperimentResult, staging: Path, *, metric: str) -> list[str]:
    name, metrics = result.name, result.metrics
    history = read_history(result.plots_dir / "history.csv")
    if not history:
        return []
    figure_name = f"{name}_curves.png"
    plot_curves(
        history,
        staging / figure_name,
        title=name,
        best_epoch=int(metrics["best_epoch"]),
        metric=metric,
    )
    return [
        "#### Training curves",
        "",
        overfitting_note(history, metrics, metric),
        "",
        f"![{name} training curves]({figure_name})",
        "",
    ]


def overfitting_note(history: list[dict], metrics: dict, metric: str = "accuracy") -> str:
    """One sentence on the train/validation gap and whether validation loss rose after the best."""
    last = history[-1]
    best = int(metrics["best_epoch"])
    after = [float(row["val_loss"]) for row in history if int(row["epoch"]) > best]
    best_loss = float(history[best - 1]["val_loss"]) if 0 < best <= len(history) else None
    train, val = float(last[metric]), float(last["val_" + metric])
    if metric.endswith("accuracy"):
        gap = f"gap {(train - val) * 100:+.2f} pp"
    else:
        gap = f"gap {val - train:+.4g}"
    label = {"mae": "MAE", "binary_accuracy": "binary accuracy"}.get(metric, metric)
    text = (
        f"Best epoch {best} of {len(history)} (the checkpoint kept). At the last epoch train "
        f"{label} is {train:.4f} and validation {label} {val:.4f} ({gap})."
    )
    if after and best_loss is not None and max(after) > best_loss:
        text += (
            f" Validation loss rose after epoch {best} (to {after[-1]:.4f}) while training went "
            "on: the network started to over-fit, and early stopping / the best checkpoint "
            "kept the earlier weights."
        )
    return text
