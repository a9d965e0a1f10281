"""Split stage: a stratified, seeded train/validation split of the training set, as indices.

Only row indices into `x_train.npy` are written, so the split costs kilobytes and the arrays are
never copied. The test set is not read here at all. With `folds >= 2`, a fold id per training row
is written too (K-fold over the whole training set, stratified for classification) for
cross-validation.

Tabular datasets also get `standardize.json`: each feature's mean and standard deviation over the
training rows (`train_idx`) only. The model's first layer applies these z-scores to whatever it
is fed (validation, test, serving), so no statistic of the validation or test rows reaches the
model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_dir, atomic_write_json, read_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitSettings:
    val_fraction: float = 0.2
    folds: int = 0
    seed: int = 42


def split(*, prepared_dir: Path, out_dir: Path, settings: SplitSettings) -> dict:
    """Write `train_idx.npy`, `val_idx.npy` (and `folds.npy`, `standardize.json`) and
    `split.json` to `out_dir`."""
    labels_path = Path(prepared_dir) / "y_train.npy"
    if not labels_path.is_file():
        raise DataError(
            f"{labels_path} does not exist: run the preprocess stage first (`dvc repro`)."
        )
    meta_path = Path(prepared_dir) / "meta.json"
    meta = read_json(meta_path) if meta_path.is_file() else {"dataset": Path(prepared_dir).name}
    labels = np.load(labels_path)
    classify = meta.get("task", "classification") == "classification"
    n = len(labels)
    n_val = int(round(n * settings.val_fraction))
    if classify:
        _check_classification(labels, n_val, settings)
    elif n_val < 1 or n - n_val < 2:
        raise DataError(
            f"split.val_fraction={settings.val_fraction} leaves {n_val} validation and "
            f"{n - n_val} training rows out of {n}. Choose a fraction nearer 0.5."
        )
    if settings.folds > n:
        raise DataError(
            f"split.folds={settings.folds} is more than the {n} training rows of "
            f"{meta['dataset']!r}; lower it."
        )

    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    indices = np.arange(n)
    train_idx, val_idx = train_test_split(
        indices, test_size=n_val, random_state=settings.seed, stratify=labels if classify else None
    )
    summary = {
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "val_fraction": settings.val_fraction,
        "seed": settings.seed,
        "folds": settings.folds,
    }
    with atomic_dir(out_dir) as staging:
        np.save(staging / "train_idx.npy", np.sort(train_idx).astype(np.int64))
        np.save(staging / "val_idx.npy", np.sort(val_idx).astype(np.int64))
        if settings.folds:
            fold_of = np.empty(n, dtype=np.int8)
            kind = StratifiedKFold if classify else KFold
            splitter = kind(settings.folds, shuffle=True, random_state=settings.seed)
            for fold, (_, held) in enumerate(splitter.split(indices, labels)):
                fold_of[held] = fold
            np.save(staging / "folds.npy", fold_of)
        if meta.get("kind") == "tabular":
            features = np.load(Path(prepared_dir) / "x_train.npy", mmap_mode="r")
            atomic_write_json(
                staging / "standardize.json",
                standardize_stats(features[np.sort(train_idx)], meta.get("feature_names")),
            )
        atomic_write_json(staging / "split.json", summary)
    log.info("split: %d train / %d validation rows", len(train_idx), len(val_idx))
    return summary


def _check_classification(labels: np.ndarray, n_val: int, settings: SplitSettings) -> None:
    n = len(labels)
    classes = np.unique(labels)
    if n_val < len(classes) or n - n_val < len(classes):
        raise DataError(
            f"split.val_fraction={settings.val_fraction} leaves {n_val} validation and "
            f"{n - n_val} training rows out of {n}; each needs at least one row per class "
            f"({len(classes)}). Choose a fraction nearer 0.5."
        )
    if settings.folds and settings.folds > np.bincount(labels).min():
        raise DataError(
            f"split.folds={settings.folds} is more than the rows of the rarest class "
            f"({np.bincount(labels).min()}); lower it."
        )


def standardize_stats(features: np.ndarray, names: list[str] | None = None) -> dict:
    """Per-feature mean and standard deviation (a constant feature gets std 1, not 0)."""
    values = np.asarray(features, dtype=np.float64)
    std = values.std(axis=0)
    return {
        "features": list(names) if names else [f"x{i}" for i in range(values.shape[1])],
        "mean": [float(v) for v in values.mean(axis=0)],
        "std": [float(v) if v > 0 else 1.0 for v in std],
        "rows": int(len(values)),
        "computed_on": "train_idx",
    }
