"""Preprocess stage: decode the raw files into memory-mappable `.npy` arrays.

Images stay `uint8`: scaling to [0, 1] or standardisation happens inside the model, so the
prepared copy of Fashion-MNIST is 55 MB rather than 441 MB of float64, and a saved model takes
the same raw pixels at serving time. Tabular features stay raw `float32` too: their z-scores use
statistics of the training rows only, computed by the split stage and applied by the model.
Datasets that publish no test set get one held out here, seeded (stratified for
classification), before any later stage sees the data.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_dir, atomic_write_json
from pipeline.data.catalog import DatasetSpec
from pipeline.data.samples import class_sample_indices

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessSettings:
    seed: int = 42
    test_fraction: float = 0.2


def preprocess(
    spec: DatasetSpec,
    *,
    raw_dir: Path,
    out_dir: Path,
    settings: PreprocessSettings,
    overview_dir: Path | None = None,
) -> dict:
    """Write x_train/y_train/x_test/y_test `.npy` and `meta.json` to `out_dir`; return the meta.

    With `overview_dir`, also write there what the report shows of the dataset (see
    `write_overview`), so that the report depends on a few kilobytes, not on the data.
    """
    if not Path(raw_dir).is_dir():
        raise DataError(
            f"{raw_dir} does not exist: run the download stage first "
            f"(`dvc repro download@{spec.name}`)."
        )
    if spec.kind == "image_files":
        meta = _preprocess_image_files(spec, Path(raw_dir), Path(out_dir), settings)
    elif spec.extra.get("generator") == "garments":
        meta = _preprocess_garments(spec, Path(raw_dir), Path(out_dir), settings)
    else:
        meta = _preprocess_arrays(spec, Path(raw_dir), Path(out_dir), settings)
    if overview_dir is not None:
        write_overview(meta, Path(out_dir), Path(overview_dir))
    return meta


def write_overview(meta: dict, prepared_dir: Path, out_dir: Path) -> None:
    """`meta.json`, and for image arrays `samples.npz` (x, y: the training images that the
    report's class mosaic shows, chosen by `class_sample_indices`)."""
    with atomic_dir(out_dir) as staging:
        atomic_write_json(staging / "meta.json", meta)
        if meta["kind"] == "images" and meta["task"] == "classification":
            y = np.load(prepared_dir / "y_train.npy")
            x = np.load(prepared_dir / "x_train.npy", mmap_mode="r")
            rows = np.concatenate(class_sample_indices(y, int(meta["num_classes"])))
            np.savez(staging / "samples.npz", x=np.asarray(x[rows]), y=y[rows])


def _preprocess_arrays(
    spec: DatasetSpec, raw_dir: Path, out_dir: Path, settings: PreprocessSettings
) -> dict:
    arrays = spec.reader(Path(raw_dir))
    check = _check_regression if spec.task == "regression" else _check
    x_train, y_train = check(arrays.x_train, arrays.y_train, spec, "train")
    if arrays.x_test is None:
        stratify = spec.task == "classification"
        x_train, y_train, x_test, y_test = _hold_out_test(x_train, y_train, settings, stratify)
        test_source = f"held out: test_fraction={settings.test_fraction}, seed={settings.seed}"
    else:
        x_test, y_test = check(arrays.x_test, arrays.y_test, spec, "test")
        test_source = spec.extra.get("test_source", "published")
    meta = {
        "dataset": spec.name,
        "kind": spec.kind,
        "task": spec.task,
        "class_names": list(spec.class_names),
        "num_classes": spec.num_classes,
        "input_shape": list(x_train.shape[1:]),
        "value_max": spec.value_max,
        "n_train": int(len(x_train)),
        "n_test": int(len(x_test)),
        "test_source": test_source,
    }
    if spec.kind == "tabular":
        meta |= {"feature_names": list(spec.feature_names), "target_name": spec.target_name}
    _write_prepared(out_dir, (x_train, y_train, x_test, y_test), meta)
    log.info("%s: %d train, %d test rows in %s", spec.name, len(x_train), len(x_test), out_dir)
    return meta


def _write_prepared(out_dir: Path, arrays: tuple, meta: dict) -> None:
    """`out_dir`, whole or not at all: `x_train`, `y_train`, `x_test`, `y_test` (`.npy`, in that
    order in `arrays`) and `meta.json`."""
    with atomic_dir(out_dir) as staging:
        for name, array in zip(("x_train", "y_train", "x_test", "y_test"), arrays, strict=True):
            np.save(staging / f"{name}.npy", np.ascontiguousarray(array))
        atomic_write_json(staging / "meta.json", meta)


def _check(x: np.ndarray, y: np.ndarray | None, spec: DatasetSpec, part: str):
    if y is None or len(x) != len(y):
        raise DataError(
            f"{spec.name}: {part} images and labels differ in length "
            f"({len(x)} vs {None if y is None else len(y)}); the raw files do not belong together."
        )
    if x.dtype != np.uint8:
        raise DataError(f"{spec.name}: {part} images are {x.dtype}, expected uint8.")
    labels = np.asarray(y, dtype=np.uint8)
    if labels.size and int(labels.max()) >= spec.num_classes:
        raise DataError(
            f"{spec.name}: {part} label {int(labels.max())} is outside 0..{spec.num_classes - 1}."
        )
    return x, labels


def _check_regression(x: np.ndarray, y: np.ndarray | None, spec: DatasetSpec, part: str):
    if y is None or len(x) != len(y):
        raise DataError(
            f"{spec.name}: {part} features and targets differ in length "
            f"({len(x)} vs {None if y is None else len(y)}); the raw files do not belong together."
        )
    if x.ndim != 2 or x.shape[1] != len(spec.feature_names):
        raise DataError(
            f"{spec.name}: {part} features have shape {x.shape}, expected "
            f"(rows, {len(spec.feature_names)}) for {', '.join(spec.feature_names)}."
        )
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataError(f"{spec.name}: {part} rows hold NaN or infinite values.")
    return x, y


def _hold_out_test(x: np.ndarray, y: np.ndarray, settings: PreprocessSettings, stratify: bool):
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        x,
        y,
        test_size=settings.test_fraction,
        random_state=settings.seed,
        stratify=y if stratify else None,
    )
    return x_train, y_train, x_test, y_test


# --- multi-label image files ---------------------------------------------------------------------


def _preprocess_image_files(
    spec: DatasetSpec, raw_dir: Path, out_dir: Path, settings: PreprocessSettings
) -> dict:
    """Images stay files: `images/` plus `x_{train,test}.npy` (paths relative to `out_dir`) and
    `y_{train,test}.npy` (N × labels, 0/1). The copied label table (`apparel`) is checked, and
    its test rows held out, seeded."""
    from pipeline.data.labels import read_label_table

    with atomic_dir(out_dir) as staging:
        table = read_label_table(raw_dir / spec.extra["label_csv"], spec.class_names)
        shutil.copytree(raw_dir / "images", staging / "images")
        rel_paths = [str(Path(path).relative_to(raw_dir.absolute())) for path in table.paths]
        order = np.random.default_rng(settings.seed).permutation(len(rel_paths))
        n_train = len(order) - int(round(len(order) * settings.test_fraction))
        rel_paths = [rel_paths[i] for i in order]
        labels = table.labels[order]
        test_source = f"held out: test_fraction={settings.test_fraction}, seed={settings.seed}"
        paths_array = np.asarray(rel_paths, dtype=np.str_)
        np.save(staging / "x_train.npy", paths_array[:n_train])
        np.save(staging / "y_train.npy", labels[:n_train].astype(np.uint8))
        np.save(staging / "x_test.npy", paths_array[n_train:])
        np.save(staging / "y_test.npy", labels[n_train:].astype(np.uint8))
        meta = _multilabel_meta(
            spec, labels[:n_train], n_test=len(paths_array) - n_train, test_source=test_source
        )
        atomic_write_json(staging / "meta.json", meta)
    log.info(
        "%s: %d train, %d test images in %s", spec.name, meta["n_train"], meta["n_test"], out_dir
    )
    return meta


def _preprocess_garments(
    spec: DatasetSpec, raw_dir: Path, out_dir: Path, settings: PreprocessSettings
) -> dict:
    """Coloured garments rendered from Fashion-MNIST's training and test images (each to its own
    part, seeded) as arrays: `x_*` uint8 (N, S, S, 3), `y_*` 0/1 (N, labels). Arrays, not
    7,000 image files: every stage that reads the set, and every `dvc status`, checks one file
    per array instead of one per image."""
    from pipeline.data.catalog import read_idx_dataset
    from pipeline.data.garments import LABELS, render_set

    if tuple(LABELS) != tuple(spec.class_names):
        raise DataError(f"garments labels {LABELS} differ from the catalog's {spec.class_names}.")
    source = read_idx_dataset(raw_dir)
    size = int(spec.extra["image_size"])
    x_train, y_train = render_set(
        source.x_train, source.y_train, n=spec.extra["n_train"], seed=settings.seed,
        image_size=size,
    )  # fmt: skip
    x_test, y_test = render_set(
        source.x_test, source.y_test, n=spec.extra["n_test"], seed=settings.seed + 1,
        image_size=size,
    )  # fmt: skip
    meta = _multilabel_meta(spec, y_train, n_test=len(x_test), test_source="generated")
    _write_prepared(out_dir, (x_train, y_train, x_test, y_test), meta)
    log.info("%s: %d train, %d test images in %s", spec.name, len(x_train), len(x_test), out_dir)
    return meta


def _multilabel_meta(spec: DatasetSpec, y_train: np.ndarray, *, n_test: int, test_source: str):
    """`meta.json` of a multi-label set of `spec.extra["image_size"]`-pixel RGB images."""
    size = int(spec.extra["image_size"])
    return {
        "dataset": spec.name,
        "kind": spec.kind,
        "task": spec.task,
        "class_names": list(spec.class_names),
        "num_classes": spec.num_classes,
        "input_shape": [size, size, 3],
        "value_max": spec.value_max,
        "n_train": len(y_train),
        "n_test": int(n_test),
        "test_source": test_source,
        "label_counts_train": [int(v) for v in y_train.sum(axis=0)],
    }
