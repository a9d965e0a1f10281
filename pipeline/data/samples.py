"""A few training images per class: all that the report shows of an image dataset's pixels."""

from __future__ import annotations

import numpy as np

SAMPLES_PER_CLASS = 8  # training images per class in the report's sample mosaics


def class_sample_indices(
    y: np.ndarray, num_classes: int, *, per_class: int = SAMPLES_PER_CLASS, seed: int = 0
) -> list[np.ndarray]:
    """For each class in turn, the sorted indices of up to `per_class` of its rows, seeded.

    Applied again to the rows it chose, it chooses all of them in the same order, so a mosaic
    drawn from the chosen rows alone shows the same images as one drawn from the whole set.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(y)
    chosen = []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        picked = rng.choice(members, size=min(per_class, len(members)), replace=False)
        chosen.append(np.sort(picked))
    return chosen
