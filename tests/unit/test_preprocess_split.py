"""Preprocess and split stages on tiny generated data, digits, and the real Fashion-MNIST mirror."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.data.catalog import CATALOG, DIGITS, FASHION_MNIST
from pipeline.stages.download import DownloadSettings, download
from pipeline.stages.preprocess import PreprocessSettings, preprocess
from pipeline.stages.split import SplitSettings, split

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def load(directory: Path) -> dict[str, np.ndarray]:
    return {path.stem: np.load(path) for path in sorted(directory.glob("*.npy"))}


# --- preprocess ---------------------------------------------------------------------------------


def test_preprocess_idx_keeps_uint8_and_writes_meta(idx, tmp_path):
    files = idx.dataset(n_train=50, n_test=20, image_shape=(28, 28))
    raw = idx.write(tmp_path / "raw", files)
    out = tmp_path / "prepared"

    meta = preprocess(idx.spec(files, []), raw_dir=raw, out_dir=out, settings=PreprocessSettings())

    arrays = load(out)
    assert sorted(arrays) == ["x_test", "x_train", "y_test", "y_train"]
    assert arrays["x_train"].shape == (50, 28, 28)
    assert arrays["x_test"].shape == (20, 28, 28)
    assert arrays["y_train"].shape == (50,)
    assert {array.dtype for array in arrays.values()} == {np.dtype(np.uint8)}
    np.testing.assert_array_equal(arrays["x_train"], files["train-images-idx3-ubyte.gz"].array)
    np.testing.assert_array_equal(arrays["y_test"], files["t10k-labels-idx1-ubyte.gz"].array)
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta == {
        "dataset": "tiny",
        "kind": "images",
        "task": "classification",
        "class_names": [str(digit) for digit in range(10)],
        "num_classes": 10,
        "input_shape": [28, 28],
        "value_max": 255,
        "n_train": 50,
        "n_test": 20,
        "test_source": "published",
    }
    assert sorted(path.name for path in tmp_path.iterdir()) == ["prepared", "raw"]


def test_preprocess_arrays_are_memory_mappable(idx, tmp_path):
    files = idx.dataset()
    raw = idx.write(tmp_path / "raw", files)
    preprocess(
        idx.spec(files, []), raw_dir=raw, out_dir=tmp_path / "out", settings=PreprocessSettings()
    )
    mapped = np.load(tmp_path / "out" / "x_train.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    assert mapped.shape == (60, 4, 4)


@pytest.fixture(scope="module")
def digits_raw(tmp_path_factory) -> Path:
    """digits.csv.gz fetched through the catalog (scikit-learn's bundled copy), verified."""
    out = tmp_path_factory.mktemp("digits") / "raw"
    return download(DIGITS, out, DownloadSettings(retries=0))


def test_preprocess_digits_holds_out_a_stratified_test_set(digits_raw, tmp_path):
    settings = PreprocessSettings(seed=7, test_fraction=0.2)
    meta = preprocess(DIGITS, raw_dir=digits_raw, out_dir=tmp_path / "p", settings=settings)

    arrays = load(tmp_path / "p")
    assert meta["n_train"] + meta["n_test"] == 1797
    assert meta["n_test"] == 360  # ceil(0.2 * 1797)
    assert meta["test_source"] == "held out: test_fraction=0.2, seed=7"
    assert meta["input_shape"] == [8, 8]
    assert meta["value_max"] == 16
    assert arrays["x_train"].dtype == np.uint8
    assert int(arrays["x_train"].max()) == 16
    train_share = np.bincount(arrays["y_train"], minlength=10) / meta["n_train"]
    test_share = np.bincount(arrays["y_test"], minlength=10) / meta["n_test"]
    np.testing.assert_allclose(test_share, train_share, atol=0.01)


def test_preprocess_digits_is_seeded(digits_raw, tmp_path):
    def run(seed: int, name: str) -> dict[str, np.ndarray]:
        settings = PreprocessSettings(seed=seed)
        preprocess(DIGITS, raw_dir=digits_raw, out_dir=tmp_path / name, settings=settings)
        return load(tmp_path / name)

    first, again, other = run(1, "a"), run(1, "b"), run(2, "c")
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["y_test"], other["y_test"])


def test_preprocess_truncated_idx_payload(idx, tmp_path):
    files = idx.dataset()
    raw = idx.write(tmp_path / "raw", files)
    images = "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(files[images].gz)
    (raw / images).write_bytes(gzip.compress(payload[:-10]))  # a valid gzip of a short payload
    out = tmp_path / "prepared"

    with pytest.raises(DataError) as caught:
        preprocess(idx.spec(files, []), raw_dir=raw, out_dir=out, settings=PreprocessSettings())

    assert str(caught.value) == (
        f"{raw / images}: IDX header says shape (60, 4, 4) (960 bytes) but the file holds "
        "950 bytes; the file is truncated or corrupt."
    )
    assert not out.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["raw"]


def test_preprocess_without_raw_data(idx, tmp_path):
    with pytest.raises(DataError, match="does not exist: run the download stage first"):
        preprocess(
            idx.spec(idx.dataset(), []),
            raw_dir=tmp_path / "missing",
            out_dir=tmp_path / "out",
            settings=PreprocessSettings(),
        )


def test_preprocess_labels_outside_the_classes(idx, tmp_path):
    files = idx.dataset()
    raw = idx.write(tmp_path / "raw", files)
    labels = np.full(60, 12, dtype=np.uint8)
    bad = idx.make("train-labels-idx1-ubyte.gz", labels)
    (raw / bad.name).write_bytes(bad.gz)

    with pytest.raises(DataError, match=r"tiny: train label 12 is outside 0\.\.9\."):
        preprocess(
            idx.spec(files, []),
            raw_dir=raw,
            out_dir=tmp_path / "out",
            settings=PreprocessSettings(),
        )


# --- split --------------------------------------------------------------------------------------


def prepared_labels(directory: Path, labels: np.ndarray) -> Path:
    """A prepared directory holding only y_train.npy: all that split may read."""
    directory.mkdir(parents=True)
    np.save(directory / "y_train.npy", labels.astype(np.uint8))
    return directory


@pytest.fixture
def imbalanced(tmp_path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(3), [500, 300, 200]))
    return prepared_labels(tmp_path / "prepared", labels), labels


def test_split_is_stratified_disjoint_and_complete(imbalanced, tmp_path):
    prepared, labels = imbalanced
    summary = split(
        prepared_dir=prepared, out_dir=tmp_path / "split", settings=SplitSettings(val_fraction=0.2)
    )

    train, val = np.load(tmp_path / "split/train_idx.npy"), np.load(tmp_path / "split/val_idx.npy")
    assert summary == {"n_train": 800, "n_val": 200, "val_fraction": 0.2, "seed": 42, "folds": 0}
    assert json.loads((tmp_path / "split/split.json").read_text()) == summary
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))
    np.testing.assert_allclose(np.bincount(labels[val]) / 200, [0.5, 0.3, 0.2], atol=0.01)
    assert not (tmp_path / "split/folds.npy").exists()


def test_split_is_seeded(imbalanced, tmp_path):
    prepared, _ = imbalanced

    def val_idx(seed: int, name: str) -> np.ndarray:
        split(prepared_dir=prepared, out_dir=tmp_path / name, settings=SplitSettings(seed=seed))
        return np.load(tmp_path / name / "val_idx.npy")

    np.testing.assert_array_equal(val_idx(3, "a"), val_idx(3, "b"))
    assert not np.array_equal(val_idx(3, "a"), val_idx(4, "c"))


def test_split_folds(imbalanced, tmp_path):
    prepared, labels = imbalanced
    split(prepared_dir=prepared, out_dir=tmp_path / "split", settings=SplitSettings(folds=3))

    folds = np.load(tmp_path / "split/folds.npy")
    assert folds.shape == (1000,)
    assert sorted(np.unique(folds)) == [0, 1, 2]
    for fold in range(3):
        members = labels[folds == fold]
        assert abs(len(members) - 1000 / 3) <= 3
        np.testing.assert_allclose(np.bincount(members) / len(members), [0.5, 0.3, 0.2], atol=0.01)


def test_split_folds_are_seeded(imbalanced, tmp_path):
    prepared, _ = imbalanced

    def folds(seed: int, name: str) -> np.ndarray:
        settings = SplitSettings(folds=3, seed=seed)
        split(prepared_dir=prepared, out_dir=tmp_path / name, settings=settings)
        return np.load(tmp_path / name / "folds.npy")

    np.testing.assert_array_equal(folds(5, "a"), folds(5, "b"))
    assert not np.array_equal(folds(5, "a"), folds(6, "c"))


def test_split_never_reads_the_test_set(digits_raw, tmp_path):
    prepared = tmp_path / "prepared"
    preprocess(DIGITS, raw_dir=digits_raw, out_dir=prepared, settings=PreprocessSettings())
    for name in ("x_test.npy", "y_test.npy"):
        (prepared / name).unlink()

    summary = split(prepared_dir=prepared, out_dir=tmp_path / "split", settings=SplitSettings())

    assert summary["n_train"] + summary["n_val"] == 1437


def test_split_fraction_too_large_for_tiny_data(tmp_path):
    prepared = prepared_labels(tmp_path / "prepared", np.arange(12) % 3)
    out = tmp_path / "split"

    with pytest.raises(DataError) as caught:
        split(prepared_dir=prepared, out_dir=out, settings=SplitSettings(val_fraction=0.9))

    assert str(caught.value) == (
        "split.val_fraction=0.9 leaves 11 validation and 1 training rows out of 12; each needs "
        "at least one row per class (3). Choose a fraction nearer 0.5."
    )
    assert not out.exists()


def test_split_more_folds_than_the_rarest_class(tmp_path):
    prepared = prepared_labels(tmp_path / "prepared", np.array([0] * 10 + [1] * 2))
    with pytest.raises(DataError, match=r"split\.folds=3 is more than the rows of the rarest"):
        split(prepared_dir=prepared, out_dir=tmp_path / "split", settings=SplitSettings(folds=3))


def test_split_without_prepared_data(tmp_path):
    with pytest.raises(DataError, match=r"y_train\.npy does not exist: run the preprocess stage"):
        split(prepared_dir=tmp_path, out_dir=tmp_path / "split", settings=SplitSettings())


# --- the catalog --------------------------------------------------------------------------------


def test_catalog_names():
    assert sorted(CATALOG) == [
        "apparel",
        "boston_housing",
        "diabetes",
        "digits",
        "fashion_mnist",
        "garments",
        "mnist",
    ]
    assert FASHION_MNIST.sources[0] == str(DEBIAN_FASHION_MNIST)


def test_fashion_mnist_from_the_debian_mirror_matches_the_pinned_hashes(tmp_path):
    # Only the local mirror: a hash mismatch must fail here, not fall through to the internet.
    spec = replace(FASHION_MNIST, sources=(str(DEBIAN_FASHION_MNIST),))
    out = download(spec, tmp_path / "raw", DownloadSettings(retries=0))

    assert sorted(path.name for path in out.iterdir()) == sorted(f.name for f in spec.files)
    arrays = spec.reader(out)
    assert arrays.x_train.shape == (60000, 28, 28)
    assert arrays.x_test.shape == (10000, 28, 28)
