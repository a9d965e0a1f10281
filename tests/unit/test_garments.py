"""Coloured garments generator: deterministic files, one colour and one item per row, colours
that show in the pixels, shorts shorter than pants, and no partial output after a failure.

The source images are a slice of the real Fashion-MNIST test set where Debian's mirror is
installed, otherwise synthetic "garments" (a bright block with a darker pattern) with the same
class layout, so the tests always run.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import garments
from pipeline.data.garments import BACKGROUND_RGB, COLOURS, ITEMS, LABELS, generate

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SOURCE_ROWS = 400


@pytest.fixture(scope="module")
def source() -> tuple[np.ndarray, np.ndarray]:
    """A few hundred Fashion-MNIST images and classes (real ones when available)."""
    images, labels = (
        FASHION_MNIST / "t10k-images-idx3-ubyte.gz",
        FASHION_MNIST / "t10k-labels-idx1-ubyte.gz",
    )
    if images.is_file() and labels.is_file():
        from pipeline.data.catalog import read_idx

        return read_idx(images)[:SOURCE_ROWS], read_idx(labels)[:SOURCE_ROWS]
    rng = np.random.default_rng(0)
    x = np.zeros((SOURCE_ROWS, 28, 28), dtype=np.uint8)
    x[:, 1:27, 8:20] = rng.integers(120, 256, size=(SOURCE_ROWS, 26, 12), dtype=np.uint8)
    y = (np.arange(SOURCE_ROWS) % 10).astype(np.uint8)
    return x, y


@pytest.fixture(scope="module")
def generated(source, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("garments") / "set"
    summary = generate(*source, out, n=90, seed=3)
    return out, summary


def read_rows(out: Path) -> tuple[list[str], list[list[str]]]:
    with open(out / "labels.csv", newline="") as stream:
        rows = list(csv.reader(stream))
    return rows[0], rows[1:]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def garment_mask(image: np.ndarray, margin: int = 40) -> np.ndarray:
    """Pixels clearly away from the background colour."""
    distance = np.abs(image.astype(np.int16) - np.asarray(BACKGROUND_RGB, dtype=np.int16))
    return distance.max(axis=-1) > margin


def test_layout_and_one_colour_one_item_per_row(generated):
    out, summary = generated
    header, rows = read_rows(out)
    assert header == ["image", *LABELS]
    assert (*COLOURS, *ITEMS) == LABELS
    assert len(rows) == summary["n"] == 90
    for index, row in enumerate(rows):
        assert row[0] == f"images/{index:05d}.png"
        assert (out / row[0]).is_file()
        values = [int(value) for value in row[1:]]
        assert set(values) <= {0, 1}
        assert sum(values[: len(COLOURS)]) == 1, row
        assert sum(values[len(COLOURS) :]) == 1, row
    counts = np.array([[int(value) for value in row[1:]] for row in rows]).sum(axis=0)
    assert dict(zip(LABELS, counts.tolist(), strict=True)) == summary["counts"]
    # balanced: every colour 15 times, every item 18 times
    assert set(counts[: len(COLOURS)].tolist()) == {15}
    assert set(counts[len(COLOURS) :].tolist()) == {18}
    assert sorted(path.name for path in out.iterdir()) == ["images", "labels.csv"]


def test_same_inputs_give_identical_files_and_another_seed_differs(source, generated, tmp_path):
    out, _ = generated
    again = tmp_path / "again"
    generate(*source, again, n=90, seed=3)
    assert (again / "labels.csv").read_bytes() == (out / "labels.csv").read_bytes()
    for index in range(90):
        name = f"images/{index:05d}.png"
        assert np.array_equal(pixels(again / name), pixels(out / name))
        assert (again / name).read_bytes() == (out / name).read_bytes()

    other = tmp_path / "other"
    generate(*source, other, n=90, seed=4)
    assert (other / "labels.csv").read_bytes() != (out / "labels.csv").read_bytes()


def test_pngs_are_rgb_of_the_requested_size(source, generated, tmp_path):
    out, _ = generated
    with Image.open(out / "images/00000.png") as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (28, 28))
    generate(*source, tmp_path / "big", n=6, seed=0, image_size=40)
    for path in sorted((tmp_path / "big" / "images").iterdir()):
        with Image.open(path) as image:
            assert (image.mode, image.size) == ("RGB", (40, 40))


def test_colours_show_in_the_garment_pixels(generated):
    out, _ = generated
    header, rows = read_rows(out)
    seen = set()
    for row in rows:
        colour = next(
            name for name, value in zip(header[1:], row[1:], strict=False) if value == "1"
        )
        image = pixels(out / row[0]).astype(np.float64)
        mask = garment_mask(image)
        assert mask.sum() >= 20, f"{row[0]}: hardly any garment pixels"
        r, g, b = (image[..., channel][mask].mean() for channel in range(3))
        grey = float(np.mean(BACKGROUND_RGB))
        if colour == "red":
            assert r > g + 60 and r > b + 60, (row[0], r, g, b)
        elif colour == "green":
            assert g > r + 50 and g > b + 50, (row[0], r, g, b)
        elif colour == "blue":
            assert b > r + 60 and b > g + 50, (row[0], r, g, b)
        elif colour == "brown":
            assert r > g + 20 > b + 40, (row[0], r, g, b)
        elif colour == "black":
            assert max(r, g, b) < grey - 35 and max(r, g, b) - min(r, g, b) < 10
        elif colour == "white":
            assert min(r, g, b) > grey + 35 and max(r, g, b) - min(r, g, b) < 10
        seen.add(colour)
    assert seen == set(COLOURS)


def test_shorts_are_shorter_than_pants(generated):
    out, _ = generated
    header, rows = read_rows(out)
    heights: dict[str, list[int]] = {"pants": [], "shorts": []}
    for row in rows:
        labels = {name for name, value in zip(header[1:], row[1:], strict=True) if value == "1"}
        for item in heights.keys() & labels:
            heights[item].append(int(garment_mask(pixels(out / row[0])).any(axis=1).sum()))
    assert heights["pants"] and heights["shorts"]
    assert max(heights["shorts"]) < min(heights["pants"]), heights
    assert np.mean(heights["shorts"]) < 0.7 * np.mean(heights["pants"])


def test_all_items_and_colours_for_a_modest_n(source, tmp_path):
    summary = generate(*source, tmp_path / "small", n=30, seed=11)
    assert all(count >= 1 for count in summary["counts"].values()), summary


def test_coat_and_bag_only_give_an_error(tmp_path):
    from pipeline.core.errors import DataError

    x = np.zeros((6, 28, 28), dtype=np.uint8)
    y = np.array([4, 8, 4, 8, 4, 8], dtype=np.uint8)
    with pytest.raises(DataError, match="Trouser"):
        generate(x, y, tmp_path / "none", n=3, seed=0)
    assert not (tmp_path / "none").exists()


def test_a_failure_midway_leaves_the_previous_output_untouched(source, tmp_path, monkeypatch):
    out = tmp_path / "set"
    generate(*source, out, n=12, seed=0)
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}

    written = []
    real_write_png = garments.write_png

    def failing_write_png(path: Path, rgb: np.ndarray) -> None:
        if len(written) == 7:
            raise OSError(28, "No space left on device")
        real_write_png(path, rgb)
        written.append(path)

    monkeypatch.setattr(garments, "write_png", failing_write_png)
    with pytest.raises(OSError, match="No space left"):
        generate(*source, out, n=20, seed=1)
    assert len(written) == 7  # it did fail midway, with files already written
    after = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert after == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["set"]  # no staging left

    with pytest.raises(OSError):
        generate(*source, tmp_path / "fresh", n=20, seed=1)
    assert not (tmp_path / "fresh").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["set"]
