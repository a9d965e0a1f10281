"""Training curves and the leaderboard chart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.figures.base import new_figure, save_figure


def plot_curves(
    history: list[dict],
    path: Path,
    *,
    title: str,
    best_epoch: int | None,
    metric: str = "accuracy",
) -> None:
    """Train vs validation `metric` and loss per epoch, the best epoch marked."""
    epochs = [int(row["epoch"]) for row in history]
    figure = new_figure(10, 3.8)
    for index, shown in enumerate((metric, "loss")):
        axes = figure.add_subplot(1, 2, index + 1)
        for prefix, label, style in (("", "train", "-"), ("val_", "validation", "--")):
            values = [float(row[prefix + shown]) for row in history]
            axes.plot(epochs, values, style, marker="o", markersize=3, label=label)
        if best_epoch:
            axes.axvline(
                best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})"
            )
        axes.set_xlabel("epoch")
        axes.set_ylabel(shown)
        axes.set_title(f"{title}: {shown}")
        axes.grid(alpha=0.3)
        axes.legend()
        if len(epochs) <= 20:
            axes.set_xticks(epochs)
    save_figure(figure, path)


def plot_leaderboard(results: Sequence, path: Path) -> None:
    """Horizontal bars of test accuracy, best at the top, baselines in grey.

    `results` are the report's experiment results (`name`, `metrics`, `accuracy`,
    `is_baseline`), best first.
    """
    shown = results[::-1]
    labels = [f"{result.name}\n({result.metrics['dataset']})" for result in shown]
    values = [result.accuracy for result in shown]
    figure = new_figure(8, 0.55 * len(results) + 1.3)
    axes = figure.add_subplot()
    colors = ["#9e9e9e" if result.is_baseline else "#3b75af" for result in shown]
    bars = axes.barh(labels, values, color=colors)
    low = min(values)
    left = max(0.0, low - max(0.05, (1.0 - low) * 0.5))
    for bar, value, result in zip(bars, values, shown, strict=True):
        text = f"{value:.4f}" + (" baseline" if result.is_baseline else "")
        axes.text(
            value - 0.005 * (1.0 - left),
            bar.get_y() + bar.get_height() / 2,
            text,
            va="center",
            ha="right",
            color="white",
            fontsize=9,
            fontweight="bold",
        )
    axes.set_xlim(left, 1.0)
    axes.set_xlabel("test accuracy")
    axes.set_title("Test accuracy by experiment (grey: scikit-learn baseline)")
    axes.grid(axis="x", alpha=0.3)
    save_figure(figure, path)
