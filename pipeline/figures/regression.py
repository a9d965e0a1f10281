"""Regression figures: predicted against actual values, and residuals."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.figures.base import new_figure, save_figure


def plot_predicted_vs_actual(
    y_true: np.ndarray, y_pred: np.ndarray, path: Path, *, title: str, target: str
) -> None:
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
    figure = new_figure(5.6, 4.0)
    axes = figure.add_subplot()
    axes.scatter(y_pred, y_true - y_pred, s=14, alpha=0.7, edgecolors="none")
    axes.axhline(0.0, color="grey", linewidth=1)
    axes.set_xlabel(f"predicted {target}")
    axes.set_ylabel("residual (actual − predicted)")
    axes.set_title(f"{title}: residuals")
    save_figure(figure, path)
