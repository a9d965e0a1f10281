"""Train stage (`train@<experiment>`): fit one experiment and keep its best epoch.

Outputs, in `models/<experiment>/`:
- `best.keras` — the best epoch by `monitor` (Keras models) or `model.npz` (the SGD baseline);
- `history.csv` — per-epoch train/validation loss and the task's metric (accuracy for
  classification, MAE for regression);
- `train.json` — best epoch and its validation figures, epochs run, training time, parameter
  count, device and precision, the Keras backend and the versions of Keras and of the backend's
  library (and cross-validation scores for the baseline).

DVCLive (its `Live` API, through `LiveMetrics`: its own Keras callback imports TensorFlow)
records each epoch's train and validation figures in the resume state;
after every epoch they are copied to `live/<experiment>/`, which `dvc.yaml` declares as the
stage's metrics (`metrics.json`, the last epoch's) and plots (`plots/metrics/{train,eval}/*.tsv`),
so `dvc exp show` and `dvc plots show` follow a run while it trains. The SGD baseline writes its
validation and cross-validation accuracy there, and the accuracy of each CV fold as its plot.

K-fold (`train_fold@<experiment>-<k>`, `--fold k`): the same experiment trained on every fold of
the training set but fold k and validated on fold k; its outputs go to
`models/folds/<experiment>-fold<k>/` and `live/<experiment>-fold<k>/`.

Resuming (`pipeline/modeling/resume.py`): while a run trains, its state is in
`checkpoints/<experiment>/`, locked by that one process; a killed run started again resumes after
its last finished epoch if its params, data and code are the same, else starts afresh.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.errors import AtelierError, DataError
from pipeline.core.io import atomic_dir, atomic_write_bytes, atomic_write_json, read_json
from pipeline.core.runlock import RunLock
from pipeline.modeling.backend import backend_of, use_backend
from pipeline.modeling.device import (
    configure_device,
    cpu_isa,
    library_versions,
    seed_everything,
)
from pipeline.modeling.fitting import fit, fit_summary
from pipeline.modeling.inputs import input_spec
from pipeline.modeling.resume import ResumeState, fingerprint
from pipeline.modeling.resume_store import RemoteResumeStore
from pipeline.params import TASK_METRIC, Experiment, Params, RuntimeParams

log = logging.getLogger(__name__)

LOSSES = {
    "classification": "sparse_categorical_crossentropy",
    "regression": "mse",
    "multilabel": "binary_crossentropy",
}


def history_keys(task: str) -> tuple[str, ...]:
    """The per-epoch columns of `history.csv` for `task`."""
    metric = TASK_METRIC[task]
    return ("loss", metric, "val_loss", f"val_{metric}")


@dataclass(frozen=True)
class TrainData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    meta: dict
    standardize: dict | None = None  # tabular: the split stage's per-feature statistics
    # Every file read for these rows, by its path from the project root: the data that a
    # resumed run must share with the interrupted one.
    files: dict[str, Path] = field(default_factory=dict)

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
    read = [prepared / "x_train.npy", prepared / "y_train.npy", prepared / "meta.json"]
    if fold is None:
        train_idx, val_idx = np.load(split / "train_idx.npy"), np.load(split / "val_idx.npy")
        read += [split / "train_idx.npy", split / "val_idx.npy"]
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
        read.append(folds_path)
    standardize_path = split / "standardize.json"
    if standardize_path.is_file():
        read.append(standardize_path)
    meta = read_json(prepared / "meta.json")
    if meta.get("kind") == "image_files":  # the rows are image paths: the images are read too
        read += [prepared / str(rel) for rel in np.unique(x[np.concatenate([train_idx, val_idx])])]
    return TrainData(
        x_train=np.ascontiguousarray(x[train_idx]),
        y_train=y[train_idx],
        x_val=np.ascontiguousarray(x[val_idx]),
        y_val=y[val_idx],
        meta=meta | {"prepared_dir": str(prepared.absolute())},
        standardize=read_json(standardize_path) if standardize_path.is_file() else None,
        files={path.relative_to(root).as_posix(): path for path in read},
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
    if experiment.is_keras:  # before anything imports Keras
        use_backend(
            backend_of(experiment, params.runtime), deterministic=params.runtime.deterministic
        )
    run = paths.run_name(name, fold)
    out_dir = paths.model_dir(name, root) if fold is None else paths.fold_model_dir(run, root)
    # One process at a time per run: a second one is refused (exit 2) before it writes anything.
    with RunLock(paths.checkpoint_dir(run, root), run):
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
        "cpu_isa": cpu_isa(),
        **library_versions(keras_too=False),
    }
    with atomic_dir(out_dir) as staging:
        predictor.save(staging / "model.npz")
        atomic_write_json(staging / "train.json", summary)
    with atomic_dir(live_dir) as staging:
        atomic_write_json(
            staging / "metrics.json",
            {key: summary[key] for key in ("val_accuracy", "cv_mean", "cv_std")},
        )
        rows = "".join(f"{fold}\t{score}\n" for fold, score in enumerate(cv_scores))
        atomic_write_bytes(
            staging / "plots/metrics/cv/accuracy.tsv", f"step\taccuracy\n{rows}".encode()
        )
    log.info(
        "sgd_logistic: CV %.4f ± %.4f, val %.4f",
        summary["cv_mean"],
        summary["cv_std"],
        val_accuracy,
    )
    return summary


# --- Keras --------------------------------------------------------------------------------------


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
    """Fit a Keras experiment, resuming an interrupted run of it; write its outputs.

    Call it holding the run's `RunLock` (as `train_experiment` does): it reads and writes the
    resume state in `checkpoint_dir`.
    """
    if experiment.batch_size > len(data.y_train):
        raise AtelierError(
            f"experiments.{name}.batch_size = {experiment.batch_size} is larger than the "
            f"training set ({len(data.y_train)} rows of {experiment.dataset!r}): lower it."
        )
    if data.task != experiment.task:
        raise DataError(
            f"data/prepared/{experiment.dataset} holds a {data.task} set but the catalog says "
            f"{experiment.task}: re-run `dvc repro preprocess@{experiment.dataset}`."
        )
    # Every module that trains the run is loaded before the fingerprint hashes the code.
    from pipeline.modeling import callbacks, progress  # noqa: F401

    device = configure_device(runtime)
    seed_everything(seed, runtime.deterministic)
    strategy, model = _compiled_model(experiment, data, name=name, runtime=runtime, device=device)
    # Only once the model is known to fit the data: a refused model leaves no resume state.
    run_params = {"experiment": experiment.model_dump(mode="json"), "seed": seed, "fold": fold}
    # The backup's variables differ with the precision, and its files with the backend.
    run_params |= {"mixed_precision": device["mixed_precision"], "backend": device["backend"]}
    run_fingerprint = fingerprint(run_params, data.files)
    state = ResumeState(checkpoint_dir, keys=history_keys(data.task))
    # checkpoints/<run> → the project root, whose DVC remote keeps the state when asked to.
    store = RemoteResumeStore.open(
        checkpoint_dir.resolve().parents[1], state.directory.name, run_fingerprint,
        runtime.checkpoint_every,
    )  # fmt: skip
    if store is not None:
        store.fetch(state.directory)
    with _scope(strategy):
        resuming = state.start(run_fingerprint, model)
    fit(
        model, experiment, data, state, resuming=resuming, seed=seed, live_dir=live_dir,
        store=store,
    )  # fmt: skip

    summary = fit_summary(experiment, data, model, state, name=name, fold=fold)
    summary |= {"resumed": resuming, **device, **library_versions(keras_too=True)}
    with atomic_dir(out_dir) as staging:
        shutil.copyfile(state.best_model_path, staging / "best.keras")
        shutil.copyfile(state.history_path, staging / "history.csv")
        atomic_write_json(staging / "train.json", summary)
    with atomic_dir(live_dir) as staging:
        shutil.copytree(state.live_dir, staging, dirs_exist_ok=True)
    state.finish()
    if store is not None:
        store.discard()
    figures = ("val_loss", f"val_{TASK_METRIC[data.task]}")
    log.info(
        "%s: best epoch %d of %d, %s, %.1f s",
        paths.run_name(name, fold),
        summary["best_epoch"],
        summary["epochs_run"],
        ", ".join(f"{key}={summary[key]:.4f}" for key in figures),
        summary["train_time_s"],
    )
    return summary


def _compiled_model(
    experiment: Experiment, data: TrainData, *, name: str, runtime: RuntimeParams, device: dict
):
    """The experiment's model, compiled; on several GPUs, data-parallel: under a
    `MirroredStrategy` (returned) with TensorFlow, `keras.distribution.DataParallel` with JAX."""
    import keras

    from pipeline.modeling.models import build_model
    from pipeline.modeling.optimizers import learning_rate_schedule, make_optimizer

    spec = input_spec(experiment.model, data)
    steps_per_epoch = -(-len(data.y_train) // experiment.batch_size)
    learning_rate = learning_rate_schedule(experiment, steps_per_epoch=steps_per_epoch)
    strategy = None
    if device["gpus"] > 1 and device["backend"] == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
    elif device["gpus"] > 1:
        keras.distribution.set_distribution(keras.distribution.DataParallel())
    with _scope(strategy):
        model = build_model(experiment.model, spec, name=name)
        model.compile(
            optimizer=make_optimizer(
                experiment.optimizer, learning_rate, distributed=strategy is not None
            ),
            loss=LOSSES[data.task],
            metrics=[TASK_METRIC[data.task]],
            steps_per_execution=runtime.steps_per_execution,
        )
    return strategy, model


def _scope(strategy):
    return strategy.scope() if strategy else contextlib.nullcontext()
