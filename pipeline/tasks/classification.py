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


def leaderboard_table(results, baselines) -> list[str]:
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
            f"| {margin(result, baselines)} | {seconds(metrics['train_time_s'])} |"
        )
    rows += [
        "",
        "*vs baseline*: test accuracy minus that of the best scikit-learn baseline "
        f"(`{BASELINE_MODEL}`) on the same dataset, in percentage points.",
    ]
    return rows


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
