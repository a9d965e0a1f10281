"""The training flow's plan over the real dvc.yaml's stage names, K-fold stages included."""

from __future__ import annotations

from flows.training import plan_groups
from pipeline.params import load_params

STAGES = [
    "download@diabetes",
    "preprocess@diabetes",
    "split@diabetes",
    "download@digits",
    "train@diabetes_regressor",
    "train@digits_mlp",
    "train_fold@diabetes_regressor-0",
    "train_fold@diabetes_regressor-1",
    "crossval@diabetes_regressor",
    "evaluate@diabetes_regressor",
    "evaluate@digits_mlp",
    "report",
    "select@diabetes",
]


def test_folds_and_their_aggregate_run_after_training_and_before_evaluation(project_root):
    params = load_params(project_root / "params.yaml")
    groups = plan_groups(STAGES, params, list(params.experiments))
    order = list(groups)
    assert order.index("train") < order.index("train_fold") < order.index("crossval")
    assert order.index("crossval") < order.index("evaluate")
    assert groups["train_fold"] == STAGES[6:8]


def test_a_subset_keeps_the_folds_of_its_experiments_only(project_root):
    params = load_params(project_root / "params.yaml")
    groups = plan_groups(STAGES, params, ["diabetes_regressor"])
    assert groups["train_fold"] == STAGES[6:8]
    assert groups["train"] == ["train@diabetes_regressor"]
    assert "download@digits" not in groups.get("download", [])
    assert "report" not in groups and "select" not in groups

    groups = plan_groups(STAGES, params, ["digits_mlp"])
    assert "train_fold" not in groups and "crossval" not in groups


def test_a_sweep_over_a_setting_the_experiment_ignores_is_refused_before_training():
    from pathlib import Path

    import pytest

    from flows.sweep import validate_grid
    from pipeline.core.errors import ParamsError

    root = Path(__file__).resolve().parents[2]
    # The README's example: both learning rates reach the MLP, so both points are real runs.
    points = validate_grid(
        root, {"experiments.digits_mlp.learning_rate": ["0.001", "0.01"]}, "digits_mlp"
    )
    assert points == [
        {"experiments.digits_mlp.learning_rate": "0.001"},
        {"experiments.digits_mlp.learning_rate": "0.01"},
    ]
    # The scikit-learn baseline trains by model.max_iter; epochs would give two identical runs.
    with pytest.raises(ParamsError, match="'experiments.digits_sgd.epochs' changes nothing"):
        validate_grid(root, {"experiments.digits_sgd.epochs": ["3", "5"]}, "digits_sgd")


def test_deploy_names_a_missing_prefect_file(tmp_path, capsys):
    from flows.deploy import main

    assert main(["--prefect-file", str(tmp_path / "nope.yaml")]) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'nope.yaml'} does not exist" in error
    assert "--prefect-file" in error and "Traceback" not in error
