"""Single-label classification: test figures, the confusion data and scikit-learn's report."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.errors import AtelierError
from pipeline.core.io import atomic_write_bytes, atomic_write_json, read_json
from pipeline.core.metrics import ROUND_DIGITS
from pipeline.figures.confusion import plot_confusion_matrix
from pipeline.figures.images import plot_image_grid
from pipeline.tasks.common import per_class_metrics, prepared_test_set
from pipeline.tasks.results import BASELINE_MODEL, ExperimentResult, seconds

MISCLASSIFIED_KEPT = 32  # images of the most confident mistakes kept for the report


@dataclass(frozen=True)
class TestSet:
    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]


def load_test_set(dataset: str, root: Path) -> TestSet:
    prepared, meta = prepared_test_set(dataset, root)
    return TestSet(
        x=np.load(prepared / "x_test.npy"),
        y=np.load(prepared / "y_test.npy").astype(np.int64),
        class_names=tuple(str(name) for name in meta["class_names"]),
    )


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
        "test_loss": log_loss(y_true, normalised(proba), labels=labels),
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
    return {key: round(float(value), ROUND_DIGITS) for key, value in metrics.items()}


def normalised(proba: np.ndarray) -> np.ndarray:
    """What `sklearn.metrics.log_loss` does to probabilities, without its warning.

    Clipped to the machine epsilon of their own dtype (float32 for both model kinds), then
    rows rescaled to sum to one in float64 (float32 softmax rows miss by ~1e-7).
    """
    proba = np.asarray(proba)
    eps = np.finfo(proba.dtype).eps if np.issubdtype(proba.dtype, np.floating) else 1e-15
    proba = np.clip(proba.astype(np.float64), eps, 1 - eps)
    return proba / proba.sum(axis=1, keepdims=True)


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


MISCLASSIFIED_SHOWN = 24


CONFUSED_PAIRS_SHOWN = 5


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


def margin(result: ExperimentResult, baselines: dict[str, ExperimentResult]) -> str:
    baseline = baselines.get(result.metrics["dataset"])
    if result.is_baseline:
        return "baseline"
    if baseline is None:
        return "no baseline"
    points = (result.accuracy - baseline.accuracy) * 100
    return f"{points:+.2f} pp"


def margin_sentence(result: ExperimentResult, baselines) -> str:
    gap = margin(result, baselines)
    if gap == "baseline":
        return "the baseline of its dataset"
    if gap == "no baseline":
        return "no baseline on this dataset"
    return f"test accuracy {gap} vs the baseline"


@dataclass(frozen=True)
class Reference:
    """A published accuracy on one of the catalog's datasets, shown beside ours, never run here."""

    dataset: str
    name: str  # who reported it
    model: str  # what was trained, as the source describes it
    accuracy: float
    measured: str = "test"  # "test", or what else the figure is (cross-validation, ...)
    params: str = "—"
    epochs: str = "—"
    approximate: bool = False  # the source gives "≈"

    def shown(self) -> str:
        figure = f"{'≈ ' if self.approximate else ''}{self.accuracy:g}"
        return figure if self.measured == "test" else f"{figure} ({self.measured})"


ZALANDO = "Zalando benchmark"
ZALANDO_LINK = "https://github.com/zalandoresearch/fashion-mnist#benchmark"
# The seeds' figures (SEEDS.md) and submitted results from Zalando's Fashion-MNIST benchmark
# table (test accuracy, not verified by Zalando), as published.
REFERENCES = (
    Reference(
        "fashion_mnist", "seed 000", "MLP 256-128, dropout 0.3", 0.87, epochs="10", approximate=True
    ),
    Reference(
        "fashion_mnist", "seed 001", "SGDClassifier (log loss)", 0.8196, measured="5-fold CV"
    ),
    Reference(
        "fashion_mnist", "seed 001", "softmax regression", 0.8494, measured="validation", epochs="5"
    ),
    Reference(
        "fashion_mnist",
        "seed 002",
        "Dense 100 (relu), Adam",
        0.8873,
        measured="training",
        epochs="5",
    ),
    Reference("fashion_mnist", ZALANDO, "2 conv + max pooling (TensorFlow)", 0.916, epochs="> 300"),
    Reference("fashion_mnist", ZALANDO, "2 conv, < 100K parameters", 0.925, params="< 100K"),
    Reference("fashion_mnist", ZALANDO, "2 conv + 3 dense", 0.932, params="1.8M"),
    Reference("fashion_mnist", ZALANDO, "ResNet-18, flips, translation, rotation", 0.949),
    Reference("fashion_mnist", ZALANDO, "WRN-40-4, random crops and flips", 0.967, params="8.9M"),
    Reference("mnist", "seed 003", "MLP 512", 0.977, epochs="30"),
    Reference("mnist", "seed 003", "CNN Conv32-Conv64-Dense128", 0.9928),
    Reference("mnist", "seed 004", "MLP 64-32", 0.97, epochs="30", approximate=True),
)


def leaderboard_table(results, baselines, references=REFERENCES) -> list[str]:
    """Our experiments ranked by test accuracy, with the published figures for their datasets
    (`references`) placed among them by accuracy, in italics and without a rank."""
    rows = [
        "| # | experiment | dataset | model | parameters | epochs (best) | test accuracy "
        "| macro F1 | vs baseline | training time |",
        "|--:|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    datasets = {result.metrics["dataset"] for result in results}
    pending = sorted(
        (ref for ref in references if ref.dataset in datasets), key=lambda ref: -ref.accuracy
    )
    for rank, result in enumerate(results, start=1):
        while pending and pending[0].accuracy > result.accuracy:
            rows.append(_reference_row(pending.pop(0)))
        rows.append(_result_row(rank, result, baselines))
    rows += [_reference_row(ref) for ref in pending]
    rows += [
        "",
        "*vs baseline*: test accuracy minus that of the best scikit-learn baseline "
        f"(`{BASELINE_MODEL}`) on the same dataset, in percentage points.",
    ]
    if any(ref.dataset in datasets for ref in references):
        rows += [
            "",
            "*ref*, in italics: published figures, not run here — the seed tutorials' own (a "
            "figure that is not a test accuracy says what it is) and submitted results of "
            f"[Zalando's Fashion-MNIST benchmark]({ZALANDO_LINK}), which Zalando has not verified.",
        ]
    return rows


def _result_row(rank: int, result: ExperimentResult, baselines) -> str:
    metrics = result.metrics
    name = f"{result.name} (baseline)" if result.is_baseline else result.name
    epochs = (
        f"{metrics['epochs_run']} iterations"
        if result.is_baseline
        else f"{metrics['epochs_run']} ({metrics['best_epoch']})"
    )
    return (
        f"| {rank} | {'**' + name + '**' if rank == 1 else name} | {metrics['dataset']} "
        f"| {metrics['model']} | {int(metrics['params_count']):,} | {epochs} "
        f"| {metrics['test_accuracy']:.4f} | {metrics['macro_f1']:.4f} "
        f"| {margin(result, baselines)} | {seconds(metrics['train_time_s'])} |"
    )


def _reference_row(ref: Reference) -> str:
    return (
        f"| ref | *{ref.name}* | {ref.dataset} | *{ref.model}* | {ref.params} | {ref.epochs} "
        f"| *{ref.shown()}* | — | — | — |"
    )


def mistakes_section(name: str, path: Path, dataset: str, root: Path, staging: Path) -> list[str]:
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
