"""Kill-and-resume: a training process killed with SIGKILL mid-run, then run again to the end.

The run is a real `python -m pipeline train` process on digits in a copy of the project. The test
watches the resumable state on disk (not the clock): once `checkpoints/<exp>/history.csv` records
epoch KILL_AFTER and Keras' backup says that epoch is done, the process is killed. Run again, it
must finish the same total number of epochs, each recorded once, with `best.keras` the best epoch
of the whole run, never replaced by a worse one after the resume.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "digits_resume"
EPOCHS = 12
KILL_AFTER = 4
# Wide enough, and a high enough learning rate, that validation loss is noisy: epochs after
# the resume are often worse than the best before it, which a forgetful checkpoint would keep.
SETTINGS = {
    "dataset": "digits",
    "model": {"name": "mlp", "units": [256]},
    "epochs": EPOCHS,
    "batch_size": 32,
    "learning_rate": 0.02,
    "patience": None,
}


def cli_env() -> dict[str, str]:
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("PYTHONPATH", None)
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*args), cwd=root, env=cli_env(), capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project copy whose params.yaml (the real one, shrunk) has digits prepared by the CLI."""
    root = tmp_path_factory.mktemp("resume")
    shutil.copytree(
        PROJECT_ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"]["datasets"] = ["digits"]
    params["experiments"] = {EXPERIMENT: SETTINGS}
    params["crossval"] = {"experiments": [], "folds": []}  # no K-fold runs
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("download", "preprocess", "split"):
        result = run_cli(root, stage, "digits")
        assert result.returncode == 0, result.stderr
    return root


def read_history(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as stream:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(stream)]


def backed_up_epochs(backup_dir: Path) -> int:
    """Epochs that Keras' BackupAndRestore has saved (0 while none, or mid-write)."""
    try:
        return int(json.loads((backup_dir / "training_metadata.json").read_text())["epoch"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def recorded_epochs(history_path: Path) -> int:
    try:
        return len(read_history(history_path))
    except (FileNotFoundError, ValueError):
        return 0


def wait_for_epoch(process: subprocess.Popen, state_dir: Path, epoch: int, log: Path) -> None:
    """Poll the resumable state until `epoch` is both recorded and backed up."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"training exited ({process.returncode}) before epoch {epoch} was backed up:\n"
                + log.read_text()
            )
        if (
            recorded_epochs(state_dir / "history.csv") >= epoch
            and backed_up_epochs(state_dir / "backup") >= epoch
        ):
            return
        time.sleep(0.01)
    pytest.fail(f"epoch {epoch} not backed up in 240 s:\n" + log.read_text())


def test_killed_run_resumes_to_the_same_total_and_keeps_the_best_checkpoint(project, tmp_path):
    state_dir = project / "checkpoints" / EXPERIMENT
    out_dir = project / "models" / EXPERIMENT
    log = tmp_path / "first-run.log"

    with open(log, "w") as output:
        process = subprocess.Popen(
            command("train", EXPERIMENT),
            cwd=project,
            env=cli_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_epoch(process, state_dir, KILL_AFTER, log)
            assert process.poll() is None, "training finished before it could be killed"
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    assert not out_dir.exists(), "a killed run must not leave models/<exp> behind"
    backed_up = backed_up_epochs(state_dir / "backup")
    assert KILL_AFTER <= backed_up < EPOCHS
    before_kill = {int(row["epoch"]): row for row in read_history(state_dir / "history.csv")}
    best_before_kill = json.loads((state_dir / "best.json").read_text())
    best_model_before_kill = (state_dir / "best.keras").read_bytes()

    second = run_cli(project, "train", EXPERIMENT)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming an interrupted run" in second.stderr
    assert f"Epoch {backed_up + 1}/{EPOCHS}" in second.stdout  # went on where the backup was
    assert "Epoch 1/" not in second.stdout  # and did not start over

    summary = json.loads((out_dir / "train.json").read_text())
    history = read_history(out_dir / "history.csv")
    assert summary["resumed"] is True
    assert summary["epochs_run"] == EPOCHS  # in total, not EPOCHS more
    assert [int(row["epoch"]) for row in history] == list(range(1, EPOCHS + 1))
    for epoch in range(1, backed_up + 1):  # finished epochs were kept, not re-run
        assert history[epoch - 1] == before_kill[epoch]

    best = min(history, key=lambda row: row["val_loss"])
    assert summary["best_epoch"] == int(best["epoch"])
    assert summary["best_value"] == pytest.approx(best["val_loss"], abs=1e-6)
    assert summary["best_value"] <= best_before_kill["value"] + 1e-9
    if summary["best_epoch"] == best_before_kill["epoch"] <= backed_up:
        # No epoch after the resume beat it: the file saved before the kill is the one delivered.
        assert (out_dir / "best.keras").read_bytes() == best_model_before_kill

    # best.keras is the model of that epoch: its validation loss is the recorded best value.
    import keras

    model = keras.saving.load_model(out_dir / "best.keras", safe_mode=True)
    x = np.load(project / "data" / "prepared" / "digits" / "x_train.npy")
    y = np.load(project / "data" / "prepared" / "digits" / "y_train.npy")
    val_idx = np.load(project / "data" / "split" / "digits" / "val_idx.npy")
    probabilities = np.asarray(model.predict(x[val_idx], verbose=0), dtype=np.float64)
    loss = float(-np.mean(np.log(probabilities[np.arange(len(val_idx)), y[val_idx]])))
    assert loss == pytest.approx(summary["best_value"], rel=1e-4)

    assert not state_dir.exists(), "the resume state is removed once the run is complete"
