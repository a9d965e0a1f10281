"""Report stage: the leaderboard, per-experiment sections and figures, built from real evaluate
outputs of one tiny digits MLP and one SGD baseline; and the report never imports TensorFlow.

The module's project root lives under a temporary directory; the digits arrays are prepared and
both experiments trained and evaluated there once, by the real stage functions.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core.errors import AtelierError
from pipeline.data.samples import SAMPLES_PER_CLASS, class_sample_indices
from pipeline.figures.images import plot_class_samples
from pipeline.params import parse_params
from pipeline.stages.evaluate import evaluate_experiment
from pipeline.stages.report import build_report
from pipeline.stages.train import train_experiment
from pipeline.tasks.classification import most_confused_pairs
from pipeline.tasks.results import overfitting_note
from tests.conftest import prepare_digits

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = {
    "digits_mlp": {
        "dataset": "digits",
        "model": {"name": "mlp", "units": [32]},
        "epochs": 3,
        "batch_size": 32,
        "learning_rate": 0.01,
    },
    "digits_sgd": {
        "dataset": "digits",
        "model": {"name": "sgd_logistic", "max_iter": 10, "cv_folds": 2},
    },
}


def params_dict(experiments: dict = EXPERIMENTS) -> dict:
    return {"data": {"datasets": ["digits"]}, "experiments": experiments}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """A project root whose experiments are trained and evaluated (no report yet)."""
    root = tmp_path_factory.mktemp("report")
    params = parse_params(params_dict())
    prepare_digits(root)
    for name in EXPERIMENTS:
        train_experiment(params, name, root=root)
        evaluate_experiment(params, name, root=root)
    (root / "params.yaml").write_text(yaml.safe_dump(params_dict()))
    return root


@pytest.fixture(scope="module")
def report(evaluated) -> str:
    path = build_report(parse_params(params_dict()), root=evaluated)
    assert path == evaluated / "reports/report.md"
    return path.read_text()


def metrics(root: Path, name: str) -> dict:
    import json

    return json.loads((root / f"plots/{name}/evaluation.json").read_text())


def leaderboard_rows(report: str) -> list[list[str]]:
    section = report.split("## Leaderboard", 1)[1].split("\n\n")[1]
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()[2:]
    ]


def test_leaderboard_is_sorted_and_marks_the_baseline(evaluated, report):
    mlp, sgd = metrics(evaluated, "digits_mlp"), metrics(evaluated, "digits_sgd")
    rows = leaderboard_rows(report)
    assert len(rows) == 2
    accuracies = [float(row[6]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    by_name = {row[1].strip("*").replace(" (baseline)", ""): row for row in rows}
    assert "(baseline)" in by_name["digits_sgd"][1] and by_name["digits_sgd"][8] == "baseline"
    margin = (mlp["test_accuracy"] - sgd["test_accuracy"]) * 100
    assert by_name["digits_mlp"][8] == f"{margin:+.2f} pp"
    assert by_name["digits_mlp"][4] == f"{mlp['params_count']:,}"
    assert by_name["digits_mlp"][5] == f"{mlp['epochs_run']} ({mlp['best_epoch']})"
    assert by_name["digits_mlp"][6] == f"{mlp['test_accuracy']:.4f}"


def test_every_experiment_and_dataset_has_its_section(report):
    for heading in ("### digits", "### digits_mlp", "### digits_sgd"):
        assert f"\n{heading}\n" in report
    mlp = report.split("### digits_mlp", 1)[1].split("\n### ", 1)[0]
    for part in ("#### Training curves", "#### Confusion matrix", "Most confused classes:"):
        assert part in mlp
    assert "#### Misclassified test images" in mlp and "<summary>Classification report" in mlp
    sgd = report.split("### digits_sgd", 1)[1].split("\n### ", 1)[0]
    assert "#### Training curves" not in sgd  # the baseline has no epochs
    assert "Cross-validation accuracy on the training rows" in sgd


def test_linked_figures_exist_and_are_real_pictures(evaluated, report):
    from matplotlib.image import imread

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    expected = {
        "leaderboard.png",
        "samples_digits.png",
        *(f"{name}_{kind}.png" for name in EXPERIMENTS for kind in ("confusion", "misclassified")),
        "digits_mlp_curves.png",
    }
    assert set(links) == expected
    for link in links:
        image = imread(evaluated / "reports" / link)
        assert image.ndim == 3 and min(image.shape[:2]) >= 150, link
        assert image[..., :3].std() > 0.05, f"{link} is blank"


def test_the_report_reads_each_datasets_overview_not_its_prepared_data(evaluated, report, tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(
        evaluated, copy, ignore=shutil.ignore_patterns("prepared", "split", "raw", "reports")
    )
    assert build_report(parse_params(params_dict()), root=copy).read_text() == report
    assert (copy / "reports/samples_digits.png").read_bytes() == (
        evaluated / "reports/samples_digits.png"
    ).read_bytes()


def test_the_overview_holds_the_images_a_mosaic_of_all_training_images_would_show(evaluated):
    prepared = evaluated / "data/prepared/digits"
    x, y = np.load(prepared / "x_train.npy"), np.load(prepared / "y_train.npy")
    with np.load(evaluated / "data/overview/digits/samples.npz") as samples:
        sample_x, sample_y = samples["x"], samples["y"]
    rows = np.concatenate(class_sample_indices(y, 10))
    assert len(rows) == 10 * SAMPLES_PER_CLASS
    assert np.array_equal(sample_x, x[rows]) and np.array_equal(sample_y, y[rows])
    # Chosen again from the chosen rows, the same images in the same order.
    assert np.array_equal(np.concatenate(class_sample_indices(sample_y, 10)), np.arange(len(rows)))


def test_dvc_plots_curves_are_dvclive_files_not_report_copies(evaluated, report):
    assert not (evaluated / "reports/curves").exists()
    live = evaluated / "live/digits_mlp"
    with open(live / "plots/metrics/train/accuracy.tsv", newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t"))
    with open(evaluated / "models/digits_mlp/history.csv", newline="") as stream:
        history = list(csv.DictReader(stream))
    assert [int(row["step"]) for row in rows] == list(range(len(history)))
    assert [float(row["accuracy"]) for row in rows] == pytest.approx(
        [float(row["accuracy"]) for row in history], abs=1e-6
    )
    last = json.loads((live / "metrics.json").read_text())
    assert last["step"] == len(history) - 1
    assert last["eval"]["accuracy"] == pytest.approx(float(history[-1]["val_accuracy"]), abs=1e-6)
    with open(evaluated / "live/digits_sgd/plots/metrics/cv/accuracy.tsv", newline="") as stream:
        folds = list(csv.DictReader(stream, delimiter="\t"))
    train = json.loads((evaluated / "models/digits_sgd/train.json").read_text())
    assert [float(row["accuracy"]) for row in folds] == pytest.approx(train["cv_scores"])


def test_missing_metrics_name_the_experiment(evaluated, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(evaluated, root, ignore=shutil.ignore_patterns("reports"))
    (root / "plots/digits_sgd/evaluation.json").unlink()
    with pytest.raises(AtelierError, match=r"No evaluation for experiment\(s\) digits_sgd"):
        build_report(parse_params(params_dict()), root=root)
    assert not (root / "reports").exists()


def test_without_a_baseline_the_margin_says_so(evaluated, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(evaluated, root, ignore=shutil.ignore_patterns("reports"))
    only_mlp = {"digits_mlp": EXPERIMENTS["digits_mlp"]}
    text = build_report(parse_params(params_dict(only_mlp)), root=root).read_text()
    assert leaderboard_rows(text)[0][8] == "no baseline"
    assert "digits_sgd" not in text


def test_report_does_not_import_tensorflow(evaluated, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(evaluated, root, ignore=shutil.ignore_patterns("reports"))
    code = (
        "import sys\n"
        "from pipeline.__main__ import main\n"
        "assert main(['report']) == 0\n"
        "print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "MPLBACKEND": "TkAgg"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert (root / "reports/report.md").is_file()


# --- pieces -------------------------------------------------------------------------------------


def test_most_confused_pairs_are_the_largest_off_diagonal_cells():
    matrix = np.array([[8, 2, 0], [5, 5, 0], [0, 1, 9]])
    pairs = most_confused_pairs(matrix, ["cat", "dog", "bird"], top=5)
    assert pairs == [("dog", "cat", 5, 0.5), ("cat", "dog", 2, 0.2), ("bird", "dog", 1, 0.1)]
    assert most_confused_pairs(np.eye(3, dtype=int) * 4, ["a", "b", "c"]) == []


def fashion_result(name: str, model: str, accuracy: float):
    from pipeline.tasks.results import ExperimentResult

    metrics = {
        "dataset": "fashion_mnist",
        "model": model,
        "params_count": 1000,
        "epochs_run": 4,
        "best_epoch": 4,
        "test_accuracy": accuracy,
        "macro_f1": accuracy,
        "train_time_s": 10.0,
    }
    return ExperimentResult(name, metrics, Path("."))


def test_published_references_sit_among_their_datasets_experiments_by_accuracy():
    from pipeline.tasks.classification import REFERENCES, leaderboard_table

    ours = [
        fashion_result("fashion_compact_cnn", "compact_cnn", 0.9217),
        fashion_result("fashion_sgd", "sgd_logistic", 0.7882),
    ]
    lines = leaderboard_table(ours, {"fashion_mnist": ours[1]})
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    rows = rows[: next(index for index, row in enumerate(rows) if row == [""])]

    fashion = [ref for ref in REFERENCES if ref.dataset == "fashion_mnist"]
    assert len(rows) == len(ours) + len(fashion)  # no MNIST figure on a Fashion-MNIST board
    assert [row[0] for row in rows if row[0] != "ref"] == ["1", "2"]
    accuracies = [float(row[6].strip("*≈ ").split()[0]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    references = [row for row in rows if row[0] == "ref"]
    assert all(row[1].startswith("*") and row[6].startswith("*") for row in references)
    shown = {(row[3].strip("*"), row[6].strip("*")) for row in references}
    assert ("ResNet-18, flips, translation, rotation", "0.949") in shown
    assert ("WRN-40-4, random crops and flips", "0.967") in shown
    assert ("SGDClassifier (log loss)", "0.8196 (5-fold CV)") in shown  # not a test accuracy
    assert ("MLP 256-128, dropout 0.3", "≈ 0.87") in shown
    assert any("zalandoresearch/fashion-mnist" in line for line in lines)


def test_no_reference_row_without_a_published_figure_for_the_dataset(report):
    assert "| ref |" not in report and "Zalando" not in report  # digits has none


def test_overfitting_note_reads_the_curves():
    rows = [
        {"epoch": 1, "accuracy": 0.80, "val_accuracy": 0.78, "val_loss": 0.60},
        {"epoch": 2, "accuracy": 0.90, "val_accuracy": 0.85, "val_loss": 0.40},
        {"epoch": 3, "accuracy": 0.97, "val_accuracy": 0.84, "val_loss": 0.45},
    ]
    note = overfitting_note(rows, {"best_epoch": 2})
    assert "Best epoch 2 of 3" in note and "gap +13.00 pp" in note
    assert "Validation loss rose after epoch 2 (to 0.4500)" in note and "over-fit" in note
    assert "over-fit" not in overfitting_note(rows[:2], {"best_epoch": 2})


@pytest.mark.parametrize("shape", [(6, 6), (6, 6, 1), (6, 6, 3)])
def test_sample_grid_takes_gray_and_colour_images(shape, tmp_path):
    from matplotlib.image import imread

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(12, *shape), dtype=np.uint8)
    y = np.arange(12) % 3
    path = tmp_path / "grid.png"
    plot_class_samples(
        x, y, ("T-shirt/top", "Trouser", "Ankle boot"), path, title="t", value_max=255
    )
    assert imread(path).shape[0] > 100
