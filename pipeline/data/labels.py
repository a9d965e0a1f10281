"""Label tables of multi-label image sets: a CSV of image paths and one 0/1 column per label.

`read_label_table` checks the table up front: every image exists and every label cell is 0 or 1,
and an error names the file, the row and what to do, before any training starts.
`load_images_python` is the one-by-one Pillow way of reading the images, the input benchmark's
reference. pandas and Pillow are imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import DataError

IMAGE_COLUMN = "image"


PROBLEMS_SHOWN = 5  # the first few problems of a table are listed, then a count of the rest


@dataclass(frozen=True)
class LabelTable:
    """Images and their labels as read from a CSV; `labels` is (N, L) uint8 of 0/1."""

    paths: list[str]
    labels: np.ndarray
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)


def read_label_table(csv_path: Path, label_names: Sequence[str] | None = None) -> LabelTable:
    """Read and check a label CSV: an `image` column, then 0/1 label columns.

    Args:
        csv_path: the CSV file. Relative image paths are resolved against its directory.
        label_names: the label columns to read, in this order; every one must exist. `None`
            reads every column after `image`.

    Raises:
        DataError: the file is unreadable or empty, a column is missing, an image file does not
            exist or a label cell is not 0 or 1. Every row is checked; the message lists the
            first few problems by 1-based data row (the file line is one more: the header).
    """
    import pandas as pd

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: label table not found; check the path.")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{csv_path}: cannot read as CSV ({exc}).") from None
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{csv_path}: the file is empty; expected a header `{IMAGE_COLUMN},<label>,...` and "
            "one row per image."
        ) from None
    columns = [str(column).strip() for column in table.columns]
    table.columns = columns
    if IMAGE_COLUMN not in columns:
        raise DataError(
            f"{csv_path}: no `{IMAGE_COLUMN}` column (the header has {', '.join(columns)}); the "
            f"first column must be `{IMAGE_COLUMN}`, the image's path."
        )
    names = _label_columns(csv_path, columns, label_names)
    if len(table) == 0:
        raise DataError(f"{csv_path}: the table has a header but no rows; add one row per image.")

    paths, labels, problems = _rows(csv_path, table, names)
    if problems:
        problems.sort(key=lambda problem: problem[0])
        shown = "; ".join(
            f"row {row + 1} (line {row + 2}): {text}" for row, text in problems[:PROBLEMS_SHOWN]
        )
        more = len(problems) - PROBLEMS_SHOWN
        raise DataError(
            f"{csv_path}: {len(problems)} problem(s): {shown}"
            + (f"; and {more} more" if more > 0 else "")
            + ". Every image must exist (relative paths are read from the CSV's directory) and "
            "every label cell must be 0 or 1: fix the table or regenerate the data."
        )
    return LabelTable(paths=paths, labels=labels, label_names=names)


def load_images_python(paths: Sequence[str], image_size: int) -> np.ndarray:
    """The naive way: open, convert to RGB and resize (bilinear) each file in turn; (N, S, S, 3)."""
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if rgb.size != (image_size, image_size):
                rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
            images.append(np.asarray(rgb))
    if not images:
        return np.zeros((0, image_size, image_size, 3), dtype=np.uint8)
    return np.stack(images)


def _label_columns(
    csv_path: Path, columns: list[str], label_names: Sequence[str] | None
) -> tuple[str, ...]:
    """The label columns to read: `label_names`, each present, or every column after `image`."""
    if label_names is None:
        names = tuple(columns[columns.index(IMAGE_COLUMN) + 1 :])
        if not names:
            raise DataError(
                f"{csv_path}: no label columns after `{IMAGE_COLUMN}`; add one 0/1 column per "
                "label."
            )
        return names
    names = tuple(label_names)
    missing = [name for name in names if name not in columns]
    if missing:
        raise DataError(
            f"{csv_path}: label column(s) {', '.join(missing)} missing (the header has "
            f"{', '.join(columns)}); add them, or change the label names the stage expects."
        )
    return names


def _rows(csv_path: Path, table, names: tuple[str, ...]) -> tuple[list[str], np.ndarray, list]:
    """Image paths, 0/1 labels, and every (0-based row, problem) found in the table."""
    base = csv_path.parent.absolute()
    paths = [str(base / value.strip()) if value.strip() else "" for value in table[IMAGE_COLUMN]]
    problems: list[tuple[int, str]] = []  # (0-based row, description)
    for row, path in enumerate(paths):
        if not path:
            problems.append((row, f"the `{IMAGE_COLUMN}` cell is empty"))
        elif not Path(path).is_file():
            problems.append((row, f"image {path} does not exist"))

    raw = table[list(names)].to_numpy(dtype=str)
    labels = np.zeros(raw.shape, dtype=np.uint8)
    ones, zeros = np.isin(raw, ("1", "1.0")), np.isin(raw, ("0", "0.0"))
    labels[ones] = 1
    for row, column in zip(*np.nonzero(~(ones | zeros)), strict=True):
        problems.append(
            (int(row), f"column {names[column]!r}: value {str(raw[row, column])!r} is not 0 or 1")
        )
    return paths, labels, problems
