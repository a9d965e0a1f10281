"""Train stage (`train@<experiment>`): fit one experiment and keep its best epoch.

Outputs, in `models/<experiment>/`:
- `best.keras` — the best epoch by `monitor` (Keras models) or `model.npz` (the SGD baseline);
- `history.csv` — per-epoch train/validation loss and the task's metric (accuracy for
  classification, MAE for regression);
- `train.json` — best epoch and its validation figures, epochs run, training time, parameter
  count, device, TensorFlow and Keras versions (and cross-validation scores for the baseline).

DVCLive's Keras callback writes the per-epoch metrics to `live/<experiment>/` for `dvc plots`.

K-fold (`train_fold@<experiment>-<k>`, `--fold k`): the same experiment trained on every fold of
the training set but fold k and validated on fold k; its outputs go to
`models/folds/<experiment>-fold<k>/` and `live/<experiment>-fold<k>/`.

Resuming: while training, state lives in `checkpoints/<experiment>/` — Keras' `BackupAndRestore`
backup, the best checkpoint so far (written to a temporary name, then renamed) with its monitored
value, the history and DVCLive's files. A run killed mid-way and started again with the same
params resumes after its last finished epoch, and the carried-over best value means a worse
epoch never replaces the best checkpoint (keras#17012). The state is removed when a run finishes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.errors import AtelierError, DataError
from pipeline.core.io import atomic_dir, atomic_write_bytes, atomic_write_json, read_json
from pipeline.params import TASK_METRIC, Experiment, Params, RuntimeParams

log = logging.getLogger(__name__)

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")  # classification's


def history_keys(task: str) -> tuple[str, ...]:
    """The per-epoch columns of `history.csv` for `task`."""
    metric = TASK_METRIC[task]
    return ("loss", metric, "val_loss", f"val_{metric}")


def run_name(experiment: str, fold: int | None = None) -> str:
    """Directory name of a run's outputs: the experiment, or `<experiment>-fold<k>`."""
    return experiment if fold is None else f"{experiment}-fold{fold}"


@dataclass(frozen=True)
class TrainData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    meta: dict
    standardize: dict | None = None  # tabular: the split stage's per-feature statistics

    @property
    def task(self) -> str:
        return self.meta.get("task", "classification")


def load_train_data(dataset: str, root: Path, fold: int | None = None) -> TrainData:
    """The training and validation rows of `dataset` (the test set is not opened).

    With `fold`, the validation rows are that fold of the split stage's K-fold assignment and
    the training rows every other fold.
    """
    prepared, split = paths.prepared_dir(dataset, root), paths.split_dir(dataset, root)
    needed = [prepared / "x_train.npy", prepared / "meta.json", split / "train_idx.npy"]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise DataError(
            f"Dataset {dataset!r} is not prepared ({', '.join(missing)} missing): run "
            f"`dvc repro split@{dataset}` (and check it is in params.yaml data.datasets)."
        )
    x = np.load(prepared / "x_train.npy", mmap_mode="r")
    y = np.load(prepared / "y_train.npy")
    if fold is None:
        train_idx, val_idx = np.load(split / "train_idx.npy"), np.load(split / "val_idx.npy")
    else:
        folds_path = split / "folds.npy"
        if not folds_path.is_file():
            raise DataError(
                f"{folds_path} does not exist: set split.folds (2 or more) in params.yaml and "
                f"run `dvc repro split@{dataset}`."
            )
        fold_of = np.load(folds_path)
        if fold not in set(fold_of.tolist()):
            raise DataError(
                f"Fold {fold} does not exist: {dataset!r} is split into {int(fold_of.max()) + 1} "
                "folds (split.folds); fold ids start at 0."
            )
        train_idx, val_idx = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
    standardize_path = split / "standardize.json"
    return TrainData(
        x_train=np.ascontiguousarray(x[train_idx]),
        y_train=y[train_idx],
        x_val=np.ascontiguousarray(x[val_idx]),
        y_val=y[val_idx],
        meta=read_json(prepared / "meta.json") | {"prepared_dir": str(prepared.absolute())},
        standardize=read_json(standardize_path) if standardize_path.is_file() else None,
    )


def train_experiment(
    params: Params, name: str, *, root: Path = Path("."), fold: int | None = None
) -> dict:
    """Train experiment `name` of `params` (on `fold`'s training rows when given); write its
    outputs; return the `train.json` summary."""
    experiment = params.experiment(name)
    if fold is not None and not experiment.is_keras:
        raise AtelierError(
            f"Experiment {name!r} is a {experiment.model.name} model: K-fold training is for "
            "Keras experiments (the baseline records its own cross-validation scores)."
        )
    data = load_train_data(experiment.dataset, root, fold)
    run = run_name(name, fold)
    out_dir = paths.model_dir(name, root) if fold is None else paths.fold_model_dir(run, root)
    if experiment.model.name == "sgd_logistic":
        return _train_sgd(
            experiment,
            data,
            out_dir=out_dir,
            live_dir=paths.live_dir(name, root),
            seed=params.base.seed,
        )
    return train_keras(
        experiment,
        data,
        name=name,
        seed=params.base.seed,
        runtime=params.runtime,
        out_dir=out_dir,
        checkpoint_dir=paths.checkpoint_dir(run, root),
        live_dir=paths.live_dir(run, root),
        fold=fold,
    )


# --- the scikit-learn baseline ------------------------------------------------------------------


def _train_sgd(
    experiment: Experiment, data: TrainData, *, out_dir: Path, live_dir: Path, seed: int
) -> dict:
    from pipeline.modeling.models import fit_sgd_logistic

    started = time.perf_counter()
    predictor, cv_scores = fit_sgd_logistic(
        experiment.model,
        data.x_train,
        data.y_train,
        value_max=data.meta["value_max"],
        seed=seed,
    )
    elapsed = time.perf_counter() - started
    val_accuracy = float(np.mean(predictor.predict(data.x_val) == data.y_val))
    summary = {
        "model": "sgd_logistic",
        "dataset": experiment.dataset,
        "model_file": "model.npz",
        "best_epoch": experiment.model.max_iter,
        "epochs_run": experiment.model.max_iter,
        "monitor": "val_accuracy",
        "val_accuracy": val_accuracy,
        "cv_mean": float(np.mean(cv_scores)),
        "cv_std": float(np.std(cv_scores)),
        "cv_scores": cv_scores,
        "train_time_s": round(elapsed, 3),
        "params_count": predictor.count_params,
        "device": "cpu (scikit-learn)",
        **_versions(keras_too=False),
    }
    with atomic_dir(out_dir) as staging:
        predictor.save(staging / "model.npz")
        atomic_write_json(staging / "train.json", summary)
    with atomic_dir(live_dir) as staging:
        atomic_write_json(
            staging / "metrics.json",
            {key: summary[key] for key in ("val_accuracy", "cv_mean", "cv_std")},
        )
    log.info(
        "sgd_logistic: CV %.4f ± %.4f, val %.4f",
        summary["cv_mean"],
        summary["cv_std"],
        val_accuracy,
    )
    return summary


# --- Keras --------------------------------------------------------------------------------------


def configure_device(runtime: RuntimeParams) -> dict:
    """Pick the device, memory growth and precision; return what was chosen, for the record."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised in this process
            tf.config.experimental.set_memory_growth(gpu, True)
    tensor_cores = False
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
        capability = details.get("compute_capability") or (0, 0)
        tensor_cores = tensor_cores or tuple(capability) >= (7, 0)
    mixed = runtime.mixed_precision == "on" or (
        runtime.mixed_precision == "auto" and bool(gpus) and tensor_cores
    )
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    device = f"gpu x{len(gpus)} ({', '.join(names)})" if gpus else "cpu"
    return {"device": device, "gpus": len(gpus), "mixed_precision": mixed}


def _seed_everything(seed: int, deterministic: bool) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)  # Python, NumPy and the backend
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _pixel_statistics(experiment: Experiment, x_train: np.ndarray) -> dict:
    """Mean and standard deviation of the training pixels, for models that standardize them.

    Only then: over Fashion-MNIST's 37.6 million training pixels they take about half a second.
    """
    if getattr(experiment.model, "input_scaling", None) != "standardize":
        return {}
    return {"mean": float(x_train.mean()), "std": float(x_train.std()) or 1.0}


def _fingerprint(experiment: Experiment, seed: int, data: TrainData, fold: int | None) -> str:
    payload = json.dumps(
        {"experiment": experiment.model_dump(), "seed": seed, "n": len(data.y_train), "fold": fold},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def train_keras(
    experiment: Experiment,
    data: TrainData,
    *,
    name: str,
    seed: int,
    runtime: RuntimeParams,
    out_dir: Path,
    checkpoint_dir: Path,
    live_dir: Path,
    fold: int | None = None,
) -> dict:
    if experiment.batch_size > len(data.y_train):
        raise AtelierError(
            f"experiments.{name}.batch_size = {experiment.batch_size} is larger than the "
            f"training set ({len(data.y_train)} rows of {experiment.dataset!r}): lower it."
        )
    import tensorflow as tf

    from pipeline.modeling.models import InputSpec, build_model
    from pipeline.modeling.optimizers import make_optimizer

    device = configure_device(runtime)
    _seed_everything(seed, runtime.deterministic)

    task = data.task
    if task != experiment.task:
        raise DataError(
            f"data/prepared/{experiment.dataset} holds a {task} set but the catalog says "
            f"{experiment.task}: re-run `dvc repro preprocess@{experiment.dataset}`."
        )
    if task == "multilabel":  # rows are image paths; the pixels stay on disk
        spec = InputSpec(
            shape=tuple(data.meta["input_shape"]),
            num_classes=int(data.meta["num_classes"]),
            value_max=int(data.meta["value_max"]),
            task=task,
        )
    else:
        spec = InputSpec(
            shape=tuple(data.x_train.shape[1:]),
            num_classes=int(data.meta["num_classes"]),
            value_max=int(data.meta["value_max"]),
            **_pixel_statistics(experiment, data.x_train),
            feature_mean=tuple(data.standardize["mean"]) if data.standardize else None,
            feature_std=tuple(data.standardize["std"]) if data.standardize else None,
        )
    metric = TASK_METRIC[task]
    loss = {
        "classification": "sparse_categorical_crossentropy",
        "regression": "mse",
        "multilabel": "binary_crossentropy",
    }[task]
    strategy = tf.distribute.MirroredStrategy() if device["gpus"] > 1 else None
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build_model(experiment.model, spec, name=name)
        model.compile(
            optimizer=make_optimizer(
                experiment.optimizer, experiment.learning_rate, distributed=strategy is not None
            ),
            loss=loss,
            metrics=[metric],
            steps_per_execution=runtime.steps_per_execution,
        )
    # Only once the model is known to fit the data: a refused model leaves no resume state.
    state = _ResumeState(
        checkpoint_dir, _fingerprint(experiment, seed, data, fold), keys=history_keys(task)
    )
    resuming = state.start()

    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from pipeline.modeling.callbacks import (
        AtomicBackupAndRestore,
        BestCheckpoint,
        HistoryLog,
        ResumableEarlyStopping,
    )

    best = state.best()
    # Order matters: the epoch's figures and best checkpoint are on disk before the backup
    # says the epoch is done, so a kill in between re-runs the epoch rather than losing it.
    callbacks = [
        HistoryLog(state),
        BestCheckpoint(state, experiment.monitor),
    ]
    if experiment.patience:
        callbacks.append(
            ResumableEarlyStopping(
                best=best,
                monitor=experiment.monitor,
                patience=experiment.patience,
                mode="max" if "accuracy" in experiment.monitor else "min",
            )
        )
    callbacks.append(AtomicBackupAndRestore(str(state.backup_dir), delete_checkpoint=False))
    with Live(
        dir=str(state.live_dir), resume=resuming, save_dvc_exp=False, dvcyaml=None, report=None
    ) as live:
        callbacks.insert(0, DVCLiveCallback(live=live))
        train_batches, val_batches = make_datasets(data, experiment.batch_size, seed)
        model.fit(
            train_batches,
            epochs=experiment.epochs,
            validation_data=val_batches,
            callbacks=callbacks,
            shuffle=False,  # the dataset reshuffles itself every epoch
            verbose=2,
        )
    elapsed = state.train_time_s()

    best = state.best()
    if best is None:
        raise AtelierError(
            f"Experiment {name!r} finished without a finite {experiment.monitor}; training "
            "diverged (try a lower learning_rate)."
        )
    last_epoch = _last_epoch(model) or len(state.history())
    history = [row for row in state.history() if int(row["epoch"]) <= last_epoch]
    best_row = next(row for row in history if int(row["epoch"]) == best["epoch"])
    summary = {
        "model": experiment.model.name,
        "dataset": experiment.dataset,
        "model_file": "best.keras",
        "monitor": experiment.monitor,
        "best_epoch": best["epoch"],
        "best_value": best["value"],
        "epochs_run": len(history),
        "epochs_max": experiment.epochs,
        "val_loss": float(best_row["val_loss"]),
        f"val_{metric}": float(best_row[f"val_{metric}"]),
        "train_time_s": round(elapsed, 3),
        "params_count": int(model.count_params()),
        "resumed": resuming,
        **({} if fold is None else {"fold": fold, "n_train": len(data.y_train)}),
        **device,
        **_versions(keras_too=True),
    }
    with atomic_dir(out_dir) as staging:
        shutil.copyfile(state.best_model_path, staging / "best.keras")
        shutil.copyfile(state.history_path, staging / "history.csv")
        atomic_write_json(staging / "train.json", summary)
    with atomic_dir(live_dir) as staging:
        shutil.copytree(state.live_dir, staging, dirs_exist_ok=True)
    state.finish()
    log.info(
        "%s: best epoch %d of %d, %s=%.4f, val_%s=%.4f, %.1f s",
        run_name(name, fold),
        best["epoch"],
        len(history),
        experiment.monitor,
        best["value"],
        metric,
        summary[f"val_{metric}"],
        elapsed,
    )
    return summary


def make_datasets(data: TrainData, batch_size: int, seed: int):
    """Training batches reshuffled every epoch, and validation batches, as `tf.data` pipelines.

    The arrays become two constant tensors once; each epoch shuffles only row indices and
    gathers whole batches (one op per batch, not per image), so the input pipeline costs little
    next to the training step. Images stay `uint8` until the model's scaling layer.
    """
    import tensorflow as tf

    if data.task == "multilabel":
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


def _image_file_datasets(data: TrainData, batch_size: int, seed: int):
    """Multi-label sets: images streamed from disk, decoded and resized in `tf.data`."""
    from pipeline.tasks.multilabel import make_image_dataset

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


def _last_epoch(model) -> int:
    """Epochs finished by `fit` (the history object counts only this segment's epochs)."""
    history = model.history
    return int(max(history.epoch) + 1) if history is not None and history.epoch else 0


def _versions(*, keras_too: bool) -> dict:
    from importlib import metadata

    # From the package metadata: importing scikit-learn would cost the Keras path a second.
    versions = {"sklearn_version": metadata.version("scikit-learn")}
    if keras_too:
        import keras
        import tensorflow as tf

        versions |= {"tensorflow_version": tf.__version__, "keras_version": keras.__version__}
    return versions


# --- resumable state ----------------------------------------------------------------------------


class _ResumeState:
    """Files under `checkpoints/<experiment>/` that let a killed run resume."""

    def __init__(self, directory: Path, fingerprint: str, keys: tuple[str, ...] = HISTORY_KEYS):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.keys = keys
        self.backup_dir = self.directory / "backup"
        self.live_dir = self.directory / "live"
        self.best_model_path = self.directory / "best.keras"
        self.best_path = self.directory / "best.json"
        self.history_path = self.directory / "history.csv"
        self.status_path = self.directory / "status.json"
        self._segment_started = time.perf_counter()

    def start(self) -> bool:
        """Keep the state of an interrupted run with the same params; else start afresh."""
        status = read_json(self.status_path) if self.status_path.is_file() else None
        self._segment_started = time.perf_counter()
        if status and status.get("fingerprint") == self.fingerprint and self.backup_dir.is_dir():
            log.info("resuming an interrupted run from %s", self.directory)
            return True
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        atomic_write_json(self.status_path, {"fingerprint": self.fingerprint, "time_s": 0.0})
        return False

    def epoch_done(self, row: dict) -> None:
        """Record one finished epoch's figures and the training time spent so far."""
        rows = [r for r in self.history() if int(r["epoch"]) < row["epoch"]] + [row]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["epoch", *self.keys])
        writer.writeheader()
        for item in rows:
            writer.writerow({key: item.get(key, "") for key in ["epoch", *self.keys]})
        atomic_write_bytes(self.history_path, buffer.getvalue().encode())
        status = read_json(self.status_path)
        now = time.perf_counter()
        status["time_s"] = status.get("time_s", 0.0) + (now - self._segment_started)
        self._segment_started = now
        atomic_write_json(self.status_path, status)

    def train_time_s(self) -> float:
        return float(read_json(self.status_path).get("time_s", 0.0))

    def best(self) -> dict | None:
        return read_json(self.best_path) if self.best_path.is_file() else None

    def history(self) -> list[dict]:
        if not self.history_path.is_file():
            return []
        with open(self.history_path, newline="") as stream:
            return list(csv.DictReader(stream))

    def finish(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.directory.parent.rmdir()  # checkpoints/ when no other run is in progress
