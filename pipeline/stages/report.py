"""Report stage (`report`): one Markdown report across all experiments, figures beside it.

Reads only what earlier stages wrote — `plots/<experiment>/` (`evaluation.json` and the plot
data), `metrics/crossval/<experiment>.json` and each
dataset's overview (`data/overview/<dataset>/`: its meta and the sample grid's images, a few
kilobytes, so a change to the data itself does not re-run the report) — and writes `reports/`:

- `report.md`: two leaderboards — classification sorted by test accuracy, with the
  scikit-learn baseline marked and every network's margin over the baseline of the same dataset;
  regression sorted by test MAE, with the K-fold figures of cross-validated experiments — then
  per experiment its training curves (train vs validation, the over-fitting check the seeds
  teach); for classifiers the confusion matrix, the class pairs most often confused, a grid of
  misclassified test images and the classification report; for regressors predicted-vs-actual
  and residual plots; a description of each dataset (a sample grid of image classes).
- the PNGs it links, and the plot data `dvc.yaml` declares so that `dvc plots diff` overlays
  revisions: `confusion/<experiment>.csv` (actual, predicted) and
  `predictions/<experiment>.csv` (actual, predicted, residual). The training curves that
  `dvc plots` draws are DVCLive's files, written by the train stage under `live/`.

Figures are drawn with matplotlib's Agg canvas (no display, no pyplot state). This module never
imports TensorFlow or Keras, so the report takes seconds.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.io import atomic_dir, atomic_write_bytes, read_json
from pipeline.figures.curves import plot_leaderboard
from pipeline.figures.images import plot_class_samples
from pipeline.params import Params
from pipeline.tasks.classification import leaderboard_table, margin_sentence, mistakes_section
from pipeline.tasks.multilabel import multilabel_section, multilabel_table
from pipeline.tasks.regression import crossval_section, regression_section, regression_table
from pipeline.tasks.results import (
    baselines_by_dataset,
    curves_section,
    load_results,
    parent_link,
    seconds,
)

log = logging.getLogger(__name__)


# --- figures ------------------------------------------------------------------------------------


# --- reading the earlier stages' outputs --------------------------------------------------------


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
                *leaderboard_table(classifiers, baselines),
                "",
                "![Test accuracy by experiment](leaderboard.png)",
                "",
            ]
        if regressors:
            lines += [
                "## Leaderboard: regression",
                "",
                *regression_table(regressors),
                "",
                *crossval_section(params, regressors, root),
            ]
        if taggers:
            lines += ["## Leaderboard: multi-label", "", *multilabel_table(taggers), ""]
        lines += ["## Datasets", ""]
        for dataset in datasets:
            lines += _dataset_section(dataset, root, staging)
        lines += ["## Experiments", ""]
        for result in results:
            lines += _experiment_section(result, baselines, root, staging)
        atomic_write_bytes(staging / "report.md", ("\n".join(lines).rstrip() + "\n").encode())
    log.info("report: %d experiments, %d datasets → %s", len(results), len(datasets), out_dir)
    return out_dir / "report.md"


def _dataset_section(dataset: str, root: Path, staging: Path) -> list[str]:
    overview = paths.overview_dir(dataset, root)
    meta_path = overview / "meta.json"
    if not meta_path.is_file():
        return [f"### {dataset}", "", f"(no overview of the prepared data under {overview})", ""]
    meta = read_json(meta_path)
    if meta.get("task") == "multilabel":
        size = "×".join(str(side) for side in meta["input_shape"])
        held = "stored as arrays"
        if meta["kind"] == "image_files":
            held = "read from disk as they are needed"
        counts = ", ".join(
            f"{name} {count}"
            for name, count in zip(
                meta["class_names"], meta.get("label_counts_train", []), strict=False
            )
        )
        return [
            f"### {dataset}",
            "",
            f"{meta['n_train']:,} training and {meta['n_test']:,} test images ({size}, {held}), "
            f"{len(meta['class_names'])} labels per image; "
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
    with np.load(overview / "samples.npz") as samples:
        x, y = samples["x"], samples["y"]
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


def _experiment_section(result, baselines, root: Path, staging: Path) -> list[str]:
    if result.task == "regression":
        return regression_section(result, staging)
    if result.task == "multilabel":
        return multilabel_section(result, staging)
    metrics, name = result.metrics, result.name
    lines = [
        f"### {name}",
        "",
        f"Model `{metrics['model']}` on `{metrics['dataset']}`: test accuracy "
        f"**{metrics['test_accuracy']:.4f}**, test loss {metrics['test_loss']:.4f}, macro F1 "
        f"{metrics['macro_f1']:.4f} ({margin_sentence(result, baselines)}); validation accuracy "
        f"{metrics['val_accuracy']:.4f}; {int(metrics['params_count']):,} parameters, trained in "
        f"{seconds(metrics['train_time_s'])} on {metrics['device']}.",
        "",
    ]
    if "cv_mean" in metrics:
        lines += [
            f"Cross-validation accuracy on the training rows: {metrics['cv_mean']:.4f} ± "
            f"{metrics['cv_std']:.4f}.",
            "",
        ]

    lines += curves_section(result, staging, metric="accuracy")
    confusion_csv = result.plots_dir / "confusion.csv"
    if confusion_csv.is_file():
        shutil.copyfile(confusion_csv, parent_link(staging / "confusion" / f"{name}.csv"))
    confusion_png = result.plots_dir / "confusion.png"
    misclassified = result.plots_dir / "misclassified.npz"
    if confusion_png.is_file():
        shutil.copyfile(confusion_png, staging / f"{name}_confusion.png")
        lines += ["#### Confusion matrix", "", f"![{name} confusion matrix]({name}_confusion.png)"]
        lines.append("")
    if misclassified.is_file():
        lines += mistakes_section(name, misclassified, metrics["dataset"], root, staging)
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
