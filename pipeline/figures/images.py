"""Image mosaics: class samples, the most confident mistakes, any grid of captioned images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.samples import SAMPLES_PER_CLASS, class_sample_indices
from pipeline.figures.base import new_figure, save_figure


def _mosaic(
    tiles: list[np.ndarray | None], columns: int, *, gap: float, top: float, value_max: float
):
    """Tiles laid out on one canvas (one `imshow` instead of one axes per image: far faster).

    `gap` and `top` are the margins around and above each tile, as fractions of its height.
    Returns the canvas (a masked array for gray images, white RGB otherwise), the tile size and
    the margins in pixels.
    """
    shape = next(tile.shape for tile in tiles if tile is not None)
    height, width = shape[:2]
    pad, head = max(1, round(gap * height)), round(top * height)
    rows = -(-len(tiles) // columns)
    cell_h, cell_w = height + head + pad, width + pad
    colour = len(shape) == 3
    canvas = np.full(
        (rows * cell_h + pad, columns * cell_w + pad, *shape[2:]),
        value_max if colour else np.nan,
        dtype=np.float32,
    )
    for index, tile in enumerate(tiles):
        if tile is None:
            continue
        row, column = divmod(index, columns)
        y0, x0 = row * cell_h + head + pad, column * cell_w + pad
        canvas[y0 : y0 + height, x0 : x0 + width] = tile
    if colour:
        return np.clip(canvas / value_max, 0, 1), (height, width), (pad, head)
    return np.ma.masked_invalid(canvas), (height, width), (pad, head)


def _show_mosaic(axes, canvas, value_max: float) -> None:
    import matplotlib

    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    axes.imshow(canvas, cmap=cmap, vmin=0, vmax=value_max, interpolation="nearest")
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.set_xticks([])


def plot_image_grid(
    images: np.ndarray,
    captions: list[str],
    path: Path,
    *,
    title: str,
    value_max: float,
    columns: int = 8,
    caption_colours: list[str] | None = None,
) -> None:
    """A grid of images (grey or RGB) with a two-line caption above each, in black or in
    `caption_colours` (misclassified examples, multi-label predictions)."""
    count = len(images)
    columns = min(columns, max(1, count))
    tiles = [_displayable(image) for image in images]
    canvas, (height, width), (pad, head) = _mosaic(
        tiles, columns, gap=0.12, top=0.42, value_max=value_max
    )
    figure = new_figure(1.55 * columns, 1.55 * columns * canvas.shape[0] / canvas.shape[1] + 0.5)
    figure.suptitle(title)
    axes = figure.add_subplot()
    _show_mosaic(axes, canvas, value_max)
    axes.set_yticks([])
    cell_h, cell_w = height + head + pad, width + pad
    for index, caption in enumerate(captions):
        row, column = divmod(index, columns)
        axes.text(
            # pixel centres are at integer coordinates: a tile's top edge is half a pixel up
            column * cell_w + pad + width / 2 - 0.5,
            row * cell_h + head + pad - 0.5 - 0.03 * height,
            caption,
            ha="center",
            va="bottom",
            fontsize=8,
            color=caption_colours[index] if caption_colours else "black",
        )
    save_figure(figure, path)


def plot_class_samples(
    x: np.ndarray,
    y: np.ndarray,
    class_names: tuple[str, ...],
    path: Path,
    *,
    title: str,
    value_max: float,
    per_class: int = SAMPLES_PER_CLASS,
    seed: int = 0,
) -> None:
    """One row per class: `per_class` training images, the class name at the row's start."""
    tiles: list[np.ndarray | None] = []
    for chosen in class_sample_indices(y, len(class_names), per_class=per_class, seed=seed):
        row = [_displayable(x[index]) for index in chosen]
        tiles += row + [None] * (per_class - len(row))
    canvas, (height, _), (pad, head) = _mosaic(
        tiles, per_class, gap=0.1, top=0.0, value_max=value_max
    )
    figure = new_figure(1.0 * per_class + 1.6, 1.0 * per_class * canvas.shape[0] / canvas.shape[1])
    figure.suptitle(title)
    axes = figure.add_subplot()
    _show_mosaic(axes, canvas, value_max)
    centres = [
        pad + row * (height + head + pad) + height / 2 - 0.5 for row in range(len(class_names))
    ]
    axes.set_yticks(centres, labels=class_names, fontsize=10)
    axes.tick_params(axis="y", length=0)
    save_figure(figure, path)


def _displayable(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) → what `imshow` takes; 1-D rows become a square if any."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0]
    if image.ndim == 1:
        side = int(round(len(image) ** 0.5))
        if side * side == len(image):
            return image.reshape(side, side)
        return image.reshape(1, -1)
    return image
