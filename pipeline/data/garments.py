"""Coloured garments: an offline multi-label image set generated from Fashion-MNIST.

The Keras tutorial's "apparel" seed trains on photos listed in a CSV with one 0/1 column per
label (`image, black, blue, …, shoes`), downloaded from the web. This module builds a set with the
same labels from the Fashion-MNIST files the project already has, so the multi-label pipeline
runs, and is tested, without the network and reproducibly: `render_set` returns it as arrays
(what the built-in `garments` dataset holds), `generate` writes it in the seed's layout (PNG
files and `labels.csv`):

- Fashion-MNIST classes map to the seed's items: T-shirt/top, Pullover and Shirt → shirt; Dress →
  dress; Trouser → pants; Sandal, Sneaker and Ankle boot → shoes; Coat and Bag are dropped.
  "shorts" are trousers with the legs cut (the top 55 % of the rows, centred again); which
  trouser image becomes pants and which shorts is drawn by the seeded generator.
- Each garment is tinted in exactly one of six colours: its grey intensity is the opacity of the
  colour over a plain mid-grey background. A mid-grey (rather than black) background keeps black
  garments visible (darker than the background) as well as white ones (lighter), and leaves
  colour a global property of the image that a small fully connected network can learn.

Every row therefore has exactly one colour label and one item label set. The same inputs give a
byte-identical `labels.csv` and identical pixels; the output directory appears whole or not at all.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_dir, atomic_write_bytes

log = logging.getLogger(__name__)

COLOURS = ("black", "blue", "brown", "green", "red", "white")
ITEMS = ("dress", "shirt", "pants", "shorts", "shoes")
LABELS = COLOURS + ITEMS  # the seed's column order

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "blue": (35, 75, 225),
    "brown": (135, 80, 30),
    "green": (35, 175, 60),
    "red": (225, 35, 35),
    "white": (248, 248, 248),
}
BACKGROUND_RGB = (128, 128, 128)

# Fashion-MNIST class index → item; "trouser" images become pants or shorts.
FASHION_MNIST_ITEMS: dict[int, str] = {
    0: "shirt",  # T-shirt/top
    1: "trouser",
    2: "shirt",  # Pullover
    3: "dress",
    # 4: Coat, dropped
    5: "shoes",  # Sandal
    6: "shirt",
    7: "shoes",  # Sneaker
    # 8: Bag, dropped
    9: "shoes",  # Ankle boot
}
SHORTS_KEPT_ROWS = 0.55  # share of a trouser image's rows (from the waist) that shorts keep
IMAGES_DIR = "images"
LABELS_CSV = "labels.csv"


def generate(
    x: np.ndarray, y: np.ndarray, out_dir: Path, *, n: int, seed: int, image_size: int = 28
) -> dict:
    """Write `n` coloured garments drawn from Fashion-MNIST images `x` and classes `y`.

    Args:
        x: uint8 grey images, (N, H, W) or (N, H, W, 1), garment bright on black.
        y: their Fashion-MNIST class indices, (N,).
        out_dir: replaced by `images/<index:05d>.png` (RGB) and `labels.csv` (`image`, a path
            relative to the CSV's directory, then the columns of `LABELS` as 0/1).
        n: number of garments.
        seed: seeds every choice: items, colours, source images, pants or shorts.
        image_size: side of the square output images.

    Returns:
        A summary: `n`, `image_size`, `seed` and `counts` (rows per label).

    Raises `ValueError` on malformed inputs and `DataError` when no class makes a garment
    (see `render_set`).
    """
    images, labels = render_set(x, y, n=n, seed=seed, image_size=image_size)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", *LABELS])
    with atomic_dir(out_dir) as staging:
        (staging / IMAGES_DIR).mkdir()
        for index, (rgb, row) in enumerate(zip(images, labels, strict=True)):
            name = f"{IMAGES_DIR}/{index:05d}.png"
            write_png(staging / name, rgb)
            writer.writerow([name, *(int(value) for value in row)])
        atomic_write_bytes(staging / LABELS_CSV, buffer.getvalue().encode())
    summary = {
        "n": n,
        "image_size": image_size,
        "seed": seed,
        "counts": dict(zip(LABELS, (int(count) for count in labels.sum(axis=0)), strict=True)),
    }
    log.info("Wrote %d coloured garments to %s: %s", n, out_dir, summary["counts"])
    return summary


def render_set(
    x: np.ndarray, y: np.ndarray, *, n: int, seed: int, image_size: int = 28
) -> tuple[np.ndarray, np.ndarray]:
    """`n` coloured garments as arrays: uint8 RGB images (n, S, S, 3) and their 0/1 label rows
    (n, len(LABELS)), the pixels and rows `generate` writes (same arguments, same values).

    Items and colours are each balanced to within one row; source images are drawn without
    replacement where each item's pool is large enough.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.dtype != np.uint8:
        raise ValueError(f"x must be uint8 images (N, H, W); got {x.dtype} {x.shape}.")
    if y.shape != (len(x),):
        raise ValueError(f"y must hold one class per image, shape ({len(x)},); got {y.shape}.")
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}.")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8; got {image_size}.")

    sources, items, colours, shorts = _plan(y, n=n, seed=seed)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    labels = np.zeros((n, len(LABELS)), dtype=np.uint8)
    for index in range(n):
        images[index] = render(
            x[sources[index]], colours[index], shorts=shorts[index], image_size=image_size
        )
        labels[index, [LABELS.index(colours[index]), LABELS.index(items[index])]] = 1
    return images, labels


def _plan(
    y: np.ndarray, *, n: int, seed: int
) -> tuple[list[int], list[str], list[str], list[bool]]:
    """Per output row: the source image index, its item, its colour and whether it is shorts."""
    rng = np.random.default_rng(seed)
    pools = {
        item: np.flatnonzero(np.isin(y, [c for c, i in FASHION_MNIST_ITEMS.items() if i == item]))
        for item in ("dress", "shirt", "trouser", "shoes")
    }
    available = [item for item in ITEMS if len(pools["trouser" if _legwear(item) else item])]
    if not available:
        raise DataError(
            "None of the Fashion-MNIST classes that make garments (T-shirt/top, Trouser, "
            "Pullover, Dress, Shirt, Sandal, Sneaker, Ankle boot) occurs in the labels given: "
            "pass the Fashion-MNIST images with their class labels 0-9."
        )
    missing = sorted(set(ITEMS) - set(available))
    if missing:
        log.warning("No source images for %s: the set has none of them.", ", ".join(missing))
    items = [available[k] for k in rng.permutation(np.resize(np.arange(len(available)), n))]
    colours = [COLOURS[k] for k in rng.permutation(np.resize(np.arange(len(COLOURS)), n))]

    sources = [0] * n
    shorts = [False] * n
    for pool_name, pool in pools.items():
        rows = [r for r, item in enumerate(items) if _pool(item) == pool_name]
        if not rows:
            continue
        drawn = rng.choice(pool, size=len(rows), replace=len(rows) > len(pool))
        if pool_name == "trouser":
            # The generator decides which trouser images are cut into shorts.
            n_shorts = sum(items[r] == "shorts" for r in rows)
            order = rng.permutation(len(drawn))
            shorts_images, pants_images = drawn[order[:n_shorts]], drawn[order[n_shorts:]]
            queues = {True: iter(shorts_images), False: iter(pants_images)}
            for r in rows:
                shorts[r] = items[r] == "shorts"
                sources[r] = int(next(queues[shorts[r]]))
        else:
            for r, source in zip(rows, drawn, strict=True):
                sources[r] = int(source)
    return sources, items, colours, shorts


def _legwear(item: str) -> bool:
    return item in ("pants", "shorts")


def _pool(item: str) -> str:
    return "trouser" if _legwear(item) else item


def cut_legs(grey: np.ndarray) -> np.ndarray:
    """Shorts from trousers: keep the top rows (waist and thighs), centred on a blank image."""
    height = grey.shape[0]
    kept = int(np.ceil(SHORTS_KEPT_ROWS * height))
    out = np.zeros_like(grey)
    top = (height - kept) // 2
    out[top : top + kept] = grey[:kept]
    return out


def render(
    grey: np.ndarray, colour: str, *, shorts: bool = False, image_size: int = 28
) -> np.ndarray:
    """One garment: grey intensity (resized to `image_size`) as the opacity of `colour`."""
    from PIL import Image

    grey = np.asarray(grey, dtype=np.uint8)
    if shorts:
        grey = cut_legs(grey)
    if grey.shape != (image_size, image_size):
        grey = np.asarray(
            Image.fromarray(grey).resize((image_size, image_size), Image.Resampling.BILINEAR)
        )
    # The square root lifts mid-grey parts of a garment toward full colour (Fashion-MNIST
    # garments are often dark inside), which keeps the colour unambiguous.
    alpha = np.sqrt(grey.astype(np.float32) / 255.0)[..., None]
    tint = np.asarray(COLOUR_RGB[colour], dtype=np.float32)
    background = np.asarray(BACKGROUND_RGB, dtype=np.float32)
    rgb = background * (1.0 - alpha) + tint * alpha
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """An RGB PNG; Pillow writes no timestamp, so the same pixels give the same bytes."""
    from PIL import Image

    Image.fromarray(rgb).save(path, format="PNG")
