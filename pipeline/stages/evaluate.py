"""Evaluate stage (`evaluate@<experiment>`): score the best checkpoint on the held-out test set.

This is the only stage that opens `x_test.npy`/`y_test.npy`. Outputs (small, committed to git,
so that `dvc metrics diff` and `dvc plots diff` need no remote):

- `metrics/<experiment>.json` — flat keys, the same for every experiment: `test_accuracy`,
  `test_loss` (log loss of the predicted probabilities), macro and weighted precision/recall/F1,
  per-class `precision_<slug>`/`recall_<slug>`/`f1_<slug>` (slug: the class name in lower case,
  every other character than a-z and 0-9 replaced by `_`), the best epoch's `val_accuracy` and
  `val_loss`, `best_epoch`, `epochs_run`, `train_time_s`, `params_count`, `device`, `model`,
  `dataset`; the SGD baseline adds `cv_mean` and `cv_std`.
- `plots/<experiment>/confusion.csv` — one `actual,predicted` row (class names) per test image,
  the input of DVC's `confusion` templates; `confusion.png`, the same matrix for people;
  `classification_report.json` and `.md` (scikit-learn's report); `history.csv` (a copy of the
  training curves; only its header for the baseline, which has no epochs) and
  `misclassified.npz` — the confusion counts and the most confident mistakes with their images,
  so the report stage needs neither TensorFlow nor the test set.

Keras checkpoints are loaded with `safe_mode=True`: an archive holding a `Lambda` layer (arbitrary
Python code) is refused with an `AtelierError` that says so, as is a file that is not a Keras
archive at all.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.errors import AtelierError, DataError
from pipeline.core.io import atomic_dir, atomic_write_bytes, atomic_write_json, read_json
from pipeline.params import Params

log = logging.getLogger(__name__)

MISCLASSIFIED_KEPT = 32  # images of the most confident mistakes kept for the report
PREDICT_BATCH = 1024
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
DPI = 110
DIGITS = 6  # metrics are rounded so that re-runs and diffs are not noisy in the last bits


@dataclass(frozen=True)
class TestSet:
    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class Scores:
    """Class probabilities for every test row, and where they came from."""

    proba: np.ndarray  # (n, classes)
    kind: str  # "keras" or "sgd_logistic"


def class_slug(name: str) -> str:
    """`T-shirt/top` → `t_shirt_top`: a metric-key-safe form of a class name."""
    return re.sub(r"[^a-z0-9]", "_", name.lower())


def run_facts(experiment, train: dict) -> dict:
    """What every experiment's metrics file says about its run, from its `train.json`."""
    return {
        "best_epoch": int(train["best_epoch"]),
        "epochs_run": int(train["epochs_run"]),
        "train_time_s": float(train["train_time_s"]),
        "params_count": int(train["params_count"]),
        "device": str(train["device"]),
        "model": experiment.model.name,
        "dataset": experiment.dataset,
        "task": experiment.task,
    }


def prepared_test_set(dataset: str, root: Path) -> tuple[Path, dict]:
    """The prepared directory of `dataset` and its meta, once its test arrays are known to exist."""
    prepared = paths.prepared_dir(dataset, root)
    needed = [prepared / name for name in ("x_test.npy", "y_test.npy", "meta.json")]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise DataError(
            f"The test set of {dataset!r} is missing ({', '.join(missing)}): run "
            f"`dvc repro preprocess@{dataset}` first."
        )
    return prepared, read_json(prepared / "meta.json")


def load_test_set(dataset: str, root: Path) -> TestSet:
    prepared, meta = prepared_test_set(dataset, root)
    return TestSet(
        x=np.load(prepared / "x_test.npy"),
        y=np.load(prepared / "y_test.npy").astype(np.int64),
        class_names=tuple(str(name) for name in meta["class_names"]),
    )


def load_keras_model(path: Path):
    """Load a `.keras` archive in safe mode; turn every failure into a one-paragraph error."""
    path = Path(path)
    if not path.is_file():
        raise AtelierError(f"{path} not found: run the train stage for this experiment first.")
    if not zipfile.is_zipfile(path):
        raise AtelierError(
            f"{path} is not a Keras archive (a .keras file is a zip archive written by "
            "model.save()); it may be truncated or another format. Re-run the train stage "
            "(`dvc repro -f train@<experiment>`) to write it again."
        )
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True)
    except ValueError as exc:
        if "Lambda" in str(exc):
            raise AtelierError(
                f"{path} contains a Lambda layer, whose Python code Keras refuses to load in safe "
                "mode (loading it could run arbitrary code). Replace the Lambda layer with a "
                "registered custom layer (keras.saving.register_keras_serializable) and retrain; "
                "this pipeline never loads models with safe_mode=False."
            ) from None
        raise AtelierError(f"{path} could not be loaded as a Keras model: {exc}") from None
    except (KeyError, OSError, TypeError, zipfile.BadZipFile) as exc:
        raise AtelierError(
            f"{path} is not a valid Keras archive ({type(exc).__name__}: {exc}). Re-run the train "
            "stage to write it again."
        ) from None


def predict_proba(model_dir: Path, x: np.ndarray, *, keras_model: bool) -> Scores:
    """Class probabilities of `x` from the model saved in `model_dir`.

    Only the Keras branch imports TensorFlow; the baseline is served by NumPy alone.
    """
    if not keras_model:
        from pipeline.modeling.models import LinearPredictor

        baseline_path = model_dir / "model.npz"
        if not baseline_path.is_file():
            raise AtelierError(
                f"{baseline_path} not found: run the train stage for this experiment first."
            )
        with np.errstate(over="ignore"):  # exp of very negative scores → probability 0
            proba = LinearPredictor.load(baseline_path).predict_proba(x)
        return Scores(proba, "sgd_logistic")
    model = load_keras_model(model_dir / "best.keras")
    proba = model.predict(x, batch_size=PREDICT_BATCH, verbose=0)
    return Scores(np.asarray(proba), "keras")


def _validation_loss(dataset: str, root: Path, model_dir: Path) -> float:
    """Log loss of the baseline on the validation rows (Keras models record it while training)."""
    from sklearn.metrics import log_loss

    from pipeline.modeling.models import LinearPredictor

    prepared, split = paths.prepared_dir(dataset, root), paths.split_dir(dataset, root)
    val_idx = np.load(split / "val_idx.npy")
    x_val = np.load(prepared / "x_train.npy", mmap_mode="r")[val_idx]
    y_val = np.load(prepared / "y_train.npy")[val_idx]
    predictor = LinearPredictor.load(model_dir / "model.npz")
    with np.errstate(over="ignore"):
        proba = predictor.predict_proba(np.ascontiguousarray(x_val))
    return float(log_loss(y_val, _normalised(proba), labels=np.arange(proba.shape[1])))


def compute_metrics(y_true: np.ndarray, proba: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """Test figures: accuracy, log loss, macro/weighted and per-class precision, recall, F1."""
    from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support

    labels = np.arange(len(class_names))
    if proba.shape[1] != len(class_names):
        raise AtelierError(
            f"The model predicts {proba.shape[1]} classes but the dataset has "
            f"{len(class_names)} ({', '.join(class_names)}): it was trained on other data. "
            "Re-run the train stage."
        )
    y_pred = proba.argmax(axis=1)
    metrics = {
        "test_accuracy": accuracy_score(y_true, y_pred),
        "test_loss": log_loss(y_true, _normalised(proba), labels=labels),
    }
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        metrics |= {
            f"{average}_precision": precision,
            f"{average}_recall": recall,
            f"{average}_f1": f1,
        }
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    metrics |= per_class_metrics(class_names, precision, recall, f1, what="Class")
    return {key: round(float(value), DIGITS) for key, value in metrics.items()}


def per_class_metrics(names, precision, recall, f1, *, what: str) -> dict:
    """`precision_<slug>`, `recall_<slug>`, `f1_<slug>` per class (or label) name."""
    slugs = [class_slug(name) for name in names]
    if len(set(slugs)) != len(slugs):
        raise AtelierError(
            f"{what} names {tuple(names)} give duplicate metric keys {slugs}: make them differ "
            "in letters or digits, not only in punctuation or case."
        )
    metrics = {}
    for index, slug in enumerate(slugs):
        metrics[f"precision_{slug}"] = precision[index]
        metrics[f"recall_{slug}"] = recall[index]
        metrics[f"f1_{slug}"] = f1[index]
    return metrics


def _normalised(proba: np.ndarray) -> np.ndarray:
    """What `sklearn.metrics.log_loss` does to probabilities, without its warning.

    Clipped to the machine epsilon of their own dtype (float32 for both model kinds), then
    rows rescaled to sum to one in float64 (float32 softmax rows miss by ~1e-7).
    """
    proba = np.asarray(proba)
    eps = np.finfo(proba.dtype).eps if np.issubdtype(proba.dtype, np.floating) else 1e-15
    proba = np.clip(proba.astype(np.float64), eps, 1 - eps)
    return proba / proba.sum(axis=1, keepdims=True)


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
    if experiment.task == "regression":
        from pipeline.tasks.regression import evaluate_regression

        return evaluate_regression(experiment, name, train, model_dir, root)
    if experiment.task == "multilabel":
        from pipeline.stages.evaluate_multilabel import evaluate_multilabel

        return evaluate_multilabel(experiment, name, train, model_dir, root)
    test = load_test_set(experiment.dataset, root)
    scores = predict_proba(model_dir, test.x, keras_model=experiment.is_keras)
    metrics = compute_metrics(test.y, scores.proba, test.class_names)

    val_loss = train.get("val_loss")
    if val_loss is None and scores.kind == "sgd_logistic":
        val_loss = _validation_loss(experiment.dataset, root, model_dir)
    metrics |= {
        "val_accuracy": round(float(train["val_accuracy"]), DIGITS),
        "val_loss": round(float(val_loss), DIGITS),
        **run_facts(experiment, train),
    }
    if scores.kind == "sgd_logistic":
        metrics |= {
            "cv_mean": round(float(train["cv_mean"]), DIGITS),
            "cv_std": round(float(train["cv_std"]), DIGITS),
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
        # Always written (only the header for the baseline, which has no epochs), so that
        # dvc.yaml can declare the same outputs for every experiment.
        if (model_dir / "history.csv").is_file():
            shutil.copyfile(model_dir / "history.csv", staging / "history.csv")
        else:
            atomic_write_bytes(staging / "history.csv", (",".join(HISTORY_COLUMNS) + "\n").encode())
    atomic_write_json(root / paths.METRICS_DIR / f"{name}.json", metrics)
    log.info(
        "%s: test accuracy %.4f, test loss %.4f, macro F1 %.4f on %d images",
        name,
        metrics["test_accuracy"],
        metrics["test_loss"],
        metrics["macro_f1"],
        len(test.y),
    )
    return metrics


def write_plot_data(
    out_dir: Path,
    *,
    title: str,
    x: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray,
    class_names: tuple[str, ...],
) -> None:
    """Confusion CSV/PNG, classification report (JSON, Markdown) and the mistakes' sample."""
    from sklearn.metrics import classification_report, confusion_matrix

    labels = np.arange(len(class_names))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    names = np.asarray(class_names, dtype=object)
    writer.writerows(zip(names[y_true], names[y_pred], strict=True))
    atomic_write_bytes(out_dir / "confusion.csv", buffer.getvalue().encode())

    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    plot_confusion_matrix(
        matrix, class_names, out_dir / "confusion.png", title=f"{title}: confusion matrix"
    )

    report = classification_report(
        y_true,
        y_pred,
        labels=labels,
        target_names=list(class_names),
        output_dict=True,
        zero_division=0,
    )
    atomic_write_json(out_dir / "classification_report.json", report)
    atomic_write_bytes(
        out_dir / "classification_report.md", classification_report_markdown(report).encode()
    )

    confidence = proba[np.arange(len(y_pred)), y_pred]
    wrong = np.flatnonzero(y_pred != y_true)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:MISCLASSIFIED_KEPT]
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        class_names=np.asarray(class_names, dtype=str),
        confusion=matrix.astype(np.int64),
        index=wrong.astype(np.int64),
        actual=y_true[wrong].astype(np.int64),
        predicted=y_pred[wrong].astype(np.int64),
        confidence=confidence[wrong].astype(np.float32),
        images=np.asarray(x[wrong]),
    )
    atomic_write_bytes(out_dir / "misclassified.npz", buffer.getvalue())


def classification_report_markdown(report: dict) -> str:
    """scikit-learn's `classification_report(output_dict=True)` as a Markdown table."""
    lines = [
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    summary = ("accuracy", "macro avg", "weighted avg", "micro avg")
    for label, row in report.items():
        if label in summary:
            continue
        lines.append(
            f"| {_md_escape(label)} | {row['precision']:.4f} | {row['recall']:.4f} | "
            f"{row['f1-score']:.4f} | {int(row['support'])} |"
        )
    for label in summary:
        row = report.get(label)
        if row is None:
            continue
        if label == "accuracy":
            total = int(report["macro avg"]["support"])
            lines.append(f"| **accuracy** | | | {row:.4f} | {total} |")
        else:
            lines.append(
                f"| **{label}** | {row['precision']:.4f} | {row['recall']:.4f} | "
                f"{row['f1-score']:.4f} | {int(row['support'])} |"
            )
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


# --- figures (shared with the report stage) ------------------------------------------------------


def new_figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas: no display and no global pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: tuple[str, ...] | list[str], path: Path, *, title: str
) -> None:
    """Heat map of row-normalised shares; each cell shows its count and its share of the row."""
    matrix = np.asarray(matrix, dtype=np.int64)
    n = len(class_names)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    side = max(4.5, 0.62 * n + 2.4)
    figure = new_figure(side + 1.0, side)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    font = 9 if n <= 10 else max(5, 9 - (n - 10) // 3)
    for row in range(n):
        for column in range(n):
            count = matrix[row, column]
            if count == 0:
                continue
            share = shares[row, column]
            axes.text(
                column,
                row,
                f"{count}\n{share:.0%}" if share >= 0.005 else f"{count}\n<1%",
                ha="center",
                va="center",
                fontsize=font,
                color="white" if share > 0.5 else "black",
            )
    if max(len(name) for name in class_names) > 3:
        axes.set_xticks(
            range(n), labels=class_names, rotation=45, ha="right", rotation_mode="anchor"
        )
    else:
        axes.set_xticks(range(n), labels=class_names)
    axes.set_yticks(range(n), labels=class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("actual class")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    axes.set_title(f"{title}\naccuracy {accuracy:.2%} on {matrix.sum():,} test images")
    colorbar = figure.colorbar(image, ax=axes, shrink=0.8)
    colorbar.set_label("share of the actual class")
    save_figure(figure, path)
