"""Train stage on the digits dataset: bad input, learning, saved artefacts, determinism, callbacks,
the run lock and the resume state's checks.

Each test works in a copy of the project under `tmp_path` whose params.yaml is the real one shrunk
to the digits dataset (bundled with scikit-learn, no network). The digits arrays are prepared once
per module; the CLI runs (`python -m pipeline train <exp>`) are real processes on the CPU. Killed
and concurrent trainings are in tests/integration/test_train_resume.py.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core import paths
from pipeline.core.errors import AtelierError, DataError, ParamsError
from pipeline.data.catalog import DIGITS
from pipeline.modeling.models import LinearPredictor
from pipeline.params import load_params, parse_params
from pipeline.stages.download import DownloadSettings, download
from pipeline.stages.preprocess import PreprocessSettings, preprocess
from pipeline.stages.split import SplitSettings, split
from pipeline.stages.train import train_experiment

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DIGITS_TRAIN_ROWS = 1150  # 1,797 rows → 1,437 train (test_fraction 0.2) → 1,150 after val 0.2

MLP = {
    "dataset": "digits",
    "model": {"name": "mlp", "units": [64]},
    "epochs": 10,
    "batch_size": 32,
}
SGD = {"dataset": "digits", "model": {"name": "sgd_logistic", "max_iter": 20}}


# --- a project copy with digits prepared ---------------------------------------------------------


def write_params(root: Path, experiments: dict) -> None:
    """The project's own params.yaml, shrunk to digits and the given experiments."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"]["datasets"] = ["digits"]
    params["experiments"] = experiments
    params["crossval"] = {"experiments": [], "folds": []}  # no K-fold runs
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(root: Path, experiments: dict, *, data_from: Path | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        PROJECT_ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    write_params(root, experiments)
    if data_from is not None:
        shutil.copytree(data_from / "data", root / "data")
    return root


def prepare_digits(root: Path) -> None:
    """The download → preprocess → split stages for digits, with the settings of params.yaml."""
    params = load_params(root / "params.yaml")
    download(DIGITS, paths.raw_dir("digits", root), DownloadSettings())
    preprocess(
        DIGITS,
        raw_dir=paths.raw_dir("digits", root),
        out_dir=paths.prepared_dir("digits", root),
        settings=PreprocessSettings(seed=params.base.seed, test_fraction=params.data.test_fraction),
    )
    split(
        prepared_dir=paths.prepared_dir("digits", root),
        out_dir=paths.split_dir("digits", root),
        settings=SplitSettings(
            val_fraction=params.split.val_fraction, folds=params.split.folds, seed=params.base.seed
        ),
    )


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory) -> Path:
    """A project copy whose data/ holds digits, prepared once for this module."""
    root = make_project(tmp_path_factory.mktemp("digits"), {})
    prepare_digits(root)
    return root


@pytest.fixture
def project(tmp_path, digits_root):
    """Make a project copy with digits prepared and the given experiments; return its root."""

    def make(experiments: dict, *, prepared: bool = True) -> Path:
        return make_project(
            tmp_path / "project", experiments, data_from=digits_root if prepared else None
        )

    return make


def cli_env() -> dict[str, str]:
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",  # these are CPU tests, also on a machine with a GPU
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("PYTHONPATH", None)
    return env


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=root,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def read_history(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as stream:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(stream)]


def validation_rows(root: Path) -> tuple[np.ndarray, np.ndarray]:
    prepared, split_dir = paths.prepared_dir("digits", root), paths.split_dir("digits", root)
    val_idx = np.load(split_dir / "val_idx.npy")
    return np.load(prepared / "x_train.npy")[val_idx], np.load(prepared / "y_train.npy")[val_idx]


def training_rows(root: Path) -> tuple[np.ndarray, np.ndarray]:
    prepared, split_dir = paths.prepared_dir("digits", root), paths.split_dir("digits", root)
    train_idx = np.load(split_dir / "train_idx.npy")
    return np.load(prepared / "x_train.npy")[train_idx], np.load(prepared / "y_train.npy")[
        train_idx
    ]


# --- bad input ----------------------------------------------------------------------------------


def shrunk_params(experiments: dict):
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"]["datasets"] = ["digits"]
    params["experiments"] = experiments
    params["crossval"] = {"experiments": [], "folds": []}  # no K-fold runs
    return parse_params(params)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ParamsError) as caught:
        shrunk_params({"x": {**MLP, "model": {"name": "resnet50"}}})

    message = str(caught.value)
    assert "experiments.x.model.name = 'resnet50': unknown model" in message
    assert (
        "known models: softmax_regression, mlp, cnn, compact_cnn, regressor, multilabel_mlp, "
        "sgd_logistic" in message
    )


@pytest.mark.parametrize("epochs", [0, -3])
def test_non_positive_epochs_are_refused(epochs):
    with pytest.raises(ParamsError) as caught:
        shrunk_params({"x": {**MLP, "epochs": epochs}})

    assert f"experiments.x.epochs = {epochs}: Input should be greater than 0" in str(caught.value)


def test_unprepared_dataset_says_which_stage_to_run(project):
    root = project({"x": MLP}, prepared=False)

    with pytest.raises(DataError) as caught:
        train_experiment(load_params(root / "params.yaml"), "x", root=root)

    message = str(caught.value)
    assert "Dataset 'digits' is not prepared" in message
    assert "run `dvc repro split@digits`" in message
    assert not (root / "models").exists()


def test_batch_size_larger_than_the_training_set_names_the_key(project):
    root = project({"big": {**MLP, "batch_size": 5000}})

    with pytest.raises(AtelierError) as caught:
        train_experiment(load_params(root / "params.yaml"), "big", root=root)

    message = str(caught.value)
    assert "experiments.big.batch_size = 5000" in message
    assert f"larger than the training set ({DIGITS_TRAIN_ROWS} rows of 'digits')" in message
    assert not (root / "models").exists()


def test_batch_size_equal_to_the_training_set_is_accepted(project):
    root = project({"whole": {**MLP, "epochs": 1, "batch_size": DIGITS_TRAIN_ROWS}})

    summary = train_experiment(load_params(root / "params.yaml"), "whole", root=root)

    assert summary["epochs_run"] == 1


def test_cnn_that_does_not_fit_the_images_leaves_nothing_behind(project):
    root = project({"tiny_cnn": {**MLP, "model": {"name": "cnn", "kernel_size": 5}}})

    with pytest.raises(AtelierError) as caught:
        train_experiment(load_params(root / "params.yaml"), "tiny_cnn", root=root)

    assert "Model 'cnn' does not fit 8×8 images" in str(caught.value)
    assert not (root / "models" / "tiny_cnn").exists()
    assert not (root / "checkpoints" / "tiny_cnn").exists()
    assert not (root / "live" / "tiny_cnn").exists()


CLI_MISTAKES = [
    pytest.param(
        {"x": {**MLP, "model": {"name": "resnet50"}}},
        True,
        "experiments.x.model.name = 'resnet50': unknown model; known models: "
        "softmax_regression, mlp, cnn, compact_cnn, regressor, multilabel_mlp, sgd_logistic",
        id="unknown-model",
    ),
    pytest.param(
        {"x": {**MLP, "epochs": 0}},
        True,
        "experiments.x.epochs = 0: Input should be greater than 0",
        id="zero-epochs",
    ),
    pytest.param(
        {"x": MLP},
        False,
        "Dataset 'digits' is not prepared",
        id="not-prepared",
    ),
    pytest.param(
        {"x": {**MLP, "batch_size": 5000}},
        True,
        "experiments.x.batch_size = 5000 is larger than the training set",
        id="batch-size",
    ),
    # Found after TensorFlow is imported and the model is built: still one clean message.
    pytest.param(
        {"x": {**MLP, "model": {"name": "cnn", "kernel_size": 5}}},
        True,
        "Model 'cnn' does not fit 8×8 images",
        id="cnn-too-big-kernel",
        marks=pytest.mark.slow,
    ),
]


@pytest.mark.parametrize(("experiments", "prepared", "expected"), CLI_MISTAKES)
def test_cli_reports_a_mistake_in_one_message_and_exits_2(project, experiments, prepared, expected):
    root = project(experiments, prepared=prepared)

    result = run_cli(root, "train", "x")

    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "error: " in result.stderr
    assert "Traceback" not in result.stderr
    assert not (root / "models" / "x").exists()
    assert not (root / "checkpoints" / "x").exists()


def test_cli_unknown_experiment_lists_the_defined_ones(project):
    root = project({"digits_mlp": MLP, "digits_sgd": SGD})

    result = run_cli(root, "train", "nope")

    assert result.returncode == 2
    assert "Unknown experiment 'nope': params.yaml defines digits_mlp, digits_sgd" in result.stderr
    assert "Traceback" not in result.stderr


# --- learning and saved artefacts (one real CLI run per model, shared by the tests below) -------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_root) -> Path:
    """A project where `python -m pipeline train` ran digits_mlp and digits_sgd to completion."""
    root = make_project(
        tmp_path_factory.mktemp("trained"),
        {"digits_mlp": MLP, "digits_sgd": SGD},
        data_from=digits_root,
    )
    for name in ("digits_mlp", "digits_sgd"):
        result = run_cli(root, "train", name)
        assert result.returncode == 0, result.stdout + result.stderr
    return root


@pytest.mark.slow
def test_mlp_learns_far_above_chance_with_falling_loss(trained):
    out = trained / "models" / "digits_mlp"
    summary = json.loads((out / "train.json").read_text())
    history = read_history(out / "history.csv")

    assert [row["epoch"] for row in history] == list(range(1, MLP["epochs"] + 1))
    assert summary["val_accuracy"] > 0.8  # chance: 0.1 on ten balanced classes
    assert history[-1]["loss"] < history[0]["loss"] / 2
    assert history[-1]["val_loss"] < history[0]["val_loss"] / 2
    assert history[-1]["accuracy"] > history[0]["accuracy"]
    assert not (trained / "checkpoints" / "digits_mlp").exists()  # resume state removed


@pytest.mark.slow
def test_train_json_has_the_documented_keys(trained):
    summary = json.loads((trained / "models" / "digits_mlp" / "train.json").read_text())
    history = read_history(trained / "models" / "digits_mlp" / "history.csv")

    documented = {
        "model", "dataset", "model_file", "monitor", "best_epoch", "best_value", "epochs_run",
        "val_loss", "val_accuracy", "train_time_s", "params_count", "device",
        "tensorflow_version", "keras_version", "resumed",
    }  # fmt: skip
    assert documented <= set(summary)
    assert summary["model"] == "mlp"
    assert summary["dataset"] == "digits"
    assert summary["model_file"] == "best.keras"
    assert summary["monitor"] == "val_loss"
    assert summary["device"] == "cpu"
    assert summary["resumed"] is False
    assert summary["epochs_run"] == MLP["epochs"]
    assert summary["params_count"] == 64 * 64 + 64 + 64 * 10 + 10  # 8×8 pixels → 64 → 10
    assert summary["tensorflow_version"][0].isdigit()
    assert tuple(int(part) for part in summary["keras_version"].split(".")[:3]) >= (3, 13, 2)
    best = min(history, key=lambda row: row["val_loss"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best_value"] == pytest.approx(best["val_loss"], abs=1e-6)
    assert summary["val_loss"] == pytest.approx(best["val_loss"], abs=1e-6)
    assert summary["val_accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_best_keras_loads_in_safe_mode_and_predicts_raw_uint8(trained):
    import keras

    summary = json.loads((trained / "models" / "digits_mlp" / "train.json").read_text())
    model = keras.saving.load_model(
        trained / "models" / "digits_mlp" / "best.keras", safe_mode=True
    )
    x_val, y_val = validation_rows(trained)
    assert x_val.dtype == np.uint8

    probabilities = model.predict(x_val, verbose=0)

    assert probabilities.shape == (len(y_val), 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == y_val))
    assert accuracy == pytest.approx(summary["val_accuracy"], abs=1e-6)  # it is the best epoch


@pytest.mark.slow
def test_sgd_baseline_beats_chance_and_loads_without_pickle(trained):
    out = trained / "models" / "digits_sgd"
    summary = json.loads((out / "train.json").read_text())

    assert summary["model_file"] == "model.npz"
    assert len(summary["cv_scores"]) == 5
    assert summary["cv_mean"] == pytest.approx(np.mean(summary["cv_scores"]))
    assert summary["cv_mean"] > 0.8
    assert summary["val_accuracy"] > 0.8
    with np.load(out / "model.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["classes", "coef", "intercept", "value_max"]
    predictor = LinearPredictor.load(out / "model.npz")
    assert predictor.coef.shape == (10, 64)
    assert predictor.count_params == summary["params_count"] == 650
    x_val, y_val = validation_rows(trained)
    assert float(np.mean(predictor.predict(x_val) == y_val)) == pytest.approx(
        summary["val_accuracy"]
    )


@pytest.mark.slow
def test_sgd_baseline_predicts_like_scikit_learn(trained):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier

    predictor = LinearPredictor.load(trained / "models" / "digits_sgd" / "model.npz")
    x_val, _ = validation_rows(trained)
    features = x_val.reshape(len(x_val), -1).astype(np.float32) / 16.0
    reference = SGDClassifier(loss="log_loss")
    reference.coef_ = predictor.coef.astype(np.float64)
    reference.intercept_ = predictor.intercept.astype(np.float64)
    reference.classes_ = predictor.classes
    reference.n_features_in_ = features.shape[1]
    reference.t_ = 1.0

    np.testing.assert_allclose(
        predictor.predict_proba(x_val), reference.predict_proba(features), atol=1e-5
    )
    np.testing.assert_array_equal(predictor.predict(x_val), reference.predict(features))

    # The saved coefficients are those of the seed's classifier refitted on the training rows.
    x_train, y_train = training_rows(trained)
    refit = SGDClassifier(loss="log_loss", max_iter=20, alpha=1e-4, random_state=42)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is the experiment's
        refit.fit(x_train.reshape(len(x_train), -1).astype(np.float32) / 16.0, y_train)
    np.testing.assert_allclose(predictor.coef, refit.coef_, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_two_cpu_runs_with_the_same_params_give_the_same_model(trained, tmp_path):
    # The same code, params and data as the first run: a copy of its project, outputs left out.
    again = tmp_path / "again"
    shutil.copytree(
        trained,
        again,
        ignore=shutil.ignore_patterns("models", "live", "checkpoints", "__pycache__"),
    )

    result = run_cli(again, "train", "digits_mlp")

    assert result.returncode == 0, result.stderr
    first = json.loads((trained / "models" / "digits_mlp" / "train.json").read_text())
    second = json.loads((again / "models" / "digits_mlp" / "train.json").read_text())
    for key in ("best_epoch", "epochs_run", "params_count"):
        assert second[key] == first[key]
    for key in ("val_loss", "val_accuracy", "best_value"):
        assert second[key] == pytest.approx(first[key], abs=1e-6)
    first_history = read_history(trained / "models" / "digits_mlp" / "history.csv")
    second_history = read_history(again / "models" / "digits_mlp" / "history.csv")
    assert len(second_history) == len(first_history)
    for row_a, row_b in zip(first_history, second_history, strict=True):
        assert row_b == pytest.approx(row_a, abs=1e-6)


# --- in-process details -------------------------------------------------------------------------


def test_standardize_uses_statistics_of_the_training_rows_only(project):
    import keras

    experiment = {**MLP, "epochs": 1, "model": {**MLP["model"], "input_scaling": "standardize"}}
    root = project({"z": experiment})

    train_experiment(load_params(root / "params.yaml"), "z", root=root)

    model = keras.saving.load_model(root / "models" / "z" / "best.keras", safe_mode=True)
    layer = model.get_layer("standardize")
    x_train, _ = training_rows(root)
    all_rows = np.load(paths.prepared_dir("digits", root) / "x_train.npy")
    assert float(np.ravel(layer.mean)[0]) == pytest.approx(x_train.mean(), rel=1e-6)
    assert float(np.ravel(layer.variance)[0]) == pytest.approx(x_train.var(), rel=1e-5)
    assert not math.isclose(x_train.mean(), all_rows.mean(), rel_tol=1e-6)  # the check can fail


def tiny_model():
    from pipeline.modeling.models import InputSpec, build_model
    from pipeline.params import SoftmaxRegressionParams

    return build_model(
        SoftmaxRegressionParams(name="softmax_regression"), InputSpec(shape=(8, 8), num_classes=10)
    )


def resume_state(directory: Path):
    from pipeline.modeling.resume import Fingerprint, ResumeState

    state = ResumeState(directory)
    state.start_afresh(Fingerprint(params="test"))
    return state


def test_best_checkpoint_keeps_a_carried_over_best_against_a_worse_epoch(tmp_path):
    import keras

    from pipeline.modeling.callbacks import BestCheckpoint

    state = resume_state(tmp_path / "checkpoints" / "x")
    carried = {"epoch": 3, "value": 0.1, "monitor": "val_loss"}  # from before an interruption
    state.best_path.write_text(json.dumps(carried))
    state.best_model_path.write_bytes(b"the best model of epochs 1-3")
    callback = BestCheckpoint(state, "val_loss")
    callback.set_model(tiny_model())

    callback.on_epoch_end(3, {"val_loss": 0.5})  # epoch 4, worse
    callback.on_epoch_end(4, {"val_loss": float("nan")})  # epoch 5, diverged

    assert state.best_model_path.read_bytes() == b"the best model of epochs 1-3"
    assert json.loads(state.best_path.read_text()) == carried

    callback.on_epoch_end(5, {"val_loss": 0.05})  # epoch 6, better

    assert json.loads(state.best_path.read_text()) == {
        "epoch": 6,
        "value": 0.05,
        "monitor": "val_loss",
    }
    assert isinstance(keras.saving.load_model(state.best_model_path, safe_mode=True), keras.Model)
    assert sorted(path.name for path in state.directory.iterdir()) == [
        "best.json",
        "best.keras",
        "status.json",
    ]  # no temporary file left


def test_best_checkpoint_on_accuracy_keeps_the_highest(tmp_path):
    from pipeline.modeling.callbacks import BestCheckpoint

    state = resume_state(tmp_path / "checkpoints" / "x")
    callback = BestCheckpoint(state, "val_accuracy")
    callback.set_model(tiny_model())

    for epoch, value in enumerate([0.5, 0.9, 0.7]):
        callback.on_epoch_end(epoch, {"val_accuracy": value})

    assert json.loads(state.best_path.read_text())["epoch"] == 2
    assert json.loads(state.best_path.read_text())["value"] == 0.9


def test_early_stopping_after_a_resume_counts_patience_from_the_best_epoch():
    from pipeline.modeling.callbacks import ResumableEarlyStopping

    model = tiny_model()
    callback = ResumableEarlyStopping(
        best={"epoch": 2, "value": 0.1}, monitor="val_loss", patience=3, mode="min"
    )
    callback.set_model(model)
    callback.on_train_begin()

    callback.on_epoch_begin(4)  # resumed at epoch 5: epochs 3 and 4 were worse than epoch 2
    callback.on_epoch_end(4, {"val_loss": 0.2})

    assert model.stop_training is True  # epochs 3, 4, 5 without improvement: patience 3 spent


def test_backup_files_are_replaced_whole_never_rewritten_in_place(tmp_path):
    """A kill during an in-place write would leave a backup the next run cannot load."""
    import keras

    from pipeline.modeling.callbacks import AtomicBackupAndRestore

    backup = tmp_path / "backup"
    model = tiny_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    callback = AtomicBackupAndRestore(str(backup), delete_checkpoint=False)
    callback.set_model(model)
    callback.on_epoch_end(0)
    inodes = {path.name: path.stat().st_ino for path in backup.iterdir()}
    assert sorted(inodes) == ["latest.weights.h5", "training_metadata.json"]

    model.get_layer("classes").kernel.assign(np.ones((64, 10), dtype=np.float32))
    callback.on_epoch_end(1)

    assert sorted(path.name for path in backup.iterdir()) == sorted(inodes)  # no temporary left
    for name, inode in inodes.items():
        assert (backup / name).stat().st_ino != inode, f"{name} was rewritten in place"
    restored = tiny_model()
    restored.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    resume = AtomicBackupAndRestore(str(backup), delete_checkpoint=False)
    resume.set_model(restored)
    resume.on_train_begin()
    assert restored._initial_epoch == 2
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored.get_layer("classes").kernel), np.ones((64, 10))
    )


# --- one training per run at a time; resumed only by the same run --------------------------------

HOLD_LOCK = """
import sys
from pipeline.core.runlock import RunLock
RunLock(sys.argv[1], "x").acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_second_training_of_a_run_is_refused_naming_the_run_and_the_holder(tmp_path):
    from pipeline.core.runlock import RunLock, TrainingInProgress

    directory = tmp_path / "checkpoints" / "x-fold1"
    with RunLock(directory, "x-fold1"):
        assert (directory / "lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(TrainingInProgress) as caught:
            RunLock(directory, "x-fold1").acquire()

    assert isinstance(caught.value, AtelierError)  # the CLI's one-message exit with status 2
    message = str(caught.value)
    assert f"Experiment 'x-fold1' is already being trained by process {os.getpid()}," in message
    assert not (tmp_path / "checkpoints").exists()  # it held nothing but the lock: removed


def test_lock_left_by_a_killed_process_is_stale_and_free_to_take(tmp_path):
    from pipeline.core.runlock import RunLock, TrainingInProgress

    directory = tmp_path / "checkpoints" / "x"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(directory)],
        cwd=PROJECT_ROOT,
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(TrainingInProgress, match=f"by process {holder.pid},"):
            RunLock(directory, "x").acquire()
    finally:
        holder.kill()
        holder.communicate(timeout=60)

    assert (directory / "lock").read_text() == f"{holder.pid}\n"  # left behind by the dead one
    with RunLock(directory, "x"):
        assert (directory / "lock").read_text() == f"{os.getpid()}\n"


def test_fingerprint_names_the_part_that_differs():
    from pipeline.modeling.resume import Fingerprint

    saved = Fingerprint(
        params="p", data={"data/x.npy": "1", "data/y.npy": "2"}, code={"pipeline.a": "3"}
    )

    assert saved.differences(saved) == []
    assert Fingerprint("q", saved.data, saved.code).differences(saved) == ["params"]
    changed_data = Fingerprint("p", {**saved.data, "data/y.npy": "9"}, saved.code)
    assert changed_data.differences(saved) == ["data (data/y.npy)"]
    more_code = Fingerprint("p", saved.data, {**saved.code, "pipeline.b": "4"})
    assert more_code.differences(saved) == ["code (pipeline.b)"]


def test_data_fingerprint_follows_the_content_not_the_size_or_time(tmp_path):
    from pipeline.modeling.resume import data_digests

    array = tmp_path / "x_train.npy"
    array.write_bytes(b"0123")
    before = array.stat()
    digest = data_digests({"x_train.npy": array})

    array.write_bytes(b"3210")  # same size; the time set back below
    os.utime(array, ns=(before.st_atime_ns, before.st_mtime_ns))

    assert data_digests({"x_train.npy": array}) != digest


def compiled(model):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    return model


def interrupted_state(directory: Path, fingerprint, backup_of, epochs: int = 2):
    """The state that a run killed after `epochs` epochs leaves, its backup `backup_of`'s."""
    from pipeline.modeling.resume import ResumeState

    state = ResumeState(directory)
    state.start_afresh(fingerprint)
    for epoch in range(1, epochs + 1):
        state.epoch_done({"epoch": epoch, "loss": 0.5, "accuracy": 0.9, "val_loss": 0.6})
    state.backup_dir.mkdir()
    backup_of.save_weights(state.weights_path)
    state.metadata_path.write_text(json.dumps({"epoch": epochs, "batch": 0}))
    return state


def resume_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipeline.modeling.resume"]


def test_state_of_the_same_run_resumes_with_its_backup_weights(tmp_path, caplog):
    from pipeline.modeling.resume import Fingerprint, ResumeState

    trained = compiled(tiny_model())
    trained.get_layer("classes").kernel.assign(np.full((64, 10), 0.5, dtype=np.float32))
    fingerprint = Fingerprint(params="p", data={"x": "1"}, code={"pipeline.a": "2"})
    interrupted_state(tmp_path / "x", fingerprint, trained)
    model = compiled(tiny_model())

    with caplog.at_level("INFO"):
        assert ResumeState(tmp_path / "x").start(fingerprint, model) is True

    assert resume_lines(caplog) == [
        f"resuming an interrupted run from {tmp_path / 'x'} after epoch 2"
    ]
    np.testing.assert_array_equal(model.get_layer("classes").kernel.numpy(), 0.5)


def test_backup_that_does_not_load_is_discarded_and_the_model_left_untouched(tmp_path, caplog):
    """A backup of another architecture: Keras' `A total of … objects could not be loaded`."""
    from pipeline.modeling.models import InputSpec, build_model
    from pipeline.modeling.resume import Fingerprint, ResumeState
    from pipeline.params import MLPParams

    other = compiled(
        build_model(MLPParams(name="mlp", units=[32]), InputSpec(shape=(8, 8), num_classes=10))
    )
    fingerprint = Fingerprint(params="p")
    interrupted_state(tmp_path / "x", fingerprint, other)
    model = compiled(tiny_model())
    before = [variable.numpy() for variable in model.weights + model.optimizer.variables]

    with caplog.at_level("INFO"):
        assert ResumeState(tmp_path / "x").start(fingerprint, model) is False

    [line] = resume_lines(caplog)
    assert "its backup does not load into the model" in line
    assert line.endswith("; starting afresh")
    after = [variable.numpy() for variable in model.weights + model.optimizer.variables]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)
    assert sorted(path.name for path in (tmp_path / "x").iterdir()) == ["status.json"]


def break_status(state):
    state.status_path.write_text('{"fingerprint": ')


def drop_an_epoch(state):
    state.history_path.write_text(state.history_path.read_text().replace("\n2,", "\n3,"))


def break_best_model(state):
    state.best_path.write_text(json.dumps({"epoch": 1, "value": 0.5, "monitor": "val_loss"}))
    state.best_model_path.write_bytes(b"PK\x03\x04 not a whole zip")


def lose_the_backup_metadata(state):
    state.metadata_path.unlink()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (break_status, "status.json cannot be read (JSONDecodeError"),
        (drop_an_epoch, "its files cannot be loaded (ValueError: history.csv has epochs [1, 3]"),
        (break_best_model, "its files cannot be loaded (BadZipFile"),
        (lose_the_backup_metadata, "its files cannot be loaded (FileNotFoundError"),
    ],
)
def test_damaged_state_is_discarded_in_one_line(tmp_path, caplog, damage, reason):
    from pipeline.modeling.resume import Fingerprint, ResumeState

    fingerprint = Fingerprint(params="p")
    damage(interrupted_state(tmp_path / "x", fingerprint, compiled(tiny_model())))

    with caplog.at_level("INFO"):
        assert ResumeState(tmp_path / "x").start(fingerprint) is False

    [line] = resume_lines(caplog)
    assert line.startswith(f"not resuming from {tmp_path / 'x'}: {reason}")
    assert json.loads((tmp_path / "x" / "status.json").read_text())["time_s"] == 0.0


@pytest.mark.gpu
def test_gpu_run_records_the_device_and_serves_float32_probabilities(tmp_path, digits_root):
    import tensorflow as tf

    # Selected with `-m gpu` on a GPU machine; elsewhere it fails rather than pass unseen.
    assert tf.config.list_physical_devices("GPU"), "TensorFlow sees no GPU"
    root = make_project(tmp_path / "gpu", {"digits_mlp": MLP}, data_from=digits_root)
    env = {key: value for key, value in cli_env().items() if key != "CUDA_VISIBLE_DEVICES"}

    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "train", "digits_mlp"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    summary = json.loads((root / "models" / "digits_mlp" / "train.json").read_text())
    assert summary["device"].startswith("gpu x")
    assert summary["gpus"] >= 1
    assert summary["val_accuracy"] > 0.8
    import keras

    model = keras.saving.load_model(root / "models" / "digits_mlp" / "best.keras", safe_mode=True)
    x_val, _ = validation_rows(root)
    probabilities = model.predict(x_val, verbose=0)
    assert probabilities.dtype == np.float32  # the head stays float32 under mixed precision
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
