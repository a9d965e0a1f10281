"""Seed 000 as written: plain Keras, float32 one-hot inputs, `validation_split=0.2`.

The only change from the tutorial is where the arrays come from: `keras.datasets` would download
them, so they are read from Debian's `dataset-fashion-mnist` files (the same images). Used by
`train_vs_seed.py` as the baseline the pipeline is timed against.
"""

import gzip
import json
import sys

import numpy as np

DIR = "/usr/share/datasets/fashion-mnist"


def idx(name, offset):
    with gzip.open(f"{DIR}/{name}", "rb") as stream:
        return np.frombuffer(stream.read(), np.uint8, offset=offset)


train_images = idx("train-images-idx3-ubyte.gz", 16).reshape(60000, 28, 28)
train_labels = idx("train-labels-idx1-ubyte.gz", 8)
test_images = idx("t10k-images-idx3-ubyte.gz", 16).reshape(10000, 28, 28)
test_labels = idx("t10k-labels-idx1-ubyte.gz", 8)

import keras  # noqa: E402
from keras import layers  # noqa: E402

train_images = train_images.reshape((60000, 28 * 28)).astype("float32") / 255
test_images = test_images.reshape((10000, 28 * 28)).astype("float32") / 255
train_labels = keras.utils.to_categorical(train_labels)
test_labels = keras.utils.to_categorical(test_labels)

model = keras.Sequential()
model.add(layers.Dense(256, activation="relu", input_shape=(784,)))
model.add(layers.Dropout(0.3))
model.add(layers.Dense(128, activation="relu"))
model.add(layers.Dense(10, activation="softmax"))
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
history = model.fit(
    train_images, train_labels, epochs=10, batch_size=128, validation_split=0.2, verbose=0
)
test_loss, test_acc = model.evaluate(test_images, test_labels, verbose=0)
json.dump({"test_accuracy": float(test_acc), "test_loss": float(test_loss)}, sys.stdout)
