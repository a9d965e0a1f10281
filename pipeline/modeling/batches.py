"""Training and validation batches as `keras.utils.PyDataset`s: the input path of every backend
but TensorFlow (which keeps its `tf.data` pipelines, `pipeline.modeling.inputs`).

Arrays held in memory are gathered a batch at a time by a permutation of the rows, drawn anew
each epoch from the seed and the epoch number; multi-label image files are read with Pillow,
a batch at a time. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np


class ArrayBatches(keras.utils.PyDataset):
    """Batches of `(x, y)` rows; with `shuffle`, a new seeded order every epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None, batch_size: int, *, seed: int = 0,
                 shuffle: bool = False):  # fmt: skip
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        rows = len(self.x)
        if not self.shuffle:
            return np.arange(rows)
        return np.random.default_rng([self.seed, self.epoch]).permutation(rows)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def rows(self, index: int) -> np.ndarray:
        return self.order[index * self.batch_size : (index + 1) * self.batch_size]

    def __getitem__(self, index: int):
        rows = self.rows(index)
        if self.y is None:
            return (self.x[rows],)
        return self.x[rows], self.y[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()


class ImageFileBatches(ArrayBatches):
    """Batches of image files, read and resized (bilinear) with Pillow as they are asked for."""

    def __init__(self, files: Sequence[str], y: np.ndarray | None, batch_size: int, *,
                 image_size: int, seed: int = 0, shuffle: bool = False):  # fmt: skip
        super().__init__(np.asarray(files), y, batch_size, seed=seed, shuffle=shuffle)
        self.image_size = image_size

    def __getitem__(self, index: int):
        from pipeline.data.labels import load_images_python

        rows = self.rows(index)
        images = load_images_python([str(path) for path in self.x[rows]], self.image_size)
        if self.y is None:
            return (images,)
        return images, self.y[rows].astype(np.float32)
