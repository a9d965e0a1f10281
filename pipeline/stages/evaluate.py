"""Evaluate stage (`evaluate@<experiment>`): score the best checkpoint on the held-out test set.

This is the only stage that opens `x_test.npy`/`y_test.npy`. Outputs (small, committed to git,
so that `dvc metrics diff` and `dvc plots diff` need no remote):

- `plots/<experiment>/evaluation.json` — the full record, flat keys, the same for every
  experiment: `test_accuracy`, `test_loss` (log loss of the predicted probabilities), macro and
  weighted precision/recall/F1, the best epoch's `val_accuracy` and `val_loss`, `best_epoch`,
  `epochs_run`, `train_time_s`, `params_count`, `device`, `cpu_isa`, `backend`, `model`,
  `dataset`, `task`; the SGD baseline adds `cv_mean` and `cv_std`.
- `metrics/<experiment>.json` — the task kind's summary of it (`pipeline.tasks.kinds`), the DVC
  metrics file: `test_accuracy`, `macro_f1`, `test_loss`. Every key of a metrics file is a
  column of `dvc exp show` per experiment, so run facts, secondary and per-class figures stay
  out of it.
- `plots/<experiment>/confusion.csv` — one `actual,predicted` row (class names) per test image,
  the input of DVC's `confusion` templates; `confusion.png`, the same matrix for people;
  `classification_report.json` and `.md` (scikit-learn's report: each class's precision, recall
  and F1); `history.csv` (a copy of the training curves; only its header for the baseline,
  which has no epochs) and
  `misclassified.npz` — the confusion counts and the most confident mistakes with their images,
  so the report stage needs neither TensorFlow nor the test set.

Regression experiments record `test_mae`, `test_mse`, `test_rmse`, `test_r2` and the plots
`predictions.csv`, `scatter.png`, `residuals.png`; multi-label ones `subset_accuracy`,
`hamming_loss`, micro/macro F1, and `per_label.csv` (each label's figures), `label_confusion.png`,
`predictions.png`. The scoring is the task's (`pipeline.tasks`), the loading and predicting
`pipeline.modeling.loading`'s.

Keras checkpoints are loaded with `safe_mode=True`: an archive holding a `Lambda` layer (arbitrary
Python code) is refused with an `AtelierError` that says so, as is a file that is not a Keras
archive at all.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.errors import AtelierError
from pipeline.core.io import atomic_dir, atomic_write_bytes, atomic_write_json, read_json
from pipeline.core.metrics import ROUND_DIGITS
from pipeline.data.labels import load_images_python
from pipeline.figures.multilabel import plot_label_confusions, plot_prediction_grid
from pipeline.modeling.backend import backend_of, use_backend
from pipeline.modeling.loading import (
    predict_image_files,
    predict_proba,
    predict_values,
    validation_log_loss,
)
from pipeline.params import Params
from pipeline.tasks.classification import compute_metrics, load_test_set, write_plot_data
from pipeline.tasks.common import prepared_test_set, run_facts, without_per_class
from pipeline.tasks.kinds import task_kind
from pipeline.tasks.multilabel import (
    multilabel_metrics,
    per_label_confusion,
    predicted_labels,
    write_per_label_csv,
)
from pipeline.tasks.regression import (
    load_regression_test_set,
    regression_metrics,
    write_regression_plots,
)

log = logging.getLogger(__name__)

GRID_IMAGES = 16  # test images with their predicted label sets in `predictions.png`
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")


def evaluate_experiment(params: Params, name: str, *, root: Path = Path(".")) -> dict:
    """Score experiment `name` on its test set; write metrics and plot data; return the metrics."""
    experiment = params.experiment(name)
    model_dir = paths.model_dir(name, root)
    train_json = model_dir / "train.json"
    if not train_json.is_file():
        raise AtelierError(
            f"{train_json} not found: experiment {name!r} has not been trained. Run "
            f"`dvc repro train@{name}` first."
        )
    train = read_json(train_json)
    if experiment.is_keras:  # before anything imports Keras; the backend that trained it
        use_backend(backend_of(experiment, params.runtime), deterministic=False)
    return EVALUATORS[experiment.task](experiment, name, train, model_dir, root)


def evaluate_classification(
    experiment, name: str, train: dict, model_dir: Path, root: Path
) -> dict:
    """Single-label classifiers (Keras or the SGD baseline): test figures, confusion, mistakes."""
    test = load_test_set(experiment.dataset, root)
    scores = predict_proba(model_dir, test.x, keras_model=experiment.is_keras)
    metrics = without_per_class(
        compute_metrics(test.y, scores.proba, test.class_names), test.class_names
    )

    val_loss = train.get("val_loss")
    if val_loss is None and scores.kind == "sgd_logistic":
        val_loss = validation_log_loss(experiment.dataset, root, model_dir)
    metrics |= {
        "val_accuracy": round(float(train["val_accuracy"]), ROUND_DIGITS),
        "val_loss": round(float(val_loss), ROUND_DIGITS),
        **run_facts(experiment, train),
    }
    if scores.kind == "sgd_logistic":
        metrics |= {
            "cv_mean": round(float(train["cv_mean"]), ROUND_DIGITS),
            "cv_std": round(float(train["cv_std"]), ROUND_DIGITS),
        }

    y_pred = scores.proba.argmax(axis=1)
    with atomic_dir(root / paths.PLOTS_DIR / name) as staging:
        write_plot_data(
            staging,
            title=name,
            x=test.x,
            y_true=test.y,
            y_pred=y_pred,
            proba=scores.proba,
            class_names=test.class_names,
        )
        atomic_write_json(staging / paths.EVALUATION_FILE, metrics)
        # Always written (only the header for the baseline, which has no epochs), so that
        # dvc.yaml can declare the same outputs for every experiment.
        if (model_dir / "history.csv").is_file():
            shutil.copyfile(model_dir / "history.csv", staging / "history.csv")
        else:
            atomic_write_bytes(staging / "history.csv", (",".join(HISTORY_COLUMNS) + "\n").encode())
    write_summary(root, name, experiment.task, metrics)
    log.info(
        "%s: test accuracy %.4f, test loss %.4f, macro F1 %.4f on %d images",
        name,
        metrics["test_accuracy"],
        metrics["test_loss"],
        metrics["macro_f1"],
        len(test.y),
    )
    return metrics


def evaluate_regression(experiment, name: str, train: dict, model_dir: Path, root: Path) -> dict:
    """The regression branch of the evaluate stage; returns the metrics it wrote."""
    x, y, meta = load_regression_test_set(experiment.dataset, root)
    y_pred = predict_values(model_dir, x)
    metrics = regression_metrics(y, y_pred)
    metrics |= {
        "val_mae": round(float(train["val_mae"]), ROUND_DIGITS),
        "val_loss": round(float(train["val_loss"]), ROUND_DIGITS),
        **run_facts(experiment, train),
    }
    with atomic_dir(root / paths.PLOTS_DIR / name) as staging:
        write_regression_plots(
            staging, y, y_pred, title=name, target=meta.get("target_name") or "target"
        )
        history = model_dir / "history.csv"
        atomic_write_bytes(staging / "history.csv", history.read_bytes())
        atomic_write_json(staging / paths.EVALUATION_FILE, metrics)
    write_summary(root, name, experiment.task, metrics)
    log.info(
        "%s: test MAE %.4f, RMSE %.4f, R² %.4f on %d rows",
        name,
        metrics["test_mae"],
        metrics["test_rmse"],
        metrics["test_r2"],
        len(y),
    )
    return metrics


def evaluate_multilabel(experiment, name: str, train: dict, model_dir: Path, root: Path) -> dict:
    """Multi-label sets: test images from arrays, or streamed from disk as in training where the
    dataset is image files; a label is predicted when its probability exceeds the experiment's
    `threshold`."""
    prepared, meta = prepared_test_set(experiment.dataset, root)
    names = tuple(meta["class_names"])
    size = int(meta["input_shape"][0])
    y_true = np.load(prepared / "y_test.npy")
    if meta["kind"] == "image_files":
        files = [str(prepared.absolute() / path) for path in np.load(prepared / "x_test.npy")]
        proba = predict_image_files(model_dir, files, y_true, image_size=size)
        shown = min(GRID_IMAGES, len(files))
        grid = load_images_python(files[:shown], size)
    else:
        x_test = np.load(prepared / "x_test.npy")
        proba = np.asarray(predict_proba(model_dir, x_test, keras_model=True).proba, np.float64)
        grid = x_test[:GRID_IMAGES]
    y_pred = predicted_labels(proba, experiment.threshold)

    scores = multilabel_metrics(y_true, proba, names, threshold=experiment.threshold)
    metrics = without_per_class(scores, names) | {
        "val_loss": round(float(train["val_loss"]), ROUND_DIGITS),
        "val_binary_accuracy": round(float(train["val_binary_accuracy"]), ROUND_DIGITS),
        "threshold": experiment.threshold,
        **run_facts(experiment, train),
    }
    confusions = per_label_confusion(y_true, y_pred, names)
    with atomic_dir(root / paths.PLOTS_DIR / name) as staging:
        write_per_label_csv(staging / "per_label.csv", names, scores, confusions)
        plot_label_confusions(confusions, staging / "label_confusion.png")
        plot_prediction_grid(
            grid,
            y_true[: len(grid)],
            y_pred[: len(grid)],
            names,
            staging / "predictions.png",
        )
        atomic_write_bytes(staging / "history.csv", (model_dir / "history.csv").read_bytes())
        atomic_write_json(staging / paths.EVALUATION_FILE, metrics)
    write_summary(root, name, experiment.task, metrics)
    log.info(
        "%s: micro F1 %.4f, macro F1 %.4f, subset accuracy %.4f, Hamming loss %.4f on %d images",
        name,
        metrics["micro_f1"],
        metrics["macro_f1"],
        metrics["subset_accuracy"],
        metrics["hamming_loss"],
        len(y_true),
    )
    return metrics


def write_summary(root: Path, name: str, task: str, evaluation: dict) -> None:
    """`metrics/<name>.json`: the summary figures of `evaluation` (after the full record), the
    headline first, as `dvc exp show` lists them."""
    summary = task_kind(task).summarize(evaluation)
    atomic_write_json(root / paths.METRICS_DIR / f"{name}.json", summary, sort_keys=False)


EVALUATORS = {
    "classification": evaluate_classification,
    "regression": evaluate_regression,
    "multilabel": evaluate_multilabel,
}
