"""Evaluate stage on digits: metric keys and values checked against independent computations,
plot data, and the refusals (not a Keras archive, a Lambda layer, no checkpoint).

A project root under a temporary directory gets the digits dataset prepared and one tiny MLP and
one SGD baseline trained by the real stage functions, once per module; every test reads or copies
that root, never the working tree.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.__main__ import main
from pipeline.core.errors import AtelierError
from pipeline.modeling.loading import load_keras_model
from pipeline.modeling.models import LinearPredictor
from pipeline.params import parse_params
from pipeline.stages.evaluate import evaluate_experiment
from pipeline.stages.train import train_experiment
from pipeline.tasks.common import class_slug
from tests.conftest import prepare_digits

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLASSES = [str(digit) for digit in range(10)]
EXPERIMENTS = {
    "digits_mlp": {
        "dataset": "digits",
        "model": {"name": "mlp", "units": [32]},
        "epochs": 4,
        "batch_size": 32,
        "learning_rate": 0.01,
    },
    "digits_sgd": {
        "dataset": "digits",
        "model": {"name": "sgd_logistic", "max_iter": 10, "cv_folds": 2},
    },
}
COMMON_KEYS = {
    "test_accuracy",
    "test_loss",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
    "val_accuracy",
    "val_loss",
    "best_epoch",
    "epochs_run",
    "train_time_s",
    "params_count",
    "device",
    "cpu_isa",
    "model",
    "dataset",
    "task",
}


def params_dict() -> dict:
    return {"data": {"datasets": ["digits"]}, "experiments": EXPERIMENTS}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A project root with digits prepared and both experiments trained (not yet evaluated)."""
    root = tmp_path_factory.mktemp("evaluate")
    params = parse_params(params_dict())
    prepare_digits(root)
    for name in EXPERIMENTS:
        train_experiment(params, name, root=root)
    (root / "params.yaml").write_text(yaml.safe_dump(params_dict()))
    return root


@pytest.fixture(scope="module")
def evaluated(trained) -> dict[str, dict]:
    params = parse_params(params_dict())
    return {name: evaluate_experiment(params, name, root=trained) for name in EXPERIMENTS}


def load_test_arrays(trained):
    return np.load(trained / "data/prepared/digits/x_test.npy"), np.load(
        trained / "data/prepared/digits/y_test.npy"
    )


def copy_project(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("metrics", "plots"))
    return target


# --- metrics ------------------------------------------------------------------------------------


def test_metrics_have_the_contract_keys(evaluated, trained):
    assert set(evaluated["digits_mlp"]) == COMMON_KEYS | {"backend"}  # the Keras backend
    assert set(evaluated["digits_sgd"]) == COMMON_KEYS | {"cv_mean", "cv_std"}
    on_disk = json.loads((trained / "plots/digits_mlp/evaluation.json").read_text())
    assert on_disk == evaluated["digits_mlp"]
    assert on_disk["model"] == "mlp" and on_disk["dataset"] == "digits"
    assert evaluated["digits_sgd"]["model"] == "sgd_logistic"


def test_the_metrics_file_holds_the_summary_headline_first(evaluated, trained):
    """`metrics/<experiment>.json` is what `dvc exp show` lists: three figures, not the record."""
    for name in ("digits_mlp", "digits_sgd"):
        text = (trained / "metrics" / f"{name}.json").read_text()
        summary = json.loads(text)
        assert list(summary) == ["test_accuracy", "macro_f1", "test_loss"]
        assert summary == {key: evaluated[name][key] for key in summary}


def test_mlp_metrics_match_keras_evaluate(evaluated, trained):
    import keras

    x_test, y_test = load_test_arrays(trained)
    model = keras.saving.load_model(trained / "models/digits_mlp/best.keras")
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    metrics = evaluated["digits_mlp"]
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-3)
    assert metrics["test_accuracy"] > 0.8  # learning happened (chance is 0.1)
    train = json.loads((trained / "models/digits_mlp/train.json").read_text())
    for key in ("val_accuracy", "val_loss"):
        assert metrics[key] == pytest.approx(train[key], abs=1e-6)
    for key in ("best_epoch", "epochs_run", "params_count", "device"):
        assert metrics[key] == train[key]


def test_sgd_metrics_match_an_independent_computation(evaluated, trained):
    from sklearn.metrics import f1_score, log_loss

    x_test, y_test = load_test_arrays(trained)
    predictor = LinearPredictor.load(trained / "models/digits_sgd/model.npz")
    with np.errstate(over="ignore"):
        proba = predictor.predict_proba(x_test)
    predicted = predictor.predict(x_test)
    metrics = evaluated["digits_sgd"]
    assert metrics["test_accuracy"] == pytest.approx(np.mean(predicted == y_test), abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(log_loss(y_test, proba), rel=1e-4)
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(y_test, predicted, average="macro"), abs=1e-6
    )
    per_class = f1_score(y_test, predicted, average=None)
    report = json.loads((trained / "plots/digits_sgd/classification_report.json").read_text())
    assert [report[digit]["f1-score"] for digit in CLASSES] == pytest.approx(per_class, abs=1e-6)
    train = json.loads((trained / "models/digits_sgd/train.json").read_text())
    assert metrics["cv_mean"] == pytest.approx(train["cv_mean"], abs=1e-6)
    assert metrics["cv_std"] == pytest.approx(train["cv_std"], abs=1e-6)
    assert 0 < metrics["val_loss"] < 5  # computed on the validation rows, not copied


@pytest.mark.parametrize(
    ("name", "slug"),
    [("T-shirt/top", "t_shirt_top"), ("Ankle boot", "ankle_boot"), ("7", "7"), ("Bag", "bag")],
)
def test_class_slug(name, slug):
    assert class_slug(name) == slug


# --- plot data ----------------------------------------------------------------------------------


def test_confusion_csv_has_one_row_per_test_image(evaluated, trained):
    x_test, y_test = load_test_arrays(trained)
    with open(trained / "plots/digits_mlp/confusion.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == len(y_test)
    assert [row["actual"] for row in rows] == [CLASSES[label] for label in y_test]
    correct = sum(row["actual"] == row["predicted"] for row in rows)
    assert correct / len(rows) == pytest.approx(evaluated["digits_mlp"]["test_accuracy"], abs=1e-6)


def test_classification_report_and_pictures(evaluated, trained):
    from matplotlib.image import imread

    folder = trained / "plots/digits_mlp"
    report = json.loads((folder / "classification_report.json").read_text())
    assert report["accuracy"] == pytest.approx(evaluated["digits_mlp"]["test_accuracy"], abs=1e-6)
    assert report["macro avg"]["f1-score"] == pytest.approx(evaluated["digits_mlp"]["macro_f1"])
    markdown = (folder / "classification_report.md").read_text()
    assert markdown.startswith("| class | precision | recall | F1 | support |")
    assert "| **macro avg** |" in markdown and len(markdown.splitlines()) == 2 + 10 + 3
    image = imread(folder / "confusion.png")
    assert image.shape[0] > 400 and image.shape[1] > 400
    history = (folder / "history.csv").read_text()
    assert history == (trained / "models/digits_mlp/history.csv").read_text()
    # the baseline has no epochs: only the header, so both experiments declare the same outputs
    assert (trained / "plots/digits_sgd/history.csv").read_text().strip().count("\n") == 0


def test_misclassified_sample_is_the_most_confident_mistakes(evaluated, trained):
    x_test, y_test = load_test_arrays(trained)
    with np.load(trained / "plots/digits_mlp/misclassified.npz") as archive:
        index, actual, predicted = archive["index"], archive["actual"], archive["predicted"]
        confidence, images, matrix = archive["confidence"], archive["images"], archive["confusion"]
    wrong = int(matrix.sum() - np.trace(matrix))
    assert wrong == round((1 - evaluated["digits_mlp"]["test_accuracy"]) * len(y_test))
    assert 0 < len(index) <= min(32, wrong)
    assert np.array_equal(images, x_test[index])
    assert np.array_equal(actual, y_test[index])
    assert np.all(predicted != actual)
    assert np.all(np.diff(confidence) <= 0)


# --- refusals -----------------------------------------------------------------------------------


def lambda_model_file(path: Path) -> Path:
    import keras
    from keras import layers

    inputs = keras.Input(shape=(8, 8), dtype="uint8")
    x = layers.Flatten()(layers.Rescaling(1.0 / 16)(inputs))
    x = layers.Lambda(lambda tensor: tensor * 2.0)(x)
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
    model.save(path)
    return path


def test_lambda_layer_is_refused_by_safe_mode(tmp_path):
    path = lambda_model_file(tmp_path / "lambda.keras")
    with pytest.raises(AtelierError, match="contains a Lambda layer") as caught:
        load_keras_model(path)
    assert "safe mode" in str(caught.value) and "arbitrary code" in str(caught.value)


def test_a_file_that_is_not_a_keras_archive_is_refused(tmp_path):
    path = tmp_path / "best.keras"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(AtelierError, match=r"best\.keras is not a Keras archive"):
        load_keras_model(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights.txt", "a zip, but no config.json")
    with pytest.raises(AtelierError, match=r"is not a valid Keras archive \(KeyError"):
        load_keras_model(path)


@pytest.mark.parametrize("damage", ["garbage", "lambda", "missing"])
def test_cli_reports_a_bad_checkpoint_without_traceback(
    damage, trained, tmp_path, monkeypatch, capsys
):
    root = copy_project(trained, tmp_path / "project")
    checkpoint = root / "models/digits_mlp/best.keras"
    if damage == "garbage":
        checkpoint.write_bytes(b"\x00" * 100)
        expected = "is not a Keras archive"
    elif damage == "lambda":
        lambda_model_file(checkpoint)
        expected = "contains a Lambda layer"
    else:
        checkpoint.unlink()
        expected = "best.keras not found"
    monkeypatch.chdir(root)

    assert main(["evaluate", "digits_mlp"]) == 2

    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err
    assert "Traceback" not in err
    assert not (root / "metrics/digits_mlp.json").exists()
    assert not (root / "plots/digits_mlp").exists()


def test_untrained_experiment_names_the_stage_to_run(trained, tmp_path, monkeypatch, capsys):
    root = copy_project(trained, tmp_path / "project")
    shutil.rmtree(root / "models/digits_sgd")
    monkeypatch.chdir(root)
    assert main(["evaluate", "digits_sgd"]) == 2
    assert "has not been trained. Run `dvc repro train@digits_sgd`" in capsys.readouterr().err


def test_evaluating_the_baseline_does_not_import_tensorflow(trained, tmp_path):
    root = copy_project(trained, tmp_path / "project")
    code = (
        "import sys\n"
        "from pipeline.__main__ import main\n"
        "assert main(['evaluate', 'digits_sgd']) == 0\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False False"
    evaluation = json.loads((root / "plots/digits_sgd/evaluation.json").read_text())
    assert evaluation["model"] == "sgd_logistic"
