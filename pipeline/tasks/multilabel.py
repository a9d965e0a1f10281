"""Multi-label image workloads: a CSV of image paths and 0/1 label columns, streamed from disk.

The Keras tutorial's "apparel" seed lists images in a CSV (`image` then one 0/1 column per label)
and trains a sigmoid output with binary cross-entropy. Unlike the single-label datasets, whose
arrays fit in memory, such a set is a directory of files, so this module:

- reads and checks the table up front (`read_label_table`): every image exists and every label
  cell is 0 or 1, and an error names the file, the row and what to do, before any training starts;
- streams the images (`make_image_dataset`): a `tf.data` pipeline over the *path strings* that
  reads, decodes and resizes in parallel and never holds more than a few batches of pixels;
  `load_images_python` is the one-by-one Pillow way, the benchmark's reference;
- scores predictions (`multilabel_metrics`, `per_label_confusion`) as flat keys for
  `dvc metrics`, and draws the per-label confusions and a grid of predictions.

TensorFlow, pandas, scikit-learn, Pillow and matplotlib are imported inside the functions that need
them, so importing this module is cheap (the report stage must not import TensorFlow).
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.core.io import atomic_write_bytes
from pipeline.core.metrics import ROUND_DIGITS
from pipeline.figures.multilabel import check_label_shapes
from pipeline.tasks.common import class_slug, per_class_metrics
from pipeline.tasks.results import ExperimentResult, curves_section, seconds

log = logging.getLogger(__name__)

LOSS_EPSILON = 1e-7  # Keras' epsilon: probabilities are clipped to [eps, 1 - eps] for the loss


# --- reading the table --------------------------------------------------------------------------


# --- streaming the images -----------------------------------------------------------------------


# --- metrics ------------------------------------------------------------------------------------


def predicted_labels(proba: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """0/1 (uint8) predictions: a label is predicted when its probability is above `threshold`.

    `>` as Keras' `BinaryAccuracy` does, so the figures logged in training and these agree.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive); got {threshold}.")
    return (np.asarray(proba) > threshold).astype(np.uint8)


def multilabel_metrics(
    y_true: np.ndarray, proba: np.ndarray, label_names: Sequence[str], *, threshold: float = 0.5
) -> dict:
    """Flat test figures for `dvc metrics`; a label is predicted when its probability > threshold.

    Keys: `subset_accuracy` (every label of a row right), `hamming_loss` (share of wrong cells),
    `micro_f1`, `macro_f1`, `micro_precision`, `micro_recall`, per label `precision_<slug>`,
    `recall_<slug>`, `f1_<slug>`, and `test_loss` (mean binary cross-entropy over all cells,
    probabilities clipped to [1e-7, 1 - 1e-7]). Values are rounded to 6 digits; precision and
    recall of a label never predicted (or never present) are 0.
    """
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        hamming_loss,
        precision_recall_fscore_support,
    )

    y_true = np.asarray(y_true).astype(np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    check_label_shapes(y_true, proba, label_names, "probabilities")
    y_pred = predicted_labels(proba, threshold).astype(np.int64)

    clipped = np.clip(proba, LOSS_EPSILON, 1.0 - LOSS_EPSILON)
    loss = -np.mean(y_true * np.log(clipped) + (1 - y_true) * np.log(1.0 - clipped))
    metrics = {
        "subset_accuracy": accuracy_score(y_true, y_pred),
        "hamming_loss": hamming_loss(y_true, y_pred),
        "micro_f1": f1_score(y_true, y_pred, average="micro", zero_division=0),
        "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0),
    }
    precision, recall, _, _ = precision_recall_fscore_support(
        y_true, y_pred, average="micro", zero_division=0
    )
    metrics |= {"micro_precision": precision, "micro_recall": recall, "test_loss": loss}
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=0
    )
    metrics |= per_class_metrics(label_names, precision, recall, f1, what="Label")
    return {key: round(float(value), ROUND_DIGITS) for key, value in metrics.items()}


def per_label_confusion(
    y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Per label, the counts of its 2×2 confusion matrix: `tn`, `fp`, `fn`, `tp` (sum: N)."""
    from sklearn.metrics import multilabel_confusion_matrix

    y_true, y_pred = np.asarray(y_true).astype(np.int64), np.asarray(y_pred).astype(np.int64)
    check_label_shapes(y_true, y_pred, label_names, "predictions")
    matrices = multilabel_confusion_matrix(y_true, y_pred)
    return {
        name: {
            "tn": int(matrix[0, 0]),
            "fp": int(matrix[0, 1]),
            "fn": int(matrix[1, 0]),
            "tp": int(matrix[1, 1]),
        }
        for name, matrix in zip(label_names, matrices, strict=True)
    }


# --- figures ------------------------------------------------------------------------------------


def write_per_label_csv(
    path: Path, names: Sequence[str], metrics: dict, confusions: dict[str, dict[str, int]]
) -> None:
    """`per_label.csv`: label, support, precision, recall, F1 and the 2×2 counts tn/fp/fn/tp."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "support", "precision", "recall", "f1", "tn", "fp", "fn", "tp"])
    for label in names:
        slug, counts = class_slug(label), confusions[label]
        writer.writerow(
            [
                label,
                counts["tp"] + counts["fn"],
                metrics[f"precision_{slug}"],
                metrics[f"recall_{slug}"],
                metrics[f"f1_{slug}"],
                *(counts[key] for key in ("tn", "fp", "fn", "tp")),
            ]
        )
    atomic_write_bytes(path, buffer.getvalue().encode())


def multilabel_table(results: list[ExperimentResult]) -> list[str]:
    rows = [
        "| # | experiment | dataset | model | parameters | epochs (best) | micro F1 | macro F1 "
        "| subset accuracy | Hamming loss | threshold | training time |",
        "|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for rank, result in enumerate(results, start=1):
        m = result.metrics
        name = f"**{result.name}**" if rank == 1 else result.name
        rows.append(
            f"| {rank} | {name} | {m['dataset']} | {m['model']} | {int(m['params_count']):,} "
            f"| {m['epochs_run']} ({m['best_epoch']}) | {m['micro_f1']:.4f} | {m['macro_f1']:.4f} "
            f"| {m['subset_accuracy']:.4f} | {m['hamming_loss']:.4f} | {m['threshold']:g} "
            f"| {seconds(m['train_time_s'])} |"
        )
    rows += [
        "",
        "*subset accuracy*: share of test images with every label right; *Hamming loss*: share "
        "of wrong (image, label) cells.",
    ]
    return rows


def multilabel_section(result: ExperimentResult, staging: Path) -> list[str]:
    metrics, name = result.metrics, result.name
    lines = [
        f"### {name}",
        "",
        f"Model `{metrics['model']}` on `{metrics['dataset']}`: micro F1 "
        f"**{metrics['micro_f1']:.4f}**, macro F1 {metrics['macro_f1']:.4f}, subset accuracy "
        f"{metrics['subset_accuracy']:.4f}, Hamming loss {metrics['hamming_loss']:.4f} at "
        f"threshold {metrics['threshold']:g}; {int(metrics['params_count']):,} parameters, "
        f"trained in {seconds(metrics['train_time_s'])} on {metrics['device']}.",
        "",
    ]
    lines += curves_section(result, staging, metric="binary_accuracy")
    per_label = result.plots_dir / "per_label.csv"
    if per_label.is_file():
        with open(per_label, newline="") as stream:
            table = list(csv.DictReader(stream))
        lines += [
            "| label | test images with it | precision | recall | F1 | false positives "
            "| false negatives |",
            "|---|--:|--:|--:|--:|--:|--:|",
            *(
                f"| {row['label']} | {row['support']} | {float(row['precision']):.3f} "
                f"| {float(row['recall']):.3f} | {float(row['f1']):.3f} | {row['fp']} "
                f"| {row['fn']} |"
                for row in table
            ),
            "",
        ]
    for figure, caption in (
        ("label_confusion", "per-label confusion matrices"),
        ("predictions", "test images with true and predicted labels"),
    ):
        source = result.plots_dir / f"{figure}.png"
        if source.is_file():
            shutil.copyfile(source, staging / f"{name}_{figure}.png")
            lines += [f"![{name} {caption}]({name}_{figure}.png)", ""]
    return lines
