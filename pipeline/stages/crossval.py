"""Cross-validation stage (`crossval@<experiment>`): aggregate a regression experiment's folds.

Each fold model (`train_fold@<experiment>-<k>`) is scored on the test set; the stage writes
`metrics/crossval/<experiment>.json` with every fold's figures and their mean and spread."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.errors import AtelierError
from pipeline.core.io import atomic_write_json, read_json
from pipeline.core.metrics import ROUND_DIGITS
from pipeline.modeling.loading import predict_values
from pipeline.tasks.regression import load_regression_test_set, regression_metrics

log = logging.getLogger(__name__)


def crossval_experiment(params, name: str, *, root: Path = Path(".")) -> dict:
    """Aggregate the fold models of experiment `name`; write `metrics/crossval/<name>.json`."""
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
        model_dir = paths.fold_model_dir(paths.run_name(name, fold), root)
        train_json = model_dir / "train.json"
        if not train_json.is_file():
            raise AtelierError(
                f"{train_json} not found: fold {fold} of {name!r} has not been trained. Run "
                f"`dvc repro train_fold@{name}-{fold}` (or `dvc repro crossval@{name}`)."
            )
        train = read_json(train_json)
        y_pred = predict_values(model_dir, x)
        predictions.append(y_pred)
        folds.append(
            {
                "fold": fold,
                "n_train": int(train["n_train"]),
                "best_epoch": int(train["best_epoch"]),
                "val_mae": round(float(train["val_mae"]), ROUND_DIGITS),
                "test_mae": regression_metrics(y, y_pred)["test_mae"],
            }
        )
    val_maes = np.array([fold["val_mae"] for fold in folds])
    test_maes = np.array([fold["test_mae"] for fold in folds])
    ensemble = regression_metrics(y, np.mean(predictions, axis=0))
    metrics = {
        "folds": len(folds),
        "val_mae_mean": round(float(val_maes.mean()), ROUND_DIGITS),
        "val_mae_std": round(float(val_maes.std()), ROUND_DIGITS),
        "test_mae_mean": round(float(test_maes.mean()), ROUND_DIGITS),
        "test_mae_std": round(float(test_maes.std()), ROUND_DIGITS),
        "ensemble_test_mae": ensemble["test_mae"],
        "ensemble_test_rmse": ensemble["test_rmse"],
        "ensemble_test_r2": ensemble["test_r2"],
    }
    # Each fold's figures as a list, which `dvc exp show` and `dvc metrics show` leave out (one
    # column per fold and figure otherwise); the report's K-fold table shows them.
    metrics["per_fold"] = folds
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
