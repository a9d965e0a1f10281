"""The model zoo: a named builder for every seed architecture, sizes as parameters.

Every Keras model takes raw inputs — `uint8` pixels or unscaled tabular features: scaling
(÷ max value) or standardisation (with statistics of the training rows only) is the model's first
layer, so a saved model cannot be fed differently at serving time. The scikit-learn baseline is
stored as plain arrays (`.npz`, no pickle) and served by `LinearPredictor`, which needs neither
scikit-learn nor pickle to load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import AtelierError
from pipeline.modeling.compact_cnn import build_compact_cnn
from pipeline.params import (
    CNNParams,
    MLPParams,
    ModelParams,
    MultilabelMLPParams,
    RegressorParams,
    SGDLogisticParams,
    SoftmaxRegressionParams,
)
from pipeline.params.experiments import CompactCNNParams

KERAS_MODELS = ("softmax_regression", "mlp", "cnn", "compact_cnn", "regressor", "multilabel_mlp")


@dataclass(frozen=True)
class InputSpec:
    """What the builders need to know about the data."""

    shape: tuple[int, ...]
    num_classes: int
    value_max: int = 255
    mean: float | None = None  # training-rows statistics, for input_scaling="standardize"
    std: float | None = None
    # Tabular inputs: per-feature statistics of the training rows (split's standardize.json).
    feature_mean: tuple[float, ...] | None = None
    feature_std: tuple[float, ...] | None = None
    # "multilabel": num_classes independent sigmoid outputs instead of one softmax.
    task: str = "classification"


def build_model(params: ModelParams, spec: InputSpec, *, name: str = "model"):
    """Build (not compile) the Keras model `params.name` for inputs described by `spec`."""
    if isinstance(params, SoftmaxRegressionParams):
        return _softmax_regression(params, spec, name)
    if isinstance(params, MLPParams):
        return _mlp(params, spec, name)
    if isinstance(params, CNNParams):
        return _cnn(params, spec, name)
    if isinstance(params, CompactCNNParams):
        return build_compact_cnn(params, spec, name)
    if isinstance(params, RegressorParams):
        return _regressor(params, spec, name)
    if isinstance(params, MultilabelMLPParams):
        return _multilabel_mlp(params, spec, name)
    if isinstance(params, SGDLogisticParams):
        raise AtelierError("sgd_logistic is a scikit-learn model: use fit_sgd_logistic().")
    raise AtelierError(f"Unknown model {getattr(params, 'name', params)!r}.")


def _inputs_and_scaling(params, spec: InputSpec):
    import keras
    from keras import layers

    inputs = keras.Input(shape=spec.shape, dtype="uint8", name="pixels")
    if params.input_scaling == "standardize":
        if spec.mean is None or spec.std is None:
            raise AtelierError("input_scaling='standardize' needs training statistics (mean, std).")
        x = layers.Normalization(
            axis=None, mean=spec.mean, variance=spec.std**2, name="standardize"
        )(inputs)
    else:
        x = layers.Rescaling(1.0 / spec.value_max, name="rescale")(inputs)
    return inputs, x


def _head(x, spec: InputSpec):
    from keras import layers

    # float32 output keeps the softmax (sigmoid) stable under mixed precision.
    if spec.task == "multilabel":
        return layers.Dense(spec.num_classes, activation="sigmoid", dtype="float32", name="labels")(
            x
        )
    return layers.Dense(spec.num_classes, activation="softmax", dtype="float32", name="classes")(x)


def _dense_stack(x, params):
    """`params.units` Dense layers with `params.activation`, each followed by its dropout."""
    from keras import layers

    dropout = params.dropout or [0.0] * len(params.units)
    for index, (units, rate) in enumerate(zip(params.units, dropout, strict=True)):
        x = layers.Dense(units, activation=params.activation, name=f"dense_{index}")(x)
        if rate > 0:
            x = layers.Dropout(rate, name=f"dropout_{index}")(x)
    return x


def _softmax_regression(params: SoftmaxRegressionParams, spec: InputSpec, name: str):
    import keras
    from keras import layers

    inputs, x = _inputs_and_scaling(params, spec)
    x = layers.Flatten()(x)
    return keras.Model(inputs, _head(x, spec), name=name)


def _mlp(params: MLPParams, spec: InputSpec, name: str):
    import keras
    from keras import layers

    inputs, x = _inputs_and_scaling(params, spec)
    x = layers.Flatten()(x)
    x = _dense_stack(x, params)
    return keras.Model(inputs, _head(x, spec), name=name)


def _cnn(params: CNNParams, spec: InputSpec, name: str):
    import keras
    from keras import layers

    if len(spec.shape) not in (2, 3):
        raise AtelierError(
            f"Model 'cnn' needs image inputs (height, width[, channels]); this dataset's rows "
            f"have shape {spec.shape}. Use 'mlp' for tabular data."
        )
    height, width = spec.shape[:2]
    shrink = len(params.filters) * (params.kernel_size - 1)
    if min(height, width) - shrink < params.pool_size:
        raise AtelierError(
            f"Model 'cnn' does not fit {height}×{width} images: {len(params.filters)} "
            f"convolutions of size {params.kernel_size} leave "
            f"{height - shrink}×{width - shrink}, less than pool_size {params.pool_size}. "
            "Use fewer filters or a smaller kernel_size."
        )
    inputs, x = _inputs_and_scaling(params, spec)
    if len(spec.shape) == 2:
        x = layers.Reshape((*spec.shape, 1))(x)
    for index, filters in enumerate(params.filters):
        x = layers.Conv2D(
            filters, params.kernel_size, activation=params.activation, name=f"conv_{index}"
        )(x)
    x = layers.MaxPooling2D(params.pool_size)(x)
    if params.conv_dropout > 0:
        x = layers.Dropout(params.conv_dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(params.dense_units, activation=params.activation, name="dense")(x)
    if params.dense_dropout > 0:
        x = layers.Dropout(params.dense_dropout)(x)
    return keras.Model(inputs, _head(x, spec), name=name)


def _multilabel_mlp(params: MultilabelMLPParams, spec: InputSpec, name: str):
    import keras
    from keras import layers

    inputs = keras.Input(shape=spec.shape, dtype="uint8", name="pixels")
    x = layers.Rescaling(1.0 / spec.value_max, name="rescale")(inputs)
    x = layers.Flatten()(x)
    x = _dense_stack(x, params)
    return keras.Model(inputs, _head(x, spec), name=name)


def _regressor(params: RegressorParams, spec: InputSpec, name: str):
    import keras
    from keras import layers

    if len(spec.shape) != 1 or spec.feature_mean is None or spec.feature_std is None:
        raise AtelierError(
            f"Model 'regressor' needs tabular inputs with per-feature statistics; this "
            f"dataset's rows have shape {spec.shape}."
        )
    inputs = keras.Input(shape=spec.shape, dtype="float32", name="features")
    x = layers.Normalization(
        axis=-1,
        mean=list(spec.feature_mean),
        variance=[std**2 for std in spec.feature_std],
        name="standardize",
    )(inputs)
    x = _dense_stack(x, params)
    outputs = layers.Dense(1, dtype="float32", name="target")(x)
    return keras.Model(inputs, outputs, name=name)


# --- the scikit-learn baseline ------------------------------------------------------------------


@dataclass(frozen=True)
class LinearPredictor:
    """A multinomial linear classifier stored as arrays; loads without pickle or scikit-learn.

    `predict_proba` reproduces `SGDClassifier(loss="log_loss").predict_proba` (one-vs-rest
    logistic scores, normalised per row).
    """

    coef: np.ndarray  # (classes, features)
    intercept: np.ndarray  # (classes,)
    classes: np.ndarray  # (classes,)
    value_max: float

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        features = np.asarray(x, dtype=np.float32).reshape(len(x), -1) / self.value_max
        return features @ self.coef.T + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        scores = 1.0 / (1.0 + np.exp(-np.clip(self.decision_function(x), -500, 500)))
        totals = scores.sum(axis=1, keepdims=True)
        uniform = np.full_like(scores, 1.0 / scores.shape[1])
        return np.where(totals > 0, scores / np.where(totals > 0, totals, 1), uniform)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes[np.argmax(self.decision_function(x), axis=1)]

    @property
    def count_params(self) -> int:
        return int(self.coef.size + self.intercept.size)

    def save(self, path: Path) -> None:
        import io

        from pipeline.core.io import atomic_write_bytes

        buffer = io.BytesIO()
        np.savez(
            buffer,
            coef=self.coef,
            intercept=self.intercept,
            classes=self.classes,
            value_max=np.array(self.value_max),
        )
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> LinearPredictor:
        try:
            with np.load(path, allow_pickle=False) as archive:
                return cls(
                    coef=archive["coef"],
                    intercept=archive["intercept"],
                    classes=archive["classes"],
                    value_max=float(archive["value_max"]),
                )
        except (OSError, ValueError, KeyError) as exc:
            raise AtelierError(f"{path} is not a baseline model archive ({exc}).") from None


def fit_sgd_logistic(
    params: SGDLogisticParams,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    value_max: float,
    seed: int,
) -> tuple[LinearPredictor, Sequence[float]]:
    """Fit the seed-001 baseline; return it and its `cv_folds`-fold cross-validation scores.

    Each pass (one fit per fold, then the final fit on every row) logs a line with the time
    left: on Fashion-MNIST the six passes take about 40 s.
    """
    import logging
    import time
    import warnings

    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import check_cv

    from pipeline.core.logs import format_duration

    log = logging.getLogger(__name__)
    features = x_train.reshape(len(x_train), -1).astype(np.float32) / value_max
    classifier = SGDClassifier(
        loss="log_loss", max_iter=params.max_iter, alpha=params.alpha, random_state=seed
    )
    # The folds `cross_validate(cv=cv_folds)` would use (stratified), fitted one by one to log.
    folds = list(check_cv(params.cv_folds, y_train, classifier=True).split(features, y_train))
    passes, started, scores = len(folds) + 1, time.perf_counter(), []

    def done(number: int, what: str) -> None:
        elapsed = time.perf_counter() - started
        left = elapsed / number * (passes - number)
        log.info(
            "sgd_logistic: pass %d/%d (%s), %s elapsed, %s left",
            number,
            passes,
            what,
            format_duration(elapsed),
            format_duration(left),
        )

    with warnings.catch_warnings():
        # max_iter=5 is the seed's choice; SGD stops before converging by design.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for number, (train, test) in enumerate(folds, start=1):
            fitted = clone(classifier).fit(features[train], y_train[train])
            scores.append(float(fitted.score(features[test], y_train[test])))
            done(number, f"CV fold {number}: accuracy {scores[-1]:.4f}")
        classifier.fit(features, y_train)
        done(passes, "final fit on all training rows")
    predictor = LinearPredictor(
        coef=classifier.coef_.astype(np.float32),
        intercept=classifier.intercept_.astype(np.float32),
        classes=classifier.classes_,
        value_max=float(value_max),
    )
    return predictor, scores
