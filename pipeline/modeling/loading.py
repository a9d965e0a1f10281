"""Loading a trained model and predicting with it: Keras archives and the NumPy baseline.

Keras archives are loaded in safe mode. Only the Keras paths import Keras (and so TensorFlow);
the baseline is served by NumPy.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.errors import AtelierError
from pipeline.tasks.classification import normalised

PREDICT_BATCH = 1024
IMAGE_BATCH = 256  # images decoded from files per prediction batch


@dataclass(frozen=True)
class Scores:
    """Class probabilities for every test row, and where they came from."""

    proba: np.ndarray  # (n, classes)
    kind: str  # "keras" or "sgd_logistic"


def load_keras_model(path: Path):
    """Load a `.keras` archive in safe mode; turn every failure into a one-paragraph error."""
    path = Path(path)
    if not path.is_file():
        raise AtelierError(f"{path} not found: run the train stage for this experiment first.")
    if not zipfile.is_zipfile(path):
        raise AtelierError(
            f"{path} is not a Keras archive (a .keras file is a zip archive written by "
            "model.save()); it may be truncated or another format. Re-run the train stage "
            "(`dvc repro -f train@<experiment>`) to write it again."
        )
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True)
    except ValueError as exc:
        if "Lambda" in str(exc):
            raise AtelierError(
                f"{path} contains a Lambda layer, whose Python code Keras refuses to load in safe "
                "mode (loading it could run arbitrary code). Replace the Lambda layer with a "
                "registered custom layer (keras.saving.register_keras_serializable) and retrain; "
                "this pipeline never loads models with safe_mode=False."
            ) from None
        raise AtelierError(f"{path} could not be loaded as a Keras model: {exc}") from None
    except (KeyError, OSError, TypeError, zipfile.BadZipFile) as exc:
        raise AtelierError(
            f"{path} is not a valid Keras archive ({type(exc).__name__}: {exc}). Re-run the train "
            "stage to write it again."
        ) from None


def predict_proba(model_dir: Path, x: np.ndarray, *, keras_model: bool) -> Scores:
    """Class probabilities of `x` from the model saved in `model_dir`.

    Only the Keras branch imports TensorFlow; the baseline is served by NumPy alone.
    """
    if not keras_model:
        from pipeline.modeling.models import LinearPredictor

        baseline_path = model_dir / "model.npz"
        if not baseline_path.is_file():
            raise AtelierError(
                f"{baseline_path} not found: run the train stage for this experiment first."
            )
        with np.errstate(over="ignore"):  # exp of very negative scores → probability 0
            proba = LinearPredictor.load(baseline_path).predict_proba(x)
        return Scores(proba, "sgd_logistic")
    model = load_keras_model(model_dir / "best.keras")
    proba = model.predict(x, batch_size=PREDICT_BATCH, verbose=0)
    return Scores(np.asarray(proba), "keras")


def validation_log_loss(dataset: str, root: Path, model_dir: Path) -> float:
    """Log loss of the baseline on the validation rows (Keras models record it while training)."""
    from sklearn.metrics import log_loss

    from pipeline.modeling.models import LinearPredictor

    prepared, split = paths.prepared_dir(dataset, root), paths.split_dir(dataset, root)
    val_idx = np.load(split / "val_idx.npy")
    x_val = np.load(prepared / "x_train.npy", mmap_mode="r")[val_idx]
    y_val = np.load(prepared / "y_train.npy")[val_idx]
    predictor = LinearPredictor.load(model_dir / "model.npz")
    with np.errstate(over="ignore"):
        proba = predictor.predict_proba(np.ascontiguousarray(x_val))
    return float(log_loss(y_val, normalised(proba), labels=np.arange(proba.shape[1])))


def predict_values(model_dir: Path, x: np.ndarray) -> np.ndarray:
    """One value per row of `x` from a regression model's best checkpoint."""
    model = load_keras_model(model_dir / "best.keras")
    return np.asarray(model.predict(x, batch_size=PREDICT_BATCH, verbose=0), np.float64).reshape(-1)


def predict_image_files(
    model_dir: Path, files: Sequence[str], labels: np.ndarray, *, image_size: int
) -> np.ndarray:
    """Label probabilities of image files, streamed from disk through the training input path."""
    import keras

    model = load_keras_model(model_dir / "best.keras")
    if keras.backend.backend() != "tensorflow":
        from pipeline.modeling.batches import ImageFileBatches

        batches = ImageFileBatches(files, None, IMAGE_BATCH, image_size=image_size)
        return np.asarray(model.predict(batches, verbose=0), dtype=np.float64)
    from pipeline.modeling.inputs import make_image_dataset

    images = make_image_dataset(
        files, labels, image_size=image_size, batch_size=IMAGE_BATCH, shuffle=False, seed=0
    ).map(lambda pixels, _: pixels)
    return np.asarray(model.predict(images, verbose=0), dtype=np.float64)
