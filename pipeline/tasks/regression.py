"""Regression: test metrics and figures of one model, and the K-fold aggregate (`crossval@<exp>`).

Metrics (`metrics/<experiment>.json`, flat keys like the classifiers'): `test_mae`, `test_mse`,
`test_rmse`, `test_r2`, `test_loss` (the MSE the model was trained on), the best epoch's
`val_mae`/`val_loss`, and the run's facts. Plot data (`plots/<experiment>/`):
`predictions.csv` (`actual,predicted,residual`, one row per test row, the input of DVC's
`scatter` template), `scatter.png` (predicted against actual, with the identity line) and
`residuals.png` (residual against predicted).

K-fold: `crossval@<experiment>` reads the fold models (`models/folds/<experiment>-fold<k>/`) and
writes `metrics/crossval/<experiment>.json`: each fold's validation and test MAE
(`fold<k>_val_mae`, `fold<k>_test_mae`), their mean and standard deviation, and the test MAE of
the folds' averaged prediction (seed 004 reports the mean of the fold scores; averaging the
predictions is the ensemble the folds give for free).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.errors import AtelierError
from pipeline.core.io import atomic_dir, atomic_write_bytes, atomic_write_json, read_json

log = logging.getLogger(__name__)

DIGITS = 6


def load_regression_test_set(dataset: str, root: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from pipeline.stages.evaluate import prepared_test_set

    prepared, meta = prepared_test_set(dataset, root)
    x = np.load(prepared / "x_test.npy").astype(np.float32)
    y = np.load(prepared / "y_test.npy").astype(np.float64)
    return x, y, meta


def predict(model_dir: Path, x: np.ndarray) -> np.ndarray:
    from pipeline.stages.evaluate import PREDICT_BATCH, load_keras_model

    model = load_keras_model(model_dir / "best.keras")
    return np.asarray(model.predict(x, batch_size=PREDICT_BATCH, verbose=0), np.float64).reshape(-1)


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
    return {key: round(float(value), DIGITS) for key, value in metrics.items()}


def evaluate_regression(experiment, name: str, train: dict, model_dir: Path, root: Path) -> dict:
    """The regression branch of the evaluate stage; returns the metrics it wrote."""
    from pipeline.stages.evaluate import run_facts

    x, y, meta = load_regression_test_set(experiment.dataset, root)
    y_pred = predict(model_dir, x)
    metrics = regression_metrics(y, y_pred)
    metrics |= {
        "val_mae": round(float(train["val_mae"]), DIGITS),
        "val_loss": round(float(train["val_loss"]), DIGITS),
        **run_facts(experiment, train),
    }
    with atomic_dir(root / paths.PLOTS_DIR / name) as staging:
        write_regression_plots(
            staging, y, y_pred, title=name, target=meta.get("target_name") or "target"
        )
        history = model_dir / "history.csv"
        atomic_write_bytes(staging / "history.csv", history.read_bytes())
    atomic_write_json(root / paths.METRICS_DIR / f"{name}.json", metrics)
    log.info(
        "%s: test MAE %.4f, RMSE %.4f, R² %.4f on %d rows",
        name,
        metrics["test_mae"],
        metrics["test_rmse"],
        metrics["test_r2"],
        len(y),
    )
    return metrics


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


def plot_predicted_vs_actual(
    y_true: np.ndarray, y_pred: np.ndarray, path: Path, *, title: str, target: str
) -> None:
    from pipeline.stages.evaluate import new_figure, save_figure

    figure = new_figure(5.2, 5.0)
    axes = figure.add_subplot()
    axes.scatter(y_true, y_pred, s=14, alpha=0.7, edgecolors="none")
    low = float(min(y_true.min(), y_pred.min()))
    high = float(max(y_true.max(), y_pred.max()))
    axes.plot([low, high], [low, high], color="grey", linewidth=1, label="predicted = actual")
    axes.set_xlabel(f"actual {target}")
    axes.set_ylabel(f"predicted {target}")
    mae = float(np.mean(np.abs(y_true - y_pred)))
    axes.set_title(f"{title}: predicted vs actual\nMAE {mae:.3g} on {len(y_true)} test rows")
    axes.legend(loc="upper left")
    save_figure(figure, path)


def plot_residuals(
    y_true: np.ndarray, y_pred: np.ndarray, path: Path, *, title: str, target: str
) -> None:
    from pipeline.stages.evaluate import new_figure, save_figure

    figure = new_figure(5.6, 4.0)
    axes = figure.add_subplot()
    axes.scatter(y_pred, y_true - y_pred, s=14, alpha=0.7, edgecolors="none")
    axes.axhline(0.0, color="grey", linewidth=1)
    axes.set_xlabel(f"predicted {target}")
    axes.set_ylabel("residual (actual − predicted)")
    axes.set_title(f"{title}: residuals")
    save_figure(figure, path)


# --- K-fold aggregate ---------------------------------------------------------------------------


def crossval_experiment(params, name: str, *, root: Path = Path(".")) -> dict:
    """Aggregate the fold models of experiment `name`; write `metrics/crossval/<name>.json`."""
    from pipeline.stages.train import run_name

    experiment = params.experiment(name)
    if name not in params.crossval.experiments:
        raise AtelierError(
            f"Experiment {name!r} is not in params.yaml crossval.experiments "
            f"({', '.join(params.crossval.experiments) or 'none'}): add it there to train and "
            "aggregate its folds."
        )
    if experiment.task != "regression":
        raise AtelierError(
            f"crossval aggregates regression experiments; {name!r} is a {experiment.task} one."
        )
    x, y, _ = load_regression_test_set(experiment.dataset, root)
    folds, predictions = [], []
    for fold in params.crossval.folds:
        model_dir = paths.fold_model_dir(run_name(name, fold), root)
        train_json = model_dir / "train.json"
        if not train_json.is_file():
            raise AtelierError(
                f"{train_json} not found: fold {fold} of {name!r} has not been trained. Run "
                f"`dvc repro train_fold@{name}-{fold}` (or `dvc repro crossval@{name}`)."
            )
        train = read_json(train_json)
        y_pred = predict(model_dir, x)
        predictions.append(y_pred)
        folds.append(
            {
                "fold": fold,
                "n_train": int(train["n_train"]),
                "best_epoch": int(train["best_epoch"]),
                "val_mae": round(float(train["val_mae"]), DIGITS),
                "test_mae": regression_metrics(y, y_pred)["test_mae"],
            }
        )
    val_maes = np.array([fold["val_mae"] for fold in folds])
    test_maes = np.array([fold["test_mae"] for fold in folds])
    ensemble = regression_metrics(y, np.mean(predictions, axis=0))
    metrics = {
        "folds": len(folds),
        "val_mae_mean": round(float(val_maes.mean()), DIGITS),
        "val_mae_std": round(float(val_maes.std()), DIGITS),
        "test_mae_mean": round(float(test_maes.mean()), DIGITS),
        "test_mae_std": round(float(test_maes.std()), DIGITS),
        "ensemble_test_mae": ensemble["test_mae"],
        "ensemble_test_rmse": ensemble["test_rmse"],
        "ensemble_test_r2": ensemble["test_r2"],
        "dataset": experiment.dataset,
    }
    for fold in folds:  # flat keys: `dvc metrics show/diff` compares them across revisions
        for key in ("val_mae", "test_mae", "best_epoch", "n_train"):
            metrics[f"fold{fold['fold']}_{key}"] = fold[key]
    atomic_write_json(root / paths.METRICS_DIR / "crossval" / f"{name}.json", metrics)
    log.info(
        "%s: %d folds, validation MAE %.4f ± %.4f, test MAE %.4f ± %.4f, averaged prediction %.4f",
        name,
        len(folds),
        metrics["val_mae_mean"],
        metrics["val_mae_std"],
        metrics["test_mae_mean"],
        metrics["test_mae_std"],
        metrics["ensemble_test_mae"],
    )
    return metrics
