"""Multi-label figures: one small confusion per label, and a grid of captioned predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.core.errors import AtelierError
from pipeline.figures.base import new_figure, save_figure
from pipeline.figures.images import plot_image_grid


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
    check_label_shapes(true, pred, label_names, "predictions")
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


def check_label_shapes(
    y_true: np.ndarray, other: np.ndarray, label_names: Sequence[str], what: str
):
    if y_true.ndim != 2 or other.shape != y_true.shape or y_true.shape[1] != len(label_names):
        raise AtelierError(
            f"Labels {y_true.shape} and {what} {other.shape} must both be (N, {len(label_names)}) "
            f"for the labels {', '.join(label_names)}: the model was trained on other labels. "
            "Re-run the train stage."
        )
