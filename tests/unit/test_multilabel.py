"""Multi-label building blocks on real files: the label table's checks and their messages, the
`tf.data` stream (shapes, image–label pairing with and without shuffling, reading at iteration
time, PNG and JPEG), the metrics against hand-computed values, and the figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import DataError
from pipeline.data.labels import LabelTable, load_images_python, read_label_table
from pipeline.figures.multilabel import (
    plot_label_confusions,
    plot_prediction_grid,
    prediction_captions,
)
from pipeline.modeling.inputs import make_image_dataset
from pipeline.tasks.multilabel import multilabel_metrics, per_label_confusion, predicted_labels

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NAMES = ("red", "blue", "shirt")
BITS = 6  # the pairing tests encode an image's index in 6 label bits and in its pixels
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_table(directory: Path, rows: list[list], header: list[str] | None = None) -> Path:
    header = header or ["image", *NAMES]
    lines = [",".join(header)] + [",".join(str(value) for value in row) for row in rows]
    path = directory / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def small_image(path: Path, value: int = 100, size: int = 8, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": (size, size, 3), "L": (size, size), "RGBA": (size, size, 4)}[mode]
    Image.fromarray(np.full(channels, value, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def table_dir(tmp_path) -> Path:
    for index in range(3):
        small_image(tmp_path / "images" / f"{index}.png", value=40 * index)
    return tmp_path


# --- the label table ----------------------------------------------------------------------------


def test_a_good_table_reads_with_paths_resolved_against_the_csv(table_dir, tmp_path_factory):
    elsewhere = small_image(tmp_path_factory.mktemp("abs") / "x.png")
    csv_path = write_table(
        table_dir,
        [["images/0.png", 1, 0, 1], ["images/1.png", 0, 1, 0], [str(elsewhere), 1, 1, 0]],
    )
    table = read_label_table(csv_path)
    assert isinstance(table, LabelTable)
    assert table.label_names == NAMES
    assert table.paths == [
        str(table_dir / "images/0.png"),
        str(table_dir / "images/1.png"),
        str(elsewhere),
    ]
    assert table.labels.dtype == np.uint8
    assert table.labels.tolist() == [[1, 0, 1], [0, 1, 0], [1, 1, 0]]

    chosen = read_label_table(csv_path, label_names=["shirt", "red"])
    assert chosen.label_names == ("shirt", "red")
    assert chosen.labels.tolist() == [[1, 1], [0, 0], [0, 1]]


def test_a_missing_label_column_is_named(table_dir):
    csv_path = write_table(table_dir, [["images/0.png", 1, 0, 1]])
    with pytest.raises(DataError) as caught:
        read_label_table(csv_path, label_names=["red", "green", "shirt", "shoes"])
    message = str(caught.value)
    assert str(csv_path) in message
    assert "green, shoes" in message and "missing" in message


def test_no_image_column_and_an_empty_table_are_refused(table_dir):
    csv_path = write_table(table_dir, [["images/0.png", 1, 0, 1]], header=["path", *NAMES])
    with pytest.raises(DataError, match="no `image` column"):
        read_label_table(csv_path)
    csv_path = write_table(table_dir, [])
    with pytest.raises(DataError, match="no rows"):
        read_label_table(csv_path)
    csv_path.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_label_table(csv_path)


def test_a_missing_image_names_its_row(table_dir):
    rows = [["images/0.png", 1, 0, 1], ["images/1.png", 0, 1, 0], ["images/gone.png", 0, 0, 1]]
    csv_path = write_table(table_dir, rows)
    with pytest.raises(DataError) as caught:
        read_label_table(csv_path)
    message = str(caught.value)
    assert str(csv_path) in message
    assert "row 3 (line 4)" in message
    assert "gone.png does not exist" in message


@pytest.mark.parametrize("bad", ["2", "x", "-1", "0.5"])
def test_a_label_that_is_not_0_or_1_names_row_column_and_value(table_dir, bad):
    csv_path = write_table(table_dir, [["images/0.png", 1, 0, 1], ["images/1.png", 0, bad, 0]])
    with pytest.raises(DataError) as caught:
        read_label_table(csv_path)
    message = str(caught.value)
    assert str(csv_path) in message
    assert f"row 2 (line 3): column 'blue': value '{bad}' is not 0 or 1" in message


def test_every_row_is_checked_and_the_first_problems_listed(table_dir):
    rows = [[f"images/missing{index}.png", 1, 0, 9] for index in range(10)]
    with pytest.raises(DataError) as caught:
        read_label_table(write_table(table_dir, rows))
    message = str(caught.value)
    assert "20 problem(s)" in message
    assert "row 1 (line 2)" in message and "row 3 (line 4)" in message
    assert "row 10" not in message and "and 15 more" in message


# --- the tf.data stream -------------------------------------------------------------------------


def bits(index: int) -> list[int]:
    return [(index >> bit) & 1 for bit in range(BITS)]


@pytest.fixture(scope="module")
def indexed_images(tmp_path_factory) -> tuple[list[str], np.ndarray]:
    """Image i is flat grey 4·i; its labels are the bits of i: the pairing is checkable."""
    directory = tmp_path_factory.mktemp("indexed")
    paths = [str(small_image(directory / f"{i:03d}.png", value=4 * i)) for i in range(37)]
    labels = np.array([bits(index) for index in range(37)], dtype=np.uint8)
    return paths, labels


def decode_indices(images: np.ndarray, labels: np.ndarray) -> tuple[list[int], list[int]]:
    from_pixels = [int(round(image.mean() / 4)) for image in images]
    from_labels = [
        int(sum(int(bit) << position for position, bit in enumerate(row))) for row in labels
    ]
    return from_pixels, from_labels


def one_epoch(dataset) -> tuple[list[int], list[int]]:
    from_pixels, from_labels = [], []
    for images, labels in dataset:
        pixels, bits_ = decode_indices(images.numpy(), labels.numpy())
        from_pixels += pixels
        from_labels += bits_
    return from_pixels, from_labels


def test_shapes_dtypes_and_order_without_shuffle(indexed_images):
    import tensorflow as tf

    paths, labels = indexed_images
    dataset = make_image_dataset(paths, labels, image_size=12, batch_size=8, shuffle=False, seed=0)
    assert dataset.element_spec[0].dtype == tf.uint8
    assert dataset.element_spec[1].dtype == tf.float32
    batches = list(dataset)
    assert [len(images) for images, _ in batches] == [8, 8, 8, 8, 5]
    images, batch_labels = batches[0]
    assert images.shape == (8, 12, 12, 3) and images.dtype == tf.uint8
    assert batch_labels.shape == (8, BITS) and batch_labels.dtype == tf.float32
    from_pixels, from_labels = one_epoch(dataset)
    assert from_pixels == from_labels == list(range(37))


def test_shuffle_keeps_pairs_reshuffles_each_epoch_and_repeats_with_the_seed(indexed_images):
    paths, labels = indexed_images
    dataset = make_image_dataset(paths, labels, image_size=8, batch_size=10, shuffle=True, seed=7)
    first_pixels, first_labels = one_epoch(dataset)
    second_pixels, second_labels = one_epoch(dataset)
    assert first_pixels == first_labels and second_pixels == second_labels
    assert sorted(first_pixels) == sorted(second_pixels) == list(range(37))
    assert first_pixels != list(range(37))
    assert first_pixels != second_pixels

    same_seed = make_image_dataset(paths, labels, image_size=8, batch_size=10, shuffle=True, seed=7)
    assert one_epoch(same_seed)[0] == first_pixels


def test_images_are_read_when_iterated_not_when_built(tmp_path):
    paths = [str(small_image(tmp_path / f"{i}.png", value=10)) for i in range(3)]
    dataset = make_image_dataset(
        paths, np.eye(3, dtype=np.uint8), image_size=8, batch_size=3, shuffle=False, seed=0
    )
    first = next(iter(dataset))[0].numpy()
    small_image(tmp_path / "1.png", value=200)
    second = next(iter(dataset))[0].numpy()
    assert first[1].max() == 10 and second[1].min() == 200
    assert np.array_equal(first[[0, 2]], second[[0, 2]])


def test_png_jpeg_grey_and_rgba_decode_to_rgb_like_pillow(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, size=(4, 4, 3)), np.ones((5, 5, 1))).astype(np.uint8)
    paths = []
    for name, image in (
        ("colour.png", Image.fromarray(smooth)),
        ("colour.jpg", Image.fromarray(smooth)),
        ("grey.png", Image.fromarray(smooth[..., 0])),
        ("alpha.png", Image.fromarray(np.dstack([smooth, np.full((20, 20), 255, np.uint8)]))),
        ("wide.jpg", Image.fromarray(np.repeat(smooth, 2, axis=1))),
    ):
        image.save(tmp_path / name)
        paths.append(str(tmp_path / name))
    with Image.open(tmp_path / "colour.jpg") as image:
        assert image.format == "JPEG"

    dataset = make_image_dataset(
        paths, np.zeros((5, 2), np.uint8), image_size=40, batch_size=5, shuffle=False, seed=0
    )
    images = next(iter(dataset))[0].numpy()
    reference = load_images_python(paths, 40)
    assert images.shape == reference.shape == (5, 40, 40, 3)
    assert reference.dtype == np.uint8
    difference = np.abs(images.astype(np.int16) - reference.astype(np.int16))
    # Bilinear upscaling in both; JPEG decoders (libjpeg-turbo settings) may differ slightly.
    assert difference[[0, 2, 3]].max() <= 2, difference.max(axis=(1, 2, 3))
    assert difference.mean() < 2.0
    assert np.array_equal(images[2][..., 0], images[2][..., 1])  # grey → three equal channels


# --- metrics ------------------------------------------------------------------------------------

Y_TRUE = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
PROBA = np.array(
    [
        [0.9, 0.1, 0.8],  # right
        [0.0, 1.0, 0.6],  # + shirt (false positive)
        [0.7, 0.5, 0.2],  # - blue: 0.5 is not above the threshold (false negative)
        [0.3, 0.2, 0.4],  # - shirt (false negative)
    ]
)


def test_metrics_match_hand_computed_values():
    metrics = multilabel_metrics(Y_TRUE, PROBA, NAMES)
    # per label: red tp2 (P 1, R 1), blue tp1 fn1 (P 1, R 1/2), shirt tp1 fp1 fn1 (P 1/2, R 1/2)
    expected = {
        "subset_accuracy": 0.25,
        "hamming_loss": 3 / 12,
        "micro_precision": 4 / 5,
        "micro_recall": 4 / 6,
        "micro_f1": 8 / 11,
        "macro_f1": (1 + 2 / 3 + 1 / 2) / 3,
        "precision_red": 1.0,
        "recall_red": 1.0,
        "f1_red": 1.0,
        "precision_blue": 1.0,
        "recall_blue": 0.5,
        "f1_blue": 2 / 3,
        "precision_shirt": 0.5,
        "recall_shirt": 0.5,
        "f1_shirt": 0.5,
    }
    clipped = np.clip(PROBA, 1e-7, 1 - 1e-7)
    expected["test_loss"] = float(
        -np.mean(Y_TRUE * np.log(clipped) + (1 - Y_TRUE) * np.log(1 - clipped))
    )
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
        assert isinstance(metrics[key], float)
        assert metrics[key] == round(metrics[key], 6)
    assert np.isfinite(metrics["test_loss"])  # probabilities 0 and 1 are clipped


def test_the_threshold_is_respected():
    assert predicted_labels(PROBA).tolist() == [[1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 0]]
    low = multilabel_metrics(Y_TRUE, PROBA, NAMES, threshold=0.45)  # blue 0.5 is now predicted
    assert low["recall_blue"] == 1.0 and low["hamming_loss"] == pytest.approx(2 / 12, abs=1e-6)
    high = multilabel_metrics(Y_TRUE, PROBA, NAMES, threshold=0.85)  # only 0.9 and 1.0 remain
    assert high["micro_recall"] == pytest.approx(2 / 6, abs=1e-6)
    assert high["micro_precision"] == 1.0
    assert high["precision_shirt"] == 0.0  # never predicted: zero_division=0, no warning
    with pytest.raises(ValueError, match="threshold"):
        multilabel_metrics(Y_TRUE, PROBA, NAMES, threshold=1.0)


def test_per_label_confusion_counts():
    confusions = per_label_confusion(Y_TRUE, predicted_labels(PROBA), NAMES)
    assert list(confusions) == list(NAMES)
    assert confusions["red"] == {"tn": 2, "fp": 0, "fn": 0, "tp": 2}
    assert confusions["blue"] == {"tn": 2, "fp": 0, "fn": 1, "tp": 1}
    assert confusions["shirt"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 1}
    assert all(sum(counts.values()) == len(Y_TRUE) for counts in confusions.values())


def test_shape_mismatch_is_an_error():
    from pipeline.core.errors import AtelierError

    with pytest.raises(AtelierError, match="trained on other labels"):
        multilabel_metrics(Y_TRUE, PROBA[:, :2], NAMES)


# --- figures ------------------------------------------------------------------------------------


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 2000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.size[0] > 200 and image.size[1] > 150


def test_prediction_captions_name_both_label_sets_and_mark_the_wrong_rows():
    captions, right = prediction_captions(Y_TRUE, predicted_labels(PROBA), NAMES)
    assert right == [True, False, False, False]
    assert captions[0] == "true: red shirt\npred: red shirt"
    assert captions[1] == "true: blue\npred: blue shirt ✗"
    assert captions[2] == "true: red blue\npred: red ✗"
    assert captions[3] == "true: shirt\npred: (none) ✗"


def test_plots_are_written(tmp_path):
    confusions = per_label_confusion(Y_TRUE, predicted_labels(PROBA), NAMES)
    plot_label_confusions(confusions, tmp_path / "confusions.png")
    assert_png(tmp_path / "confusions.png")

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 28, 28, 3), dtype=np.uint8)
    true = np.vstack([Y_TRUE, [[0, 0, 0], [1, 1, 1]]])
    pred = np.vstack([predicted_labels(PROBA), [[0, 0, 0], [1, 1, 1]]])
    plot_prediction_grid(images, true, pred, NAMES, tmp_path / "grid.png", columns=3)
    assert_png(tmp_path / "grid.png")
    plot_prediction_grid(images[:, :, :, 0], true, pred, NAMES, tmp_path / "grey.png")
    assert_png(tmp_path / "grey.png")


def test_importing_the_module_does_not_import_tensorflow():
    code = "import sys, pipeline.tasks.multilabel; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
