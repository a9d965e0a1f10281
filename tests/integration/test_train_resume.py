"""Interrupted and concurrent trainings: real `python -m pipeline train` processes on digits.

One training is killed with SIGKILL once `checkpoints/<exp>/` records epoch KILL_AFTER (the test
watches the state on disk, not the clock), and its state is kept. Each test then runs again on a
copy of that project: unchanged, it resumes to the same total of epochs, each recorded once, with
`best.keras` the best epoch of the whole run; with a model module edited, or a state file
corrupted, it says why in one log line and starts afresh. Two trainings of one run started
together: one holds the lock and finishes, the other is refused with exit status 2. A `dvc repro`
killed mid-training leaves its training running as an orphan: a rerun meanwhile is refused (DVC's
own lock, left by the dead dvc, does not stand in the way), and once the orphan has finished, a
rerun trains the run whole and leaves `dvc status` clean.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core import paths
from pipeline.data.catalog import DIGITS
from pipeline.params import load_params
from pipeline.stages.download import DownloadSettings, download
from pipeline.stages.preprocess import PreprocessSettings, preprocess
from pipeline.stages.split import SplitSettings, split

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
DISCARDED = "not resuming from"  # the one log line of a discarded state


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
    """A project copy whose params.yaml (the real one, shrunk) has digits prepared."""
    return digits_project(tmp_path_factory.mktemp("resume"), {EXPERIMENT: SETTINGS})


def digits_project(root: Path, experiments: dict) -> Path:
    """`root` made a project: the pipeline's code, params.yaml with `experiments` on digits,
    digits downloaded, prepared and split."""
    shutil.copytree(
        PROJECT_ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"]["datasets"] = ["digits"]
    params["experiments"] = experiments
    params["crossval"] = {"experiments": [], "folds": []}  # no K-fold runs
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = load_params(root / "params.yaml")
    download(DIGITS, paths.raw_dir("digits", root), DownloadSettings())
    preprocess(
        DIGITS,
        raw_dir=paths.raw_dir("digits", root),
        out_dir=paths.prepared_dir("digits", root),
        settings=PreprocessSettings(
            seed=settings.base.seed, test_fraction=settings.data.test_fraction
        ),
        overview_dir=paths.overview_dir("digits", root),
    )
    split(
        prepared_dir=paths.prepared_dir("digits", root),
        out_dir=paths.split_dir("digits", root),
        settings=SplitSettings(
            val_fraction=settings.split.val_fraction,
            folds=settings.split.folds,
            seed=settings.base.seed,
        ),
    )
    return root


def copy_project(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


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


@dataclass(frozen=True)
class Interrupted:
    """A project whose training was killed mid-run, and what its state held at the kill."""

    root: Path
    backed_up: int
    history: dict[int, dict[str, float]]
    best: dict
    best_model: bytes


@pytest.fixture(scope="module")
def interrupted(project, tmp_path_factory) -> Interrupted:
    root = copy_project(project, tmp_path_factory.mktemp("killed") / "project")
    state_dir = root / "checkpoints" / EXPERIMENT
    log = root.parent / "first-run.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            command("train", EXPERIMENT),
            cwd=root,
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
    assert not (root / "models" / EXPERIMENT).exists(), "a killed run leaves no models/<exp>"
    # The dead process's lock file stays behind, with its PID: stale, free to take.
    assert (state_dir / "lock").read_text().strip() == str(process.pid)
    backed_up = backed_up_epochs(state_dir / "backup")
    assert KILL_AFTER <= backed_up < EPOCHS
    # DVCLive's files were in live/<exp> while it trained (what `dvc exp show` reads), each
    # epoch's copied before the epoch was recorded as done.
    watched = json.loads((root / "live" / EXPERIMENT / "metrics.json").read_text())
    assert KILL_AFTER - 1 <= watched["step"] < EPOCHS - 1
    with open(root / "live" / EXPERIMENT / "plots" / "metrics" / "eval" / "loss.tsv") as stream:
        steps = [int(row["step"]) for row in csv.DictReader(stream, delimiter="\t")]
    assert steps == list(range(watched["step"] + 1))
    return Interrupted(
        root=root,
        backed_up=backed_up,
        history={int(row["epoch"]): row for row in read_history(state_dir / "history.csv")},
        best=json.loads((state_dir / "best.json").read_text()),
        best_model=(state_dir / "best.keras").read_bytes(),
    )


def assert_complete_from_scratch(root: Path, result: subprocess.CompletedProcess) -> None:
    """The run trained epochs 1..EPOCHS in this process, each once, and delivered them."""
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"{EXPERIMENT}: epoch 1/{EPOCHS} done" in result.stderr
    summary = json.loads((root / "models" / EXPERIMENT / "train.json").read_text())
    history = read_history(root / "models" / EXPERIMENT / "history.csv")
    assert summary["resumed"] is False
    assert summary["epochs_run"] == EPOCHS
    assert [int(row["epoch"]) for row in history] == list(range(1, EPOCHS + 1))
    assert not (root / "checkpoints" / EXPERIMENT).exists()


def discard_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if DISCARDED in line]


def test_killed_run_resumes_to_the_same_total_and_keeps_the_best_checkpoint(interrupted, tmp_path):
    root = copy_project(interrupted.root, tmp_path / "project")
    state_dir = root / "checkpoints" / EXPERIMENT
    out_dir = root / "models" / EXPERIMENT
    backed_up = interrupted.backed_up

    second = run_cli(root, "train", EXPERIMENT)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "Traceback" not in second.stderr
    assert "resuming an interrupted run" in second.stderr
    assert not discard_lines(second.stderr)
    # It went on where the backup was, and did not start over.
    assert f"{EXPERIMENT}: epoch {backed_up + 1}/{EPOCHS} done" in second.stderr
    assert f"{EXPERIMENT}: epoch {backed_up}/{EPOCHS}" not in second.stderr

    summary = json.loads((out_dir / "train.json").read_text())
    history = read_history(out_dir / "history.csv")
    assert summary["resumed"] is True
    assert summary["epochs_run"] == EPOCHS  # in total, not EPOCHS more
    assert [int(row["epoch"]) for row in history] == list(range(1, EPOCHS + 1))
    for epoch in range(1, backed_up + 1):  # finished epochs were kept, not re-run
        assert history[epoch - 1] == interrupted.history[epoch]
    # DVCLive's plots have every epoch once too, even one it logged just before the kill.
    with open(root / "live" / EXPERIMENT / "plots" / "metrics" / "eval" / "loss.tsv") as stream:
        steps = [int(row["step"]) for row in csv.DictReader(stream, delimiter="\t")]
    assert steps == list(range(EPOCHS))

    best = min(history, key=lambda row: row["val_loss"])
    assert summary["best_epoch"] == int(best["epoch"])
    assert summary["best_value"] == pytest.approx(best["val_loss"], abs=1e-6)
    assert summary["best_value"] <= interrupted.best["value"] + 1e-9
    if summary["best_epoch"] == interrupted.best["epoch"] <= backed_up:
        # No epoch after the resume beat it: the file saved before the kill is the one delivered.
        assert (out_dir / "best.keras").read_bytes() == interrupted.best_model

    # best.keras is the model of that epoch: its validation loss is the recorded best value.
    import keras

    model = keras.saving.load_model(out_dir / "best.keras", safe_mode=True)
    x = np.load(root / "data" / "prepared" / "digits" / "x_train.npy")
    y = np.load(root / "data" / "prepared" / "digits" / "y_train.npy")
    val_idx = np.load(root / "data" / "split" / "digits" / "val_idx.npy")
    probabilities = np.asarray(model.predict(x[val_idx], verbose=0), dtype=np.float64)
    loss = float(-np.mean(np.log(probabilities[np.arange(len(val_idx)), y[val_idx]])))
    assert loss == pytest.approx(summary["best_value"], rel=1e-4)

    assert not state_dir.exists(), "the resume state is removed once the run is complete"


def test_run_whose_model_code_changed_starts_afresh_and_says_why(interrupted, tmp_path):
    root = copy_project(interrupted.root, tmp_path / "project")
    builders = root / "pipeline" / "modeling" / "models.py"
    builders.write_text(builders.read_text() + "\nCHANGED_AFTER_THE_KILL = True\n")

    result = run_cli(root, "train", EXPERIMENT)

    assert_complete_from_scratch(root, result)
    [line] = discard_lines(result.stderr)
    assert "code (pipeline.modeling.models) changed" in line
    assert "starting afresh" in line
    assert "params" not in line and "data (" not in line


def test_corrupt_state_file_is_discarded_in_one_line_and_training_starts_afresh(
    interrupted, tmp_path
):
    root = copy_project(interrupted.root, tmp_path / "project")
    status = root / "checkpoints" / EXPERIMENT / "status.json"
    status.write_bytes(status.read_bytes()[:20])  # cut short, as a failing disk might leave it

    result = run_cli(root, "train", EXPERIMENT)

    assert_complete_from_scratch(root, result)
    [line] = discard_lines(result.stderr)
    assert "status.json cannot be read" in line


def test_second_training_of_a_run_is_refused_while_the_first_finishes(project, tmp_path):
    root = copy_project(project, tmp_path / "project")
    lock = root / "checkpoints" / EXPERIMENT / "lock"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    streams = [open(path, "w") for path in logs]  # noqa: SIM115 (closed below)
    processes = [
        subprocess.Popen(
            command("train", EXPERIMENT),
            cwd=root,
            env=cli_env(),
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
        for stream in streams
    ]
    by_pid = {process.pid: process for process in processes}
    holder = None
    try:
        # Whichever process takes the lock writes its PID there; stopped at once, it holds the
        # lock for as long as the other needs to reach it, however slow the machine.
        deadline = time.monotonic() + 120
        while holder is None and time.monotonic() < deadline:
            text = lock.read_text() if lock.is_file() else ""
            if text.endswith("\n") and int(text) in by_pid:
                holder = by_pid[int(text)]
                holder.send_signal(signal.SIGSTOP)
            elif any(process.poll() is not None for process in processes):
                break
            else:
                time.sleep(0.01)
        assert holder is not None, "no process took the lock:\n" + logs[0].read_text()
        [other] = [process for process in processes if process is not holder]
        other.wait(timeout=120)
        holder.send_signal(signal.SIGCONT)
        holder.wait(timeout=240)
    finally:
        for process in processes:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait(timeout=60)
        for stream in streams:
            stream.close()

    refused = logs[processes.index(other)].read_text()
    finished = logs[processes.index(holder)].read_text()
    assert other.returncode == 2, refused
    assert f"error: Experiment {EXPERIMENT!r} is already being trained by process " in refused
    assert f"process {holder.pid}," in refused
    assert "Traceback" not in refused
    assert holder.returncode == 0, finished
    assert "Traceback" not in finished
    summary = json.loads((root / "models" / EXPERIMENT / "train.json").read_text())
    history = read_history(root / "models" / EXPERIMENT / "history.csv")
    assert summary["epochs_run"] == EPOCHS
    assert summary["resumed"] is False
    assert [int(row["epoch"]) for row in history] == list(range(1, EPOCHS + 1))
    assert not (root / "checkpoints").exists()


# --- `dvc repro` killed, its training left running ----------------------------------------------

VENV_BIN = Path(sys.executable).parent
DVC_FILES = ("dvc.yaml", ".dvcignore")
DATA_STAGES = ("download@digits", "preprocess@digits", "split@digits")


def dvc_env() -> dict[str, str]:
    """`cli_env()` with the venv first on PATH: dvc.yaml's `python -m pipeline` is the venv's."""
    env = cli_env()
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "dvc"), *args],
        cwd=root,
        env=dvc_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def make_dvc_project(project: Path, target: Path) -> Path:
    """A copy of `project` under DVC, its data stages recorded in dvc.lock as already run."""
    root = copy_project(project, target)
    for name in DVC_FILES:
        shutil.copy2(PROJECT_ROOT / name, root / name)
    for args in (("init", "--no-scm", "--quiet"), ("commit", "--force", *DATA_STAGES)):
        result = dvc(root, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    return root


def exited(pid: int) -> bool:
    """Whether process `pid` has ended: gone, or a zombie that no one has reaped yet."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # an orphan is reaped by init, which may take its time
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False  # no /proc here (signal 0 said it exists), or it ended just now
    return state == "Z"


def test_rerun_after_dvc_is_killed_is_refused_while_its_training_runs_then_completes(
    project, tmp_path
):
    root = make_dvc_project(project, tmp_path / "project")
    stage = f"train@{EXPERIMENT}"
    state_dir = root / "checkpoints" / EXPERIMENT
    log = tmp_path / "killed-dvc.log"  # dvc's output, then the orphaned training's
    with open(log, "w") as output:
        killed = subprocess.Popen(
            [str(VENV_BIN / "dvc"), "repro", stage],
            cwd=root,
            env=dvc_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's job has
        )
    try:
        wait_for_epoch(killed, state_dir, 1, log)
        orphan = int((state_dir / "lock").read_text())
        # Only dvc dies, as when the terminal that ran it is closed; its training goes on.
        # Stopped at once, the orphan holds its lock for as long as the rerun needs to reach
        # it, however slow the machine.
        os.kill(orphan, signal.SIGSTOP)
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(timeout=60) == -signal.SIGKILL  # reaped, as its shell would
        assert orphan != killed.pid
        assert not exited(orphan), "the training finished before dvc could be killed"

        refused = dvc(root, "repro", stage)

        os.kill(orphan, signal.SIGCONT)
        deadline = time.monotonic() + 240
        while not exited(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exited(orphan), "the orphaned training did not finish:\n" + log.read_text()
    finally:
        # dvc and its training share the group: whatever of them is left goes, stopped or not.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)

    # DVC takes its own lock, left by the killed dvc, as stale; ours refuses, naming the orphan.
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "Traceback" not in output
    assert (
        f"error: Experiment {EXPERIMENT!r} is already being trained by process {orphan}, "
    ) in refused.stderr
    assert f"failed to reproduce '{stage}'" in refused.stderr
    # The orphan was left alone: it finished its run, every epoch once, and delivered it.
    orphaned = log.read_text()
    assert "Traceback" not in orphaned
    assert f"{EXPERIMENT}: best epoch " in orphaned
    history = read_history(root / "models" / EXPERIMENT / "history.csv")
    assert [int(row["epoch"]) for row in history] == list(range(1, EPOCHS + 1))

    # dvc.lock never recorded the orphan's run: the rerun trains it afresh, and records it.
    rerun = dvc(root, "repro", stage)

    assert "Traceback" not in rerun.stdout
    assert f"Running stage '{stage}'" in rerun.stdout
    assert_complete_from_scratch(root, rerun)
    status = dvc(root, "status", stage)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "Data and pipelines are up to date." in status.stdout
