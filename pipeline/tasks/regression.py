"""Regression: test metrics and figures of one model, and the K-fold aggregate (`crossval@<exp>`).

Figures (`plots/<experiment>/evaluation.json`, flat keys like the classifiers'; its summary
`test_mae`, `test_rmse`, `test_r2` in `metrics/<experiment>.json`): `test_mae`, `test_mse`,
`test_rmse`, `test_r2`, `test_loss` (the MSE the model was trained on), the best epoch's
`val_mae`/`val_loss`, and the run's facts. Plot data (`plots/<experiment>/`):
`predictions.csv` (`actual,predicted,residual`, one row per test row, the input of DVC's
`scatter` template), `scatter.png` (predicted against actual, with the identity line) and
`residuals.png` (residual against predicted).

K-fold: `crossval@<experiment>` reads the fold models (`models/folds/<experiment>-fold<k>/`) and
writes `metrics/crossval/<experiment>.json`: each fold's validation and test MAE
(`per_fold`, a list, which DVC's tables leave out), their mean and standard deviation, and the
test MAE of the folds' averaged prediction (seed 004 reports the mean of the fold scores;
averaging the predictions is the ensemble the folds give for free).
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.errors import AtelierError
from pipeline.core.io import atomic_write_bytes, read_json
from pipeline.core.metrics import ROUND_DIGITS
from pipeline.figures.regression import plot_predicted_vs_actual, plot_residuals
from pipeline.params import Params
from pipeline.tasks.common import prepared_test_set
from pipeline.tasks.results import (
    SEED_REFERENCE,
    ExperimentResult,
    curves_section,
    parent_link,
    seconds,
)

log = logging.getLogger(__name__)


def load_regression_test_set(dataset: str, root: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    prepared, meta = prepared_test_set(dataset, root)
    x = np.load(prepared / "x_test.npy").astype(np.float32)
    y = np.load(prepared / "y_test.npy").astype(np.float64)
    return x, y, meta


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MAE, MSE, RMSE and R² of `y_pred` against `y_true`, rounded for stable diffs."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    if len(y_true) != len(y_pred):
        raise AtelierError(f"{len(y_pred)} predictions for {len(y_true)} test rows.")
    mse = mean_squared_error(y_true, y_pred)
    metrics = {
        "test_mae": mean_absolute_error(y_true, y_pred),
        "test_mse": mse,
        "test_rmse": float(np.sqrt(mse)),
        "test_r2": r2_score(y_true, y_pred),
        "test_loss": mse,
    }
    return {key: round(float(value), ROUND_DIGITS) for key, value in metrics.items()}


def write_regression_plots(
    out_dir: Path, y_true: np.ndarray, y_pred: np.ndarray, *, title: str, target: str
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["actual", "predicted", "residual"])
    for actual, predicted in zip(y_true, y_pred, strict=True):
        writer.writerow([f"{actual:.6g}", f"{predicted:.6g}", f"{actual - predicted:.6g}"])
    atomic_write_bytes(out_dir / "predictions.csv", buffer.getvalue().encode())
    plot_predicted_vs_actual(y_true, y_pred, out_dir / "scatter.png", title=title, target=target)
    plot_residuals(y_true, y_pred, out_dir / "residuals.png", title=title, target=target)


# --- the report's regression tables and sections ----------------------------------------------


def regression_table(results: list[ExperimentResult]) -> list[str]:
    rows = [
        "| # | experiment | dataset | model | parameters | epochs (best) | test MAE | test RMSE "
        "| test R² | validation MAE | training time |",
        "|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for rank, result in enumerate(results, start=1):
        m = result.metrics
        name = f"**{result.name}**" if rank == 1 else result.name
        rows.append(
            f"| {rank} | {name} | {m['dataset']} | {m['model']} | {int(m['params_count']):,} "
            f"| {m['epochs_run']} ({m['best_epoch']}) | {m['test_mae']:.4f} | {m['test_rmse']:.4f} "
            f"| {m['test_r2']:.4f} | {m['val_mae']:.4f} | {seconds(m['train_time_s'])} |"
        )
    references = sorted({r.metrics["dataset"] for r in results} & set(SEED_REFERENCE))
    if references:
        rows += ["", *(f"Reference for {ds}: {SEED_REFERENCE[ds]}." for ds in references)]
    return rows


def crossval_section(params: Params, results: list[ExperimentResult], root: Path) -> list[str]:
    """K-fold figures of the cross-validated experiments (`crossval@<experiment>`)."""
    rows = []
    for result in results:
        path = root / paths.METRICS_DIR / "crossval" / f"{result.name}.json"
        if result.name not in params.crossval.experiments or not path.is_file():
            continue
        cv = read_json(path)
        folds = ", ".join(f"{fold['test_mae']:.3f}" for fold in cv.get("per_fold", []))
        rows.append(
            f"| {result.name} | {cv['folds']} | {cv['val_mae_mean']:.4f} ± {cv['val_mae_std']:.4f} "
            f"| {cv['test_mae_mean']:.4f} ± {cv['test_mae_std']:.4f} | {folds} "
            f"| {cv['ensemble_test_mae']:.4f} | {result.metrics['test_mae']:.4f} |"
        )
    if not rows:
        return []
    return [
        "### K-fold cross-validation",
        "",
        "Each fold model is trained on the other folds of the training set and validated on its "
        "own; all are scored on the same test set.",
        "",
        "| experiment | folds | validation MAE (mean ± std) | test MAE (mean ± std) "
        "| test MAE per fold | test MAE of the averaged prediction | test MAE, one model |",
        "|---|--:|--:|--:|---|--:|--:|",
        *rows,
        "",
    ]


def regression_section(result: ExperimentResult, staging: Path) -> list[str]:
    metrics, name = result.metrics, result.name
    lines = [
        f"### {name}",
        "",
        f"Model `{metrics['model']}` on `{metrics['dataset']}`: test MAE "
        f"**{metrics['test_mae']:.4f}**, RMSE {metrics['test_rmse']:.4f}, R² "
        f"{metrics['test_r2']:.4f}; validation MAE {metrics['val_mae']:.4f}; "
        f"{int(metrics['params_count']):,} parameters, trained in "
        f"{seconds(metrics['train_time_s'])} on {metrics['device']}.",
        "",
    ]
    lines += curves_section(result, staging, metric="mae")
    predictions = result.plots_dir / "predictions.csv"
    if predictions.is_file():
        shutil.copyfile(predictions, parent_link(staging / "predictions" / f"{name}.csv"))
    for figure, caption in (("scatter", "predicted vs actual"), ("residuals", "residuals")):
        source = result.plots_dir / f"{figure}.png"
        if source.is_file():
            shutil.copyfile(source, staging / f"{name}_{figure}.png")
            lines += [f"![{name} {caption}]({name}_{figure}.png)", ""]
    return lines
