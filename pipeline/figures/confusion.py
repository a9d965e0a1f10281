"""Confusion matrices: counts and row shares of a classifier's test predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.figures.base import new_figure, save_figure


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
