"""Report stage (`report`): one Markdown report across all experiments, figures beside it.

Reads only what earlier stages wrote — `metrics/<experiment>.json`, `plots/<experiment>/` and each
dataset's training images (for the sample grids) — and writes `reports/`:

- `report.md`: two leaderboards — classification sorted by test accuracy, with the
  scikit-learn baseline marked and every network's margin over the baseline of the same dataset;
  regression sorted by test MAE, with the K-fold figures of cross-validated experiments — then
  per experiment its training curves (train vs validation, the over-fitting check the seeds
  teach); for classifiers the confusion matrix, the class pairs most often confused, a grid of
  misclassified test images and the classification report; for regressors predicted-vs-actual
  and residual plots; a description of each dataset (a sample grid of image classes).
- the PNGs it links, and the plot data `dvc.yaml` declares so that `dvc plots diff` overlays
  revisions: `curves/{accuracy,mae,loss}/<experiment>.csv` (epoch, train, validation),
  `confusion/<experiment>.csv` (actual, predicted) and `predictions/<experiment>.csv` (actual,
  predicted, residual).

Figures are drawn with matplotlib's Agg canvas (no display, no pyplot state). This module never
imports TensorFlow (nor does `pipeline.stages.evaluate` at import time), so the report takes seconds.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.errors import AtelierError
from pipeline.stages.evaluate import new_figure, save_figure
from pipeline.core.io import atomic_dir, atomic_write_bytes, read_json
from pipeline.params import Params

log = logging.getLogger(__name__)

BASELINE_MODEL = "sgd_logistic"
SAMPLES_PER_CLASS = 8
MISCLASSIFIED_SHOWN = 24
CONFUSED_PAIRS_SHOWN = 5


@dataclass(frozen=True)
class ExperimentResult:
    name: str
    metrics: dict
    plots_dir: Path

    @property
    def is_baseline(self) -> bool:
        return self.metrics.get("model") == BASELINE_MODEL

    @property
    def accuracy(self) -> float:
        return float(self.metrics["test_accuracy"])

    @property
    def task(self) -> str:
        return str(self.metrics.get("task", "classification"))

    def sort_key(self) -> tuple:
        if self.task == "regression":
            return (1, float(self.metrics["test_mae"]), self.name)
        if self.task == "multilabel":
            return (2, -float(self.metrics["micro_f1"]), self.name)
        return (0, -self.accuracy, self.name)


# Figures the seed tutorials report, shown beside the pipeline's own.
SEED_REFERENCE = {
    "boston_housing": "seed 004: test MAE 2.26 with one model, 2.05 as the mean of 3 folds",
    "mnist": "seed 004: accuracy ≈ 0.97 (Dense 64-32)",
}


# --- figures ------------------------------------------------------------------------------------


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


def _mosaic(
    tiles: list[np.ndarray | None], columns: int, *, gap: float, top: float, value_max: float
):
    """Tiles laid out on one canvas (one `imshow` instead of one axes per image: far faster).

    `gap` and `top` are the margins around and above each tile, as fractions of its height.
    Returns the canvas (a masked array for gray images, white RGB otherwise), the tile size and
    the margins in pixels.
    """
    shape = next(tile.shape for tile in tiles if tile is not None)
    height, width = shape[:2]
    pad, head = max(1, round(gap * height)), round(top * height)
    rows = -(-len(tiles) // columns)
    cell_h, cell_w = height + head + pad, width + pad
    colour = len(shape) == 3
    canvas = np.full(
        (rows * cell_h + pad, columns * cell_w + pad, *shape[2:]),
        value_max if colour else np.nan,
        dtype=np.float32,
    )
    for index, tile in enumerate(tiles):
        if tile is None:
            continue
        row, column = divmod(index, columns)
        y0, x0 = row * cell_h + head + pad, column * cell_w + pad
        canvas[y0 : y0 + height, x0 : x0 + width] = tile
    if colour:
        return np.clip(canvas / value_max, 0, 1), (height, width), (pad, head)
    return np.ma.masked_invalid(canvas), (height, width), (pad, head)


def _show_mosaic(axes, canvas, value_max: float) -> None:
    import matplotlib

    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    axes.imshow(canvas, cmap=cmap, vmin=0, vmax=value_max, interpolation="nearest")
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.set_xticks([])


def plot_image_grid(
    images: np.ndarray,
    captions: list[str],
    path: Path,
    *,
    title: str,
    value_max: float,
    columns: int = 8,
    caption_colours: list[str] | None = None,
) -> None:
    """A grid of images (grey or RGB) with a two-line caption above each, in black or in
    `caption_colours` (misclassified examples, multi-label predictions)."""
    count = len(images)
    columns = min(columns, max(1, count))
    tiles = [_displayable(image) for image in images]
    canvas, (height, width), (pad, head) = _mosaic(
        tiles, columns, gap=0.12, top=0.42, value_max=value_max
    )
    figure = new_figure(1.55 * columns, 1.55 * columns * canvas.shape[0] / canvas.shape[1] + 0.5)
    figure.suptitle(title)
    axes = figure.add_subplot()
    _show_mosaic(axes, canvas, value_max)
    axes.set_yticks([])
    cell_h, cell_w = height + head + pad, width + pad
    for index, caption in enumerate(captions):
        row, column = divmod(index, columns)
        axes.text(
            # pixel centres are at integer coordinates: a tile's top edge is half a pixel up
            column * cell_w + pad + width / 2 - 0.5,
            row * cell_h + head + pad - 0.5 - 0.03 * height,
            caption,
            ha="center",
            va="bottom",
            fontsize=8,
            color=caption_colours[index] if caption_colours else "black",
        )
    save_figure(figure, path)


def plot_class_samples(
    x: np.ndarray,
    y: np.ndarray,
    class_names: tuple[str, ...],
    path: Path,
    *,
    title: str,
    value_max: float,
    per_class: int = SAMPLES_PER_CLASS,
    seed: int = 0,
) -> None:
    """One row per class: `per_class` training images, the class name at the row's start."""
    rng = np.random.default_rng(seed)
    tiles: list[np.ndarray | None] = []
    for label in range(len(class_names)):
        members = np.flatnonzero(y == label)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        row = [_displayable(x[index]) for index in sorted(chosen)]
        tiles += row + [None] * (per_class - len(row))
    canvas, (height, _), (pad, head) = _mosaic(
        tiles, per_class, gap=0.1, top=0.0, value_max=value_max
    )
    figure = new_figure(1.0 * per_class + 1.6, 1.0 * per_class * canvas.shape[0] / canvas.shape[1])
    figure.suptitle(title)
    axes = figure.add_subplot()
    _show_mosaic(axes, canvas, value_max)
    centres = [
        pad + row * (height + head + pad) + height / 2 - 0.5 for row in range(len(class_names))
    ]
    axes.set_yticks(centres, labels=class_names, fontsize=10)
    axes.tick_params(axis="y", length=0)
    save_figure(figure, path)


def plot_leaderboard(results: list[ExperimentResult], path: Path) -> None:
    """Horizontal bars of test accuracy, best at the top, baselines in grey."""
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


def _displayable(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) → what `imshow` takes; 1-D rows become a square if any."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0]
    if image.ndim == 1:
        side = int(round(len(image) ** 0.5))
        if side * side == len(image):
            return image.reshape(side, side)
        return image.reshape(1, -1)
    return image


# --- reading the earlier stages' outputs --------------------------------------------------------


def load_results(params: Params, root: Path) -> list[ExperimentResult]:
    """Every experiment of `params` with its metrics, best test accuracy first."""
    results, missing = [], []
    for name in params.experiments:
        metrics_path = root / paths.METRICS_DIR / f"{name}.json"
        if not metrics_path.is_file():
            missing.append(name)
            continue
        results.append(
            ExperimentResult(name, read_json(metrics_path), root / paths.PLOTS_DIR / name)
        )
    if missing:
        raise AtelierError(
            f"No metrics for experiment(s) {', '.join(missing)} ({paths.METRICS_DIR}/<name>.json "
            "missing): run `dvc repro` (or `python -m pipeline evaluate <name>`) first."
        )
    if not results:
        raise AtelierError("params.yaml defines no experiments: there is nothing to report.")
    return sorted(results, key=ExperimentResult.sort_key)


def baselines_by_dataset(results: list[ExperimentResult]) -> dict[str, ExperimentResult]:
    """The best-scoring baseline of each dataset (results are sorted, so the first one seen)."""
    chosen: dict[str, ExperimentResult] = {}
    for result in results:
        if result.is_baseline:
            chosen.setdefault(result.metrics["dataset"], result)
    return chosen


def most_confused_pairs(
    matrix: np.ndarray, class_names, top: int = CONFUSED_PAIRS_SHOWN
) -> list[tuple[str, str, int, float]]:
    """(actual, predicted, count, share of the actual class) for the largest off-diagonal cells."""
    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1)
    off_diagonal = matrix.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(-off_diagonal, axis=None, kind="stable")
    pairs = []
    for flat in order[:top]:
        actual, predicted = divmod(int(flat), matrix.shape[1])
        count = int(off_diagonal[actual, predicted])
        if count == 0:
            break
        pairs.append(
            (class_names[actual], class_names[predicted], count, count / max(1, totals[actual]))
        )
    return pairs


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


# --- the report ---------------------------------------------------------------------------------


def build_report(params: Params, *, root: Path = Path(".")) -> Path:
    """Write `reports/` (report.md, figures, curve CSVs) for every experiment; return report.md."""
    results = load_results(params, root)
    baselines = baselines_by_dataset(results)
    classifiers = [result for result in results if result.task == "classification"]
    regressors = [result for result in results if result.task == "regression"]
    taggers = [result for result in results if result.task == "multilabel"]
    datasets = sorted({result.metrics["dataset"] for result in results})
    out_dir = root / paths.REPORTS_DIR
    with atomic_dir(out_dir) as staging:
        lines = [
            "# Atelier report",
            "",
            "Test figures are measured on each dataset's held-out test set, which only the "
            "evaluate stage reads. Validation figures are those of the best epoch. "
            "Regenerate with `dvc repro`; compare revisions with `dvc metrics diff <rev>` and "
            "`dvc plots diff <rev>`.",
            "",
        ]
        if classifiers:
            plot_leaderboard(classifiers, staging / "leaderboard.png")
            lines += [
                "## Leaderboard: classification",
                "",
                *_leaderboard_table(classifiers, baselines),
                "",
                "![Test accuracy by experiment](leaderboard.png)",
                "",
            ]
        if regressors:
            lines += [
                "## Leaderboard: regression",
                "",
                *_regression_table(regressors),
                "",
                *_crossval_section(params, regressors, root),
            ]
        if taggers:
            lines += ["## Leaderboard: multi-label", "", *_multilabel_table(taggers), ""]
        lines += ["## Datasets", ""]
        for dataset in datasets:
            lines += _dataset_section(dataset, root, staging)
        lines += ["## Experiments", ""]
        for result in results:
            lines += _experiment_section(result, baselines, root, staging)
        atomic_write_bytes(staging / "report.md", ("\n".join(lines).rstrip() + "\n").encode())
    log.info("report: %d experiments, %d datasets → %s", len(results), len(datasets), out_dir)
    return out_dir / "report.md"


def _margin(result: ExperimentResult, baselines: dict[str, ExperimentResult]) -> str:
    baseline = baselines.get(result.metrics["dataset"])
    if result.is_baseline:
        return "baseline"
    if baseline is None:
        return "no baseline"
    points = (result.accuracy - baseline.accuracy) * 100
    return f"{points:+.2f} pp"


def _margin_sentence(result: ExperimentResult, baselines) -> str:
    margin = _margin(result, baselines)
    if margin == "baseline":
        return "the baseline of its dataset"
    if margin == "no baseline":
        return "no baseline on this dataset"
    return f"test accuracy {margin} vs the baseline"


def _leaderboard_table(results, baselines) -> list[str]:
    rows = [
        "| # | experiment | dataset | model | parameters | epochs (best) | test accuracy "
        "| macro F1 | vs baseline | training time |",
        "|--:|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for rank, result in enumerate(results, start=1):
        metrics = result.metrics
        name = f"{result.name} (baseline)" if result.is_baseline else result.name
        epochs = (
            f"{metrics['epochs_run']} iterations"
            if result.is_baseline
            else f"{metrics['epochs_run']} ({metrics['best_epoch']})"
        )
        rows.append(
            f"| {rank} | {'**' + name + '**' if rank == 1 else name} | {metrics['dataset']} "
            f"| {metrics['model']} | {int(metrics['params_count']):,} | {epochs} "
            f"| {metrics['test_accuracy']:.4f} | {metrics['macro_f1']:.4f} "
            f"| {_margin(result, baselines)} | {_seconds(metrics['train_time_s'])} |"
        )
    rows += [
        "",
        "*vs baseline*: test accuracy minus that of the best scikit-learn baseline "
        f"(`{BASELINE_MODEL}`) on the same dataset, in percentage points.",
    ]
    return rows


def _regression_table(results: list[ExperimentResult]) -> list[str]:
    rows = [
        "| # | experiment | dataset | model | parameters | epochs (best) | test MAE | test RMSE "
        "| test R² | validation MAE | training time |",
        "|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for rank, result in enumerate(results, start=1):
        m = result.metrics
        name = f"**{result.name}**" if rank == 1 else result.name
        rows.append(
            f"| {rank} | {name} | {m['dataset']} | {m['model']} | {int(m['params_count']):,} "
            f"| {m['epochs_run']} ({m['best_epoch']}) | {m['test_mae']:.4f} | {m['test_rmse']:.4f} "
            f"| {m['test_r2']:.4f} | {m['val_mae']:.4f} | {_seconds(m['train_time_s'])} |"
        )
    references = sorted({r.metrics["dataset"] for r in results} & set(SEED_REFERENCE))
    if references:
        rows += ["", *(f"Reference for {ds}: {SEED_REFERENCE[ds]}." for ds in references)]
    return rows


def _multilabel_table(results: list[ExperimentResult]) -> list[str]:
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
            f"| {_seconds(m['train_time_s'])} |"
        )
    rows += [
        "",
        "*subset accuracy*: share of test images with every label right; *Hamming loss*: share "
        "of wrong (image, label) cells.",
    ]
    return rows


def _multilabel_section(result: ExperimentResult, staging: Path) -> list[str]:
    metrics, name = result.metrics, result.name
    lines = [
        f"### {name}",
        "",
        f"Model `{metrics['model']}` on `{metrics['dataset']}`: micro F1 "
        f"**{metrics['micro_f1']:.4f}**, macro F1 {metrics['macro_f1']:.4f}, subset accuracy "
        f"{metrics['subset_accuracy']:.4f}, Hamming loss {metrics['hamming_loss']:.4f} at "
        f"threshold {metrics['threshold']:g}; {int(metrics['params_count']):,} parameters, "
        f"trained in {_seconds(metrics['train_time_s'])} on {metrics['device']}.",
        "",
    ]
    lines += _curves(result, staging, metric="binary_accuracy")
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


def _crossval_section(params: Params, results: list[ExperimentResult], root: Path) -> list[str]:
    """K-fold figures of the cross-validated experiments (`crossval@<experiment>`)."""
    rows = []
    for result in results:
        path = root / paths.METRICS_DIR / "crossval" / f"{result.name}.json"
        if result.name not in params.crossval.experiments or not path.is_file():
            continue
        cv = read_json(path)
        folds = ", ".join(
            f"{cv[f'fold{k}_test_mae']:.3f}"
            for k in range(int(cv["folds"]))
            if f"fold{k}_test_mae" in cv
        )
        rows.append(
            f"| {result.name} | {cv['folds']} | {cv['val_mae_mean']:.4f} ± {cv['val_mae_std']:.4f} "
            f"| {cv['test_mae_mean']:.4f} ± {cv['test_mae_std']:.4f} | {folds} "
            f"| {cv['ensemble_test_mae']:.4f} | {result.metrics['test_mae']:.4f} |"
        )
    if not rows:
        return []
    return [
        "### K-fold cross-validation",
        "",
        "Each fold model is trained on the other folds of the training set and validated on its "
        "own; all are scored on the same test set.",
        "",
        "| experiment | folds | validation MAE (mean ± std) | test MAE (mean ± std) "
        "| test MAE per fold | test MAE of the averaged prediction | test MAE, one model |",
        "|---|--:|--:|--:|---|--:|--:|",
        *rows,
        "",
    ]


def _seconds(value: float) -> str:
    value = float(value)
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _dataset_section(dataset: str, root: Path, staging: Path) -> list[str]:
    prepared = paths.prepared_dir(dataset, root)
    meta_path = prepared / "meta.json"
    if not (meta_path.is_file() and (prepared / "x_train.npy").is_file()):
        return [f"### {dataset}", "", f"(no prepared data under {prepared})", ""]
    meta = read_json(meta_path)
    if meta.get("kind") == "image_files":
        size = "×".join(str(side) for side in meta["input_shape"])
        counts = ", ".join(
            f"{name} {count}"
            for name, count in zip(
                meta["class_names"], meta.get("label_counts_train", []), strict=False
            )
        )
        return [
            f"### {dataset}",
            "",
            f"{meta['n_train']:,} training and {meta['n_test']:,} test images ({size}, read "
            f"from disk as they are needed), {len(meta['class_names'])} labels per image; "
            f"training images per label: {counts}. Test set: {meta['test_source']}.",
            "",
        ]
    if meta.get("kind") == "tabular":
        features = ", ".join(meta.get("feature_names", []))
        target = meta.get("target_name") or "the target"
        return [
            f"### {dataset}",
            "",
            f"{meta['n_train']:,} training and {meta['n_test']:,} test rows of "
            f"{meta['input_shape'][0]} features ({features}); the model predicts {target}. "
            f"Test set: {meta['test_source']}. Features are z-scored with the mean and standard "
            "deviation of the training rows only (data/split/<dataset>/standardize.json).",
            "",
        ]
    x = np.load(prepared / "x_train.npy", mmap_mode="r")
    y = np.load(prepared / "y_train.npy")
    figure_name = f"samples_{dataset}.png"
    class_names = tuple(meta["class_names"])
    plot_class_samples(
        x,
        y,
        class_names,
        staging / figure_name,
        title=f"{dataset}: training images by class",
        value_max=float(meta["value_max"]),
    )
    shape = "×".join(str(side) for side in meta["input_shape"])
    return [
        f"### {dataset}",
        "",
        f"{meta['n_train']:,} training and {meta['n_test']:,} test images of {shape} pixels, "
        f"{len(class_names)} classes: {', '.join(class_names)}. Test set: {meta['test_source']}.",
        "",
        f"![{dataset} samples]({figure_name})",
        "",
    ]


def _regression_section(result: ExperimentResult, staging: Path) -> list[str]:
    metrics, name = result.metrics, result.name
    lines = [
        f"### {name}",
        "",
        f"Model `{metrics['model']}` on `{metrics['dataset']}`: test MAE "
        f"**{metrics['test_mae']:.4f}**, RMSE {metrics['test_rmse']:.4f}, R² "
        f"{metrics['test_r2']:.4f}; validation MAE {metrics['val_mae']:.4f}; "
        f"{int(metrics['params_count']):,} parameters, trained in "
        f"{_seconds(metrics['train_time_s'])} on {metrics['device']}.",
        "",
    ]
    lines += _curves(result, staging, metric="mae")
    predictions = result.plots_dir / "predictions.csv"
    if predictions.is_file():
        shutil.copyfile(predictions, _parent(staging / "predictions" / f"{name}.csv"))
    for figure, caption in (("scatter", "predicted vs actual"), ("residuals", "residuals")):
        source = result.plots_dir / f"{figure}.png"
        if source.is_file():
            shutil.copyfile(source, staging / f"{name}_{figure}.png")
            lines += [f"![{name} {caption}]({name}_{figure}.png)", ""]
    return lines


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _curves(result: ExperimentResult, staging: Path, *, metric: str) -> list[str]:
    name, metrics = result.name, result.metrics
    history = _read_history(result.plots_dir / "history.csv")
    if not history:
        return []
    figure_name = f"{name}_curves.png"
    plot_curves(
        history,
        staging / figure_name,
        title=name,
        best_epoch=int(metrics["best_epoch"]),
        metric=metric,
    )
    _write_curve_csvs(history, staging / "curves", name, metric)
    return [
        "#### Training curves",
        "",
        _overfitting_note(history, metrics, metric),
        "",
        f"![{name} training curves]({figure_name})",
        "",
    ]


def _experiment_section(result, baselines, root: Path, staging: Path) -> list[str]:
    if result.task == "regression":
        return _regression_section(result, staging)
    if result.task == "multilabel":
        return _multilabel_section(result, staging)
    metrics, name = result.metrics, result.name
    lines = [
        f"### {name}",
        "",
        f"Model `{metrics['model']}` on `{metrics['dataset']}`: test accuracy "
        f"**{metrics['test_accuracy']:.4f}**, test loss {metrics['test_loss']:.4f}, macro F1 "
        f"{metrics['macro_f1']:.4f} ({_margin_sentence(result, baselines)}); validation accuracy "
        f"{metrics['val_accuracy']:.4f}; {int(metrics['params_count']):,} parameters, trained in "
        f"{_seconds(metrics['train_time_s'])} on {metrics['device']}.",
        "",
    ]
    if "cv_mean" in metrics:
        lines += [
            f"Cross-validation accuracy on the training rows: {metrics['cv_mean']:.4f} ± "
            f"{metrics['cv_std']:.4f}.",
            "",
        ]

    lines += _curves(result, staging, metric="accuracy")
    confusion_csv = result.plots_dir / "confusion.csv"
    if confusion_csv.is_file():
        shutil.copyfile(confusion_csv, _parent(staging / "confusion" / f"{name}.csv"))
    confusion_png = result.plots_dir / "confusion.png"
    misclassified = result.plots_dir / "misclassified.npz"
    if confusion_png.is_file():
        shutil.copyfile(confusion_png, staging / f"{name}_confusion.png")
        lines += ["#### Confusion matrix", "", f"![{name} confusion matrix]({name}_confusion.png)"]
        lines.append("")
    if misclassified.is_file():
        lines += _mistakes(name, misclassified, metrics["dataset"], root, staging)
    report_md = result.plots_dir / "classification_report.md"
    if report_md.is_file():
        lines += [
            "<details><summary>Classification report (test set)</summary>",
            "",
            report_md.read_text().rstrip(),
            "",
            "</details>",
            "",
        ]
    return lines


def _overfitting_note(history: list[dict], metrics: dict, metric: str = "accuracy") -> str:
    """One sentence on the train/validation gap and whether validation loss rose after the best."""
    last = history[-1]
    best = int(metrics["best_epoch"])
    after = [float(row["val_loss"]) for row in history if int(row["epoch"]) > best]
    best_loss = float(history[best - 1]["val_loss"]) if 0 < best <= len(history) else None
    train, val = float(last[metric]), float(last["val_" + metric])
    if metric.endswith("accuracy"):
        gap = f"gap {(train - val) * 100:+.2f} pp"
    else:
        gap = f"gap {val - train:+.4g}"
    label = {"mae": "MAE", "binary_accuracy": "binary accuracy"}.get(metric, metric)
    text = (
        f"Best epoch {best} of {len(history)} (the checkpoint kept). At the last epoch train "
        f"{label} is {train:.4f} and validation {label} {val:.4f} ({gap})."
    )
    if after and best_loss is not None and max(after) > best_loss:
        text += (
            f" Validation loss rose after epoch {best} (to {after[-1]:.4f}) while training went "
            "on: the network started to over-fit, and early stopping / the best checkpoint "
            "kept the earlier weights."
        )
    return text


def _write_curve_csvs(history: list[dict], curves_dir: Path, name: str, metric: str) -> None:
    for shown in (metric, "loss"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["epoch", "train", "validation"])
        for row in history:
            writer.writerow([row["epoch"], row[shown], row["val_" + shown]])
        atomic_write_bytes(curves_dir / shown / f"{name}.csv", buffer.getvalue().encode())


def _mistakes(name: str, path: Path, dataset: str, root: Path, staging: Path) -> list[str]:
    with np.load(path, allow_pickle=False) as archive:
        class_names = [str(label) for label in archive["class_names"]]
        matrix = archive["confusion"]
        images = archive["images"][:MISCLASSIFIED_SHOWN]
        actual = archive["actual"][:MISCLASSIFIED_SHOWN]
        predicted = archive["predicted"][:MISCLASSIFIED_SHOWN]
        confidence = archive["confidence"][:MISCLASSIFIED_SHOWN]
    lines = []
    pairs = most_confused_pairs(matrix, class_names)
    if pairs:
        lines += [
            "Most confused classes:",
            "",
            "| actual | predicted as | test images | share of the actual class |",
            "|---|---|--:|--:|",
        ]
        lines += [f"| {a} | {p} | {count} | {share:.1%} |" for a, p, count, share in pairs]
        lines.append("")
    if len(images) == 0:
        return [*lines, "No misclassified test images.", ""]
    meta_path = paths.prepared_dir(dataset, root) / "meta.json"
    value_max = float(read_json(meta_path)["value_max"]) if meta_path.is_file() else 255.0
    captions = [
        f"true: {class_names[a]}\npred: {class_names[p]} ({c:.0%})"
        for a, p, c in zip(actual, predicted, confidence, strict=True)
    ]
    figure_name = f"{name}_misclassified.png"
    plot_image_grid(
        images,
        captions,
        staging / figure_name,
        title=f"{name}: most confident mistakes on the test set",
        value_max=value_max,
    )
    total_wrong = int(matrix.sum() - np.trace(matrix))
    return [
        *lines,
        "#### Misclassified test images",
        "",
        f"{total_wrong} of {int(matrix.sum())} test images are misclassified; the "
        f"{len(images)} the model was most sure about:",
        "",
        f"![{name} misclassified test images]({figure_name})",
        "",
    ]
