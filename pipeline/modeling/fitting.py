"""The Keras fit of the train stage: the callbacks that keep a run resumable after every epoch,
and the summary of a finished fit (`train.json`).

Imports Keras (through the callbacks) only when `fit` runs.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import AtelierError
from pipeline.core.metrics import mode
from pipeline.modeling.inputs import TrainingRows, make_datasets
from pipeline.modeling.resume import ResumeState
from pipeline.params import TASK_METRIC, Experiment


def fit(
    model,
    experiment: Experiment,
    data: TrainingRows,
    state: ResumeState,
    *,
    resuming: bool,
    seed: int,
    live_dir: Path,
    store=None,
) -> None:
    """`model.fit` with the callbacks that keep `state` resumable after every epoch; DVCLive's
    files are mirrored to `live_dir` as each epoch ends; `store` pushes the state to the DVC
    remote."""
    from dvclive import Live

    from pipeline.modeling.callbacks import (
        AtomicBackupAndRestore,
        BestCheckpoint,
        HistoryLog,
        LiveMetrics,
        LiveMirror,
        RemoteStatePush,
        ResumableEarlyStopping,
    )
    from pipeline.modeling.progress import training_progress

    # Keras' progress bar on a terminal; elsewhere (DVC, Prefect, CI) time-stamped log lines.
    progress = training_progress(state.directory.name)
    # Order matters: the epoch's figures and best checkpoint are on disk before the backup
    # says the epoch is done, so a kill in between re-runs the epoch rather than losing it.
    callbacks = [
        progress,
        HistoryLog(state),
        BestCheckpoint(state, experiment.monitor),
    ]
    if experiment.patience:
        callbacks.append(
            ResumableEarlyStopping(
                best=state.best(),
                monitor=experiment.monitor,
                patience=experiment.patience,
                mode=mode(experiment.monitor),
            )
        )
    callbacks.append(AtomicBackupAndRestore(str(state.backup_dir), delete_checkpoint=False))
    if store is not None:
        callbacks.append(RemoteStatePush(store, state))
    with Live(
        dir=str(state.live_dir), resume=resuming, save_dvc_exp=False, dvcyaml=None, report=None
    ) as live:
        if resuming:  # DVCLive's own count can be one epoch ahead of the backup's
            live.step = state.initial_epoch
        callbacks[:0] = [LiveMetrics(live), LiveMirror(state.live_dir, live_dir)]
        train_batches, val_batches = make_datasets(data, experiment.batch_size, seed)
        model.fit(
            train_batches,
            epochs=experiment.epochs,
            validation_data=val_batches,
            callbacks=callbacks,
            shuffle=False,  # the dataset reshuffles itself every epoch
            verbose=progress.fit_verbose,
        )


def fit_summary(
    experiment: Experiment,
    data: TrainingRows,
    model,
    state: ResumeState,
    *,
    name: str,
    fold: int | None,
) -> dict:
    """`train.json` of a finished fit: its best epoch and the figures of that epoch."""
    best = state.best()
    if best is None:
        raise AtelierError(
            f"Experiment {name!r} finished without a finite {experiment.monitor}; training "
            "diverged (try a lower learning_rate)."
        )
    metric = TASK_METRIC[data.task]
    segment = model.history.epoch if model.history is not None else []  # this fit's epochs
    last_epoch = max(segment) + 1 if segment else len(state.history())
    history = [row for row in state.history() if int(row["epoch"]) <= last_epoch]
    best_row = next(row for row in history if int(row["epoch"]) == best["epoch"])
    return {
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
        "train_time_s": round(state.train_time_s(), 3),
        "params_count": int(model.count_params()),
        **({} if fold is None else {"fold": fold, "n_train": len(data.y_train)}),
    }
