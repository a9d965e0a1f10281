"""Keras callbacks for resumable training: history, atomic best checkpoint, early stopping,
DVCLive's files mirrored where DVC reads them.

Imported only by the Keras path of the train stage (it imports Keras).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import keras

from pipeline.core.io import atomic_write_json, mirror_tree
from pipeline.core.metrics import mode
from pipeline.modeling.optimizers import serving_copy


class HistoryLog(keras.callbacks.Callback):
    """Record each epoch's train/validation figures in the resumable state."""

    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        figures = {key: float(logs[key]) for key in self.state.keys if key in logs}
        row = {"epoch": epoch + 1, **figures}
        self.state.epoch_done(row)


class RemoteStatePush(keras.callbacks.Callback):
    """Push the resume state to the DVC remote as each epoch ends (the store decides which
    epochs). Place it last: the epoch's backup, checkpoint and history are then on disk."""

    def __init__(self, store, state):
        super().__init__()
        self.store = store
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        self.store.push(self.state.directory, epoch + 1)


class LiveMetrics(keras.callbacks.Callback):
    """Each epoch's figures into DVCLive's `Live`, named as DVCLive's Keras callback names them
    (`train/accuracy`, `eval/accuracy`, ...), on any backend: that callback imports TensorFlow.
    The caller ends the `Live` run."""

    def __init__(self, live):
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch, logs=None):
        from dvclive.utils import standardize_metric_name

        for metric, value in (logs or {}).items():
            self.live.log_metric(standardize_metric_name(metric, "dvclive.keras"), value)
        self.live.next_step()


class LiveMirror(keras.callbacks.Callback):
    """Copy DVCLive's files from the resume state to `live/<run>/` at the start of training and
    after every epoch, so that `dvc exp show` and `dvc plots show` follow a run as it trains.

    DVCLive writes into the resume state (a resumed run continues its curves there); `live/<run>`
    is the stage's output, which DVC deletes before it runs the stage. Place it after DVCLive's
    callback, so that an epoch's files are written before they are copied.
    """

    def __init__(self, source: Path, target: Path):
        super().__init__()
        self.source, self.target = Path(source), Path(target)

    def on_train_begin(self, logs=None):
        mirror_tree(self.source, self.target)

    def on_epoch_end(self, epoch, logs=None):
        mirror_tree(self.source, self.target)


class BestCheckpoint(keras.callbacks.Callback):
    """Keep the best epoch by `monitor`, written atomically, with the best value persisted.

    Keras' `ModelCheckpoint` writes in place and forgets the best value after a resume; this one
    writes `best.keras` under a temporary name and renames it, and starts from the value stored
    beside it, so an interrupted run never replaces its best model with a worse one. The file is
    the serving model: weights and compile settings, a plain Keras optimizer with its state reset
    (`pipeline.modeling.optimizers.serving_copy`); the optimizer's state is in the resume backup.
    """

    def __init__(self, state, monitor: str):
        super().__init__()
        self.state = state
        self.monitor = monitor
        self.mode = mode(monitor)
        self._serving = None  # the serving copy, made once, then given each best epoch's weights

    def _better(self, value: float, best: dict | None) -> bool:
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        return value < best["value"] if self.mode == "min" else value > best["value"]

    def on_epoch_end(self, epoch, logs=None):
        value = float((logs or {}).get(self.monitor, float("nan")))
        if self._better(value, self.state.best()):
            tmp = self.state.best_model_path.with_name(".best.tmp.keras")
            if self._serving is None:
                self._serving = serving_copy(self.model)
            else:
                self._serving.set_weights(self.model.get_weights())
            self._serving.save(tmp)
            os.replace(tmp, self.state.best_model_path)
            atomic_write_json(
                self.state.best_path, {"epoch": epoch + 1, "value": value, "monitor": self.monitor}
            )


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose files are written under a temporary name, then renamed.

    Keras rewrites the backup's weights and `training_metadata.json` in place, so a run killed
    during that write leaves a file the next run cannot load, and it fails instead of resuming.
    Here each file is whole or absent. The weights are renamed into place before the metadata,
    so a kill between the two renames at worst trains one epoch again.
    """

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        partial = os.path.join(self.backup_dir, ".partial.weights.h5")
        self.model.save_weights(partial, overwrite=True)
        os.replace(partial, self._weights_path)
        atomic_write_json(
            Path(self._training_metadata_path),
            {"epoch": self._current_epoch, "batch": self._last_batch_seen},
        )


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` that, after a resume, counts patience from the run's best epoch.

    The best weights are kept by `BestCheckpoint` on disk, so nothing is restored in memory.
    """

    def __init__(self, *, best: dict | None, **kwargs):
        super().__init__(restore_best_weights=False, **kwargs)
        self._resume_best = best

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume_best is not None:
            self.best = self._resume_best["value"]
            self.best_epoch = self._resume_best["epoch"] - 1

    def on_epoch_begin(self, epoch, logs=None):
        if self._resume_best is not None:
            # Epochs finished since the best one count against patience.
            self.wait = max(0, epoch - self._resume_best["epoch"])
            self._resume_best = None
