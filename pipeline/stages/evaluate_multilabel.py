"""The multi-label branch of the evaluate stage: score a sigmoid-headed model on its test images.

The test images are streamed from disk through the same `tf.data` pipeline as training. A label
is predicted when its probability exceeds the experiment's `threshold` (params). Outputs:

- `metrics/<experiment>.json`: `subset_accuracy`, `hamming_loss`, micro/macro F1, micro precision
  and recall, per label `precision_<label>`/`recall_<label>`/`f1_<label>`, `test_loss` (binary
  cross-entropy), the best epoch's `val_loss`/`val_binary_accuracy`, `threshold` and the run's
  facts;
- `plots/<experiment>/`: `per_label.csv` (label, support, precision, recall, F1 and the 2×2
  counts tn/fp/fn/tp), `label_confusion.png` (one 2×2 matrix per label), `predictions.png` (test
  images with their true and predicted label sets) and `history.csv`.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.io import atomic_dir, atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

GRID_IMAGES = 16
PREDICT_BATCH = 256
DIGITS = 6


def evaluate_multilabel(experiment, name: str, train: dict, model_dir: Path, root: Path) -> dict:
    from pipeline.stages.evaluate import class_slug, load_keras_model, prepared_test_set, run_facts
    from pipeline.tasks.multilabel import (
        load_images_python,
        make_image_dataset,
        multilabel_metrics,
        per_label_confusion,
        plot_label_confusions,
        plot_prediction_grid,
        predicted_labels,
    )

    prepared, meta = prepared_test_set(experiment.dataset, root)
    names = tuple(meta["class_names"])
    size = int(meta["input_shape"][0])
    files = [str(prepared.absolute() / path) for path in np.load(prepared / "x_test.npy")]
    y_true = np.load(prepared / "y_test.npy")

    model = load_keras_model(model_dir / "best.keras")
    images = make_image_dataset(
        files, y_true, image_size=size, batch_size=PREDICT_BATCH, shuffle=False, seed=0
    ).map(lambda pixels, _: pixels)
    proba = np.asarray(model.predict(images, verbose=0), dtype=np.float64)
    y_pred = predicted_labels(proba, experiment.threshold)

    metrics = multilabel_metrics(y_true, proba, names, threshold=experiment.threshold)
    metrics |= {
        "val_loss": round(float(train["val_loss"]), DIGITS),
        "val_binary_accuracy": round(float(train["val_binary_accuracy"]), DIGITS),
        "threshold": experiment.threshold,
        **run_facts(experiment, train),
    }
    confusions = per_label_confusion(y_true, y_pred, names)
    with atomic_dir(root / paths.PLOTS_DIR / name) as staging:
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
        atomic_write_bytes(staging / "per_label.csv", buffer.getvalue().encode())
        plot_label_confusions(confusions, staging / "label_confusion.png")
        shown = min(GRID_IMAGES, len(files))
        plot_prediction_grid(
            load_images_python(files[:shown], size),
            y_true[:shown],
            y_pred[:shown],
            names,
            staging / "predictions.png",
        )
        atomic_write_bytes(staging / "history.csv", (model_dir / "history.csv").read_bytes())
    atomic_write_json(root / paths.METRICS_DIR / f"{name}.json", metrics)
    log.info(
        "%s: micro F1 %.4f, macro F1 %.4f, subset accuracy %.4f, Hamming loss %.4f on %d images",
        name,
        metrics["micro_f1"],
        metrics["macro_f1"],
        metrics["subset_accuracy"],
        metrics["hamming_loss"],
        len(files),
    )
    return metrics
