"""Training inputs as `tf.data` pipelines (TensorFlow backend) or NumPy batches (any other):
arrays held in memory, or images streamed from disk."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


class TrainingRows(Protocol):
    """What the input pipelines read of the train stage's `TrainData`."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    meta: dict
    standardize: dict | None

    @property
    def task(self) -> str: ...


def image_files(data: TrainingRows) -> bool:
    """Whether `data`'s rows are image paths (the dataset's layout, from the catalog) whose
    pixels are read from disk batch by batch, rather than arrays held in memory."""
    return data.meta.get("kind") == "image_files"


def input_spec(model_params, data: TrainingRows):
    """The `InputSpec` of the model that trains on `data`: shape, classes and input scaling.

    `model_params` is the experiment's `model` entry; with `input_scaling: standardize` the
    training pixels' mean and standard deviation are computed here (only then: over
    Fashion-MNIST's 37.6 million training pixels they take about half a second).
    """
    from pipeline.modeling.models import InputSpec

    if image_files(data):  # rows are image paths; the pixels stay on disk
        return InputSpec(
            shape=tuple(data.meta["input_shape"]),
            num_classes=int(data.meta["num_classes"]),
            value_max=int(data.meta["value_max"]),
            task=data.task,
        )
    pixels = {}
    if getattr(model_params, "input_scaling", None) == "standardize":
        pixels = {"mean": float(data.x_train.mean()), "std": float(data.x_train.std()) or 1.0}
    return InputSpec(
        shape=tuple(data.x_train.shape[1:]),
        num_classes=int(data.meta["num_classes"]),
        value_max=int(data.meta["value_max"]),
        task=data.task,
        **pixels,
        feature_mean=tuple(data.standardize["mean"]) if data.standardize else None,
        feature_std=tuple(data.standardize["std"]) if data.standardize else None,
    )


def make_datasets(data: TrainingRows, batch_size: int, seed: int):
    """Training batches reshuffled every epoch, and validation batches, as `tf.data` pipelines.

    The arrays become two constant tensors once; each epoch shuffles only row indices and
    gathers whole batches (one op per batch, not per image), so the input pipeline costs little
    next to the training step. Images stay `uint8` until the model's scaling layer. Where the
    rows are image paths (`image_files`), the images are streamed from disk
    (`make_image_dataset`).

    On any other backend than TensorFlow the same batches come from NumPy
    (`pipeline.modeling.batches`), so that TensorFlow is never imported.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return _numpy_batches(data, batch_size, seed)
    import tensorflow as tf

    if image_files(data):
        return _image_file_datasets(data, batch_size, seed)
    images, labels = tf.constant(data.x_train), tf.constant(data.y_train)
    rows = len(data.y_train)
    train = (
        tf.data.Dataset.range(rows)
        .shuffle(rows, seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(
            lambda index: (tf.gather(images, index), tf.gather(labels, index)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .prefetch(tf.data.AUTOTUNE)
    )
    # Validation scores are independent of the batch size: use large batches.
    val = (
        tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val))
        .batch(max(batch_size, 1024))
        .cache()
    )
    return train, val


def _numpy_batches(data: TrainingRows, batch_size: int, seed: int):
    from pipeline.modeling.batches import ArrayBatches, ImageFileBatches

    val_batch = max(batch_size, 1024)
    if not image_files(data):
        return (
            ArrayBatches(data.x_train, data.y_train, batch_size, seed=seed, shuffle=True),
            ArrayBatches(data.x_val, data.y_val, val_batch),
        )
    root = Path(data.meta["prepared_dir"])
    size = int(data.meta["input_shape"][0])

    def files(rel_paths):
        return [str(root / path) for path in rel_paths]

    return (
        ImageFileBatches(
            files(data.x_train), data.y_train, batch_size, image_size=size, seed=seed,
            shuffle=True,
        ),
        ImageFileBatches(files(data.x_val), data.y_val, max(batch_size, 256), image_size=size),
    )  # fmt: skip


def _image_file_datasets(data: TrainingRows, batch_size: int, seed: int):
    """Multi-label sets: images streamed from disk, decoded and resized in `tf.data`."""
    root = Path(data.meta["prepared_dir"])
    size = int(data.meta["input_shape"][0])

    def stream(rel_paths, labels, shuffle: bool, batch: int):
        files = [str(root / path) for path in rel_paths]
        return make_image_dataset(
            files, labels, image_size=size, batch_size=batch, shuffle=shuffle, seed=seed
        )

    return (
        stream(data.x_train, data.y_train, True, batch_size),
        stream(data.x_val, data.y_val, False, max(batch_size, 256)),
    )


def make_image_dataset(
    paths: Sequence[str],
    labels: np.ndarray,
    *,
    image_size: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
):
    """A `tf.data.Dataset` of (uint8 images [B, S, S, 3], float32 labels [B, L]) read from disk.

    Only the path strings are held; each epoch reads, decodes (PNG, JPEG, GIF, BMP; grey images
    become RGB) and resizes the files in parallel, then batches and prefetches. With `shuffle`,
    the (path, label) pairs are reshuffled every epoch from `seed` (the same sequence of orders
    on every run); without, the order is the table's. Resizing is bilinear; the result is
    rounded back to uint8, so the model scales its input as for the other datasets.
    """
    import tensorflow as tf

    labels = np.asarray(labels)
    if labels.ndim != 2 or len(labels) != len(paths):
        raise ValueError(
            f"labels must be (N, L) with N = {len(paths)} paths; got shape {labels.shape}."
        )
    if image_size < 1 or batch_size < 1:
        raise ValueError(f"image_size and batch_size must be positive: {image_size}, {batch_size}.")
    if len(paths) == 0:
        raise ValueError("No images: paths is empty.")

    size = (image_size, image_size)

    def load(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        if tf.reduce_all(tf.shape(image)[:2] == size):
            image = tf.identity(image)
        else:
            # Resizing float32 is about twice as fast as resizing uint8 (measured); + 0.5 and a
            # saturating cast round half up and clip to 0-255, as Pillow does.
            resized = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
            image = tf.saturate_cast(resized + 0.5, tf.uint8)
        return tf.ensure_shape(image, [image_size, image_size, 3]), label

    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(list(paths), dtype=tf.string), labels.astype(np.float32))
    )
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # Parallelism comes from decoding many files at once; letting each small op also fan out
    # over the intra-op pool only adds hand-offs (measured faster on 2 cores).
    options.threading.max_intra_op_parallelism = 1
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)
