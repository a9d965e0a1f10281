"""What every task kind shares: metric keys of class names, a run's facts, the test set on disk."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.core import paths
from pipeline.core.errors import AtelierError, DataError
from pipeline.core.io import read_json


def class_slug(name: str) -> str:
    """`T-shirt/top` → `t_shirt_top`: a metric-key-safe form of a class name."""
    return re.sub(r"[^a-z0-9]", "_", name.lower())


def run_facts(experiment, train: dict) -> dict:
    """What every experiment's evaluation record says about its run, from its `train.json`.

    `cpu_isa` (and `gpu` on a GPU) name the hardware: runs on different hardware differ by
    noise, which the metric diff points out; `backend` the Keras backend that trained it.
    """
    facts = {
        "best_epoch": int(train["best_epoch"]),
        "epochs_run": int(train["epochs_run"]),
        "train_time_s": float(train["train_time_s"]),
        "params_count": int(train["params_count"]),
        "device": str(train["device"]),
        "model": experiment.model.name,
        "dataset": experiment.dataset,
        "task": experiment.task,
    }
    for key in ("backend", "cpu_isa", "gpu"):
        if train.get(key):
            facts[key] = str(train[key])
    return facts


def prepared_test_set(dataset: str, root: Path) -> tuple[Path, dict]:
    """The prepared directory of `dataset` and its meta, once its test arrays are known to exist."""
    prepared = paths.prepared_dir(dataset, root)
    needed = [prepared / name for name in ("x_test.npy", "y_test.npy", "meta.json")]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise DataError(
            f"The test set of {dataset!r} is missing ({', '.join(missing)}): run "
            f"`dvc repro preprocess@{dataset}` first."
        )
    return prepared, read_json(prepared / "meta.json")


def per_class_metrics(names, precision, recall, f1, *, what: str) -> dict:
    """`precision_<slug>`, `recall_<slug>`, `f1_<slug>` per class (or label) name."""
    slugs = [class_slug(name) for name in names]
    if len(set(slugs)) != len(slugs):
        raise AtelierError(
            f"{what} names {tuple(names)} give duplicate metric keys {slugs}: make them differ "
            "in letters or digits, not only in punctuation or case."
        )
    metrics = {}
    for index, slug in enumerate(slugs):
        metrics[f"precision_{slug}"] = precision[index]
        metrics[f"recall_{slug}"] = recall[index]
        metrics[f"f1_{slug}"] = f1[index]
    return metrics


def without_per_class(metrics: dict, names) -> dict:
    """`metrics` less the per-class keys of `per_class_metrics`: what the evaluation record
    holds; the per-class figures stay in the plots directory (`classification_report.json`,
    `per_label.csv`)."""
    slugs = {class_slug(name) for name in names}
    per_class = {f"{kind}_{slug}" for kind in ("precision", "recall", "f1") for slug in slugs}
    return {key: value for key, value in metrics.items() if key not in per_class}
