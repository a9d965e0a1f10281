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

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import AtelierError, DataError
from pipeline.stages.evaluate import DIGITS, new_figure, per_class_metrics, save_figure

log = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
PROBLEMS_SHOWN = 5  # the first few problems of a table are listed, then a count of the rest
LOSS_EPSILON = 1e-7  # Keras' epsilon: probabilities are clipped to [eps, 1 - eps] for the loss


@dataclass(frozen=True)
class LabelTable:
    """Images and their labels as read from a CSV; `labels` is (N, L) uint8 of 0/1."""

    paths: list[str]
    labels: np.ndarray
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)


# --- reading the table --------------------------------------------------------------------------


def read_label_table(csv_path: Path, label_names: Sequence[str] | None = None) -> LabelTable:
    """Read and check a label CSV: an `image` column, then 0/1 label columns.

    Args:
        csv_path: the CSV file. Relative image paths are resolved against its directory.
        label_names: the label columns to read, in this order; every one must exist. `None`
            reads every column after `image`.

    Raises:
        DataError: the file is unreadable or empty, a column is missing, an image file does not
            exist or a label cell is not 0 or 1. Every row is checked; the message lists the
            first few problems by 1-based data row (the file line is one more: the header).
    """
    import pandas as pd

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: label table not found; check the path.")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{csv_path}: cannot read as CSV ({exc}).") from None
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{csv_path}: the file is empty; expected a header `{IMAGE_COLUMN},<label>,...` and "
            "one row per image."
        ) from None
    columns = [str(column).strip() for column in table.columns]
    table.columns = columns
    if IMAGE_COLUMN not in columns:
        raise DataError(
            f"{csv_path}: no `{IMAGE_COLUMN}` column (the header has {', '.join(columns)}); the "
            f"first column must be `{IMAGE_COLUMN}`, the image's path."
        )
    if label_names is None:
        names = tuple(columns[columns.index(IMAGE_COLUMN) + 1 :])
        if not names:
            raise DataError(
                f"{csv_path}: no label columns after `{IMAGE_COLUMN}`; add one 0/1 column per "
                "label."
            )
    else:
        names = tuple(label_names)
        missing = [name for name in names if name not in columns]
        if missing:
            raise DataError(
                f"{csv_path}: label column(s) {', '.join(missing)} missing (the header has "
                f"{', '.join(columns)}); add them, or change the label names the stage expects."
            )
    if len(table) == 0:
        raise DataError(f"{csv_path}: the table has a header but no rows; add one row per image.")

    base = csv_path.parent.absolute()
    paths = [str(base / value.strip()) if value.strip() else "" for value in table[IMAGE_COLUMN]]
    problems: list[tuple[int, str]] = []  # (0-based row, description)
    for row, path in enumerate(paths):
        if not path:
            problems.append((row, f"the `{IMAGE_COLUMN}` cell is empty"))
        elif not Path(path).is_file():
            problems.append((row, f"image {path} does not exist"))

    raw = table[list(names)].to_numpy(dtype=str)
    labels = np.zeros(raw.shape, dtype=np.uint8)
    ones, zeros = np.isin(raw, ("1", "1.0")), np.isin(raw, ("0", "0.0"))
    labels[ones] = 1
    for row, column in zip(*np.nonzero(~(ones | zeros)), strict=True):
        problems.append(
            (int(row), f"column {names[column]!r}: value {str(raw[row, column])!r} is not 0 or 1")
        )
    if problems:
        problems.sort(key=lambda problem: problem[0])
        shown = "; ".join(
            f"row {row + 1} (line {row + 2}): {text}" for row, text in problems[:PROBLEMS_SHOWN]
        )
        more = len(problems) - PROBLEMS_SHOWN
        raise DataError(
            f"{csv_path}: {len(problems)} problem(s): {shown}"
            + (f"; and {more} more" if more > 0 else "")
            + ". Every image must exist (relative paths are read from the CSV's directory) and "
            "every label cell must be 0 or 1: fix the table or regenerate the data."
        )
    return LabelTable(paths=paths, labels=labels, label_names=names)


# --- streaming the images -----------------------------------------------------------------------


def make_image_dataset(
    paths: Sequence[str],
    labels: np.ndarray,
    *,
    image_size: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
):
    """A `tf.data.Dataset` of (uint8 images [B, S, S, 3], float32 labels [B, L]) read from disk.

    Only the path strings are held; each epoch reads, decodes (PNG, JPEG, GIF, BMP; grey images
    become RGB) and resizes the files in parallel, then batches and prefetches. With `shuffle`,
    the (path, label) pairs are reshuffled every epoch from `seed` (the same sequence of orders
    on every run); without, the order is the table's. Resizing is bilinear; the result is
    rounded back to uint8, so the model scales its input as for the other datasets.
    """
    import tensorflow as tf

    labels = np.asarray(labels)
    if labels.ndim != 2 or len(labels) != len(paths):
        raise ValueError(
            f"labels must be (N, L) with N = {len(paths)} paths; got shape {labels.shape}."
        )
    if image_size < 1 or batch_size < 1:
        raise ValueError(f"image_size and batch_size must be positive: {image_size}, {batch_size}.")
    if len(paths) == 0:
        raise ValueError("No images: paths is empty.")

    size = (image_size, image_size)

    def load(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        if tf.reduce_all(tf.shape(image)[:2] == size):
            image = tf.identity(image)
        else:
            # Resizing float32 is about twice as fast as resizing uint8 (measured); + 0.5 and a
            # saturating cast round half up and clip to 0-255, as Pillow does.
            resized = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
            image = tf.saturate_cast(resized + 0.5, tf.uint8)
        return tf.ensure_shape(image, [image_size, image_size, 3]), label

    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(list(paths), dtype=tf.string), labels.astype(np.float32))
    )
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # Parallelism comes from decoding many files at once; letting each small op also fan out
    # over the intra-op pool only adds hand-offs (measured faster on 2 cores).
    options.threading.max_intra_op_parallelism = 1
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)


def load_images_python(paths: Sequence[str], image_size: int) -> np.ndarray:
    """The naive way: open, convert to RGB and resize (bilinear) each file in turn; (N, S, S, 3)."""
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if rgb.size != (image_size, image_size):
                rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
            images.append(np.asarray(rgb))
    if not images:
        return np.zeros((0, image_size, image_size, 3), dtype=np.uint8)
    return np.stack(images)


# --- metrics ------------------------------------------------------------------------------------


def _check_shapes(y_true: np.ndarray, other: np.ndarray, label_names: Sequence[str], what: str):
    if y_true.ndim != 2 or other.shape != y_true.shape or y_true.shape[1] != len(label_names):
        raise AtelierError(
            f"Labels {y_true.shape} and {what} {other.shape} must both be (N, {len(label_names)}) "
            f"for the labels {', '.join(label_names)}: the model was trained on other labels. "
            "Re-run the train stage."
        )


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
    _check_shapes(y_true, proba, label_names, "probabilities")
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
    return {key: round(float(value), DIGITS) for key, value in metrics.items()}


def per_label_confusion(
    y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Per label, the counts of its 2×2 confusion matrix: `tn`, `fp`, `fn`, `tp` (sum: N)."""
    from sklearn.metrics import multilabel_confusion_matrix

    y_true, y_pred = np.asarray(y_true).astype(np.int64), np.asarray(y_pred).astype(np.int64)
    _check_shapes(y_true, y_pred, label_names, "predictions")
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


def plot_label_confusions(
    confusions: dict[str, dict[str, int]], path: Path, *, columns: int = 4
) -> None:
    """One small 2×2 matrix per label (rows: actual no/yes, columns: predicted no/yes).

    Cells are shaded by their share of the actual row and show the count.
    """
    names = list(confusions)
    if not names:
        raise ValueError("No labels to plot.")
    columns = min(columns, len(names))
    rows = -(-len(names) // columns)
    figure = new_figure(2.3 * columns, 2.2 * rows + 0.4)
    figure.suptitle("Per-label confusion (rows: actual, columns: predicted)")
    for index, name in enumerate(names):
        counts = confusions[name]
        matrix = np.array(
            [[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]], dtype=np.int64
        )
        totals = matrix.sum(axis=1, keepdims=True)
        shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for row in range(2):
            for column in range(2):
                axes.text(
                    column,
                    row,
                    f"{matrix[row, column]:,}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if shares[row, column] > 0.5 else "black",
                )
        axes.set_xticks([0, 1], labels=["no", "yes"], fontsize=8)
        axes.set_yticks([0, 1], labels=["no", "yes"], fontsize=8)
        axes.set_title(name, fontsize=10)
    save_figure(figure, path)


def _label_set(row: np.ndarray, label_names: Sequence[str]) -> str:
    names = [name for name, value in zip(label_names, row, strict=True) if value]
    return " ".join(names) if names else "(none)"


def prediction_captions(
    true: np.ndarray, pred: np.ndarray, label_names: Sequence[str]
) -> tuple[list[str], list[bool]]:
    """Per image, "true: <labels>\npred: <labels>" (✗ when not every label is right) and
    whether every label is right."""
    true, pred = np.asarray(true).astype(bool), np.asarray(pred).astype(bool)
    _check_shapes(true, pred, label_names, "predictions")
    right = [bool(np.all(t == p)) for t, p in zip(true, pred, strict=True)]
    captions = [
        f"true: {_label_set(t, label_names)}\npred: {_label_set(p, label_names)}"
        + ("" if ok else " ✗")
        for t, p, ok in zip(true, pred, right, strict=True)
    ]
    return captions, right


def plot_prediction_grid(
    images: np.ndarray,
    true: np.ndarray,
    pred: np.ndarray,
    label_names: Sequence[str],
    path: Path,
    *,
    columns: int = 4,
) -> None:
    """Test images with their true and predicted label sets; wrong predictions in red with ✗.

    `images` are uint8 (N, S, S, 3) or (N, S, S); `true` and `pred` are (N, L) 0/1. Drawn by the
    report's image grid (one mosaic, one `imshow`).
    """
    from pipeline.stages.report import plot_image_grid

    images = np.asarray(images)
    if len(images) == 0:
        raise ValueError("No images to plot.")
    if len(images) != len(true):
        raise ValueError(f"{len(images)} images but {len(true)} label rows.")
    captions, right = prediction_captions(true, pred, label_names)
    plot_image_grid(
        images,
        captions,
        path,
        title=f"Predictions: {sum(right)} of {len(right)} exactly right",
        value_max=255,
        columns=columns,
        caption_colours=["black" if ok else "#c62828" for ok in right],
    )
