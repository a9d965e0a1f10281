"""The `sweep` flow: grid points as DVC experiments in temporary workspaces, run side by side."""

from __future__ import annotations

import json

import pytest
import yaml
from flow_project import TINY_EXPERIMENTS, run
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.sweep import sweep
from pipeline.core.errors import ParamsError

SGD_ONLY = {"digits_sgd": TINY_EXPERIMENTS["digits_sgd"]}
MAX_ITER = "experiments.digits_sgd.model.max_iter"
PIPELINE_TO_EVALUATE = ("download", "preprocess", "split", "train", "evaluate")


@pytest.mark.slow
def test_two_points_run_at_the_same_time_and_the_best_is_applied(prefect_server, new_project):
    # A pipeline that ends at evaluate (every stage a point runs, so the winner's outputs can all
    # be checked out), its data stages run and committed: each point takes them from the cache.
    root = new_project(experiments=SGD_ONLY, stages=PIPELINE_TO_EVALUATE)
    run(root, "dvc", "repro", "split@digits")
    run(root, "git", "commit", "--quiet", "--all", "--message", "baseline")

    summary = sweep(
        grid={MAX_ITER: [2, 30]},
        experiment="digits_sgd",
        max_parallel=2,
        apply_best=True,
        project_dir=str(root),
    )

    first, second = summary["points"]
    assert max(first["started"], second["started"]) < min(first["finished"], second["finished"])
    names = {point["name"] for point in summary["points"]}
    assert set(run(root, "dvc", "exp", "list", "--name-only").stdout.split()) == names

    # The leaderboard is `dvc exp show`'s: each point's own params and metrics, best first.
    rows = summary["leaderboard"]
    assert sorted(row[MAX_ITER] for row in rows) == [2, 30]
    assert rows[0]["test_accuracy"] >= rows[1]["test_accuracy"]
    shown = json.loads(run(root, "dvc", "exp", "show", "--json").stdout)
    for row in rows:
        revs = [
            rev
            for experiment in shown[-1]["experiments"]
            for rev in experiment["revs"]
            if rev["name"] == row["experiment"]
        ]
        figures = revs[0]["data"]["metrics"]["metrics/digits_sgd.json"]["data"]
        assert row["test_accuracy"] == figures["test_accuracy"]
    with get_client(sync_client=True) as client:
        artifact = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sweep-leaderboard"]))
        )[-1]
    assert json.loads(artifact.data) == rows

    # The winner is applied to the workspace: its params and its metrics.
    assert summary["applied"] == rows[0]["experiment"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["experiments"]["digits_sgd"]["model"]["max_iter"] == rows[0][MAX_ITER]
    applied = json.loads((root / "metrics" / "digits_sgd.json").read_text())
    assert applied["test_accuracy"] == rows[0]["test_accuracy"]


@pytest.mark.slow
def test_the_readme_sweep_over_learning_rates_trains_both_points(prefect_server, new_project):
    """`atelier flow sweep -e digits_mlp -g experiments.digits_mlp.learning_rate=0.001,0.01 -j 2`:
    each point trains with its own rate, and the leaderboard shows both."""
    rate = "experiments.digits_mlp.learning_rate"
    experiments = {"digits_mlp": {**TINY_EXPERIMENTS["digits_mlp"], "learning_rate": 0.001}}
    root = new_project(experiments=experiments, stages=PIPELINE_TO_EVALUATE)
    run(root, "dvc", "repro", "split@digits")
    run(root, "git", "commit", "--quiet", "--all", "--message", "baseline")

    summary = sweep(
        grid={rate: [0.001, 0.01]}, experiment="digits_mlp", max_parallel=2, project_dir=str(root)
    )

    rows = summary["leaderboard"]
    assert sorted(row[rate] for row in rows) == [0.001, 0.01]
    shown = json.loads(run(root, "dvc", "exp", "show", "--json").stdout)
    last_epochs = {}
    for row in rows:
        (rev,) = [
            rev
            for experiment in shown[-1]["experiments"]
            for rev in experiment["revs"]
            if rev["name"] == row["experiment"]
        ]
        assert (
            rev["data"]["params"]["params.yaml"]["data"]["experiments"]["digits_mlp"][
                "learning_rate"
            ]
            == row[rate]
        )
        # DVCLive's last epoch, which only a point that trained has: both ran every epoch.
        live = rev["data"]["metrics"]["live/digits_mlp/metrics.json"]["data"]
        assert live["step"] == TINY_EXPERIMENTS["digits_mlp"]["epochs"] - 1
        last_epochs[row[rate]] = live["train"]["loss"]
    assert last_epochs[0.001] != last_epochs[0.01]


def test_invalid_point_fails_before_any_point_runs(prefect_server, new_project):
    root = new_project(experiments=SGD_ONLY)
    state = sweep(
        grid={MAX_ITER: [5, -1]},
        experiment="digits_sgd",
        project_dir=str(root),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(ParamsError, match=r"max_iter = -1: Input should be greater than 0"):
        state.result()
    assert run(root, "dvc", "exp", "list", "--name-only").stdout.strip() == ""


def test_a_grid_over_max_points_is_refused_before_any_point_runs(prefect_server, new_project):
    root = new_project(experiments=SGD_ONLY)
    state = sweep(
        grid={MAX_ITER: [1, 2, 3], "experiments.digits_sgd.model.alpha": [0.1, 0.01]},
        experiment="digits_sgd",
        max_points=4,
        project_dir=str(root),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(ParamsError, match=r"6 points \(3 \(.*max_iter\) × 2 .*max_points = 4"):
        state.result()
    assert run(root, "dvc", "exp", "list", "--name-only").stdout.strip() == ""


def test_a_ranking_metric_that_the_metrics_file_lacks_is_refused(prefect_server, new_project):
    """`dvc exp show` reports each point's `metrics/<experiment>.json`, the task's summary."""
    root = new_project(experiments=SGD_ONLY)
    state = sweep(
        grid={MAX_ITER: [5, 10]},
        experiment="digits_sgd",
        metric="val_accuracy",
        project_dir=str(root),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(
        ParamsError, match=r"'val_accuracy'.*use one of test_accuracy, macro_f1, test_loss"
    ):
        state.result()
    assert run(root, "dvc", "exp", "list", "--name-only").stdout.strip() == ""


def test_the_ranking_metric_defaults_to_the_experiments_headline():
    from flows.sweep import _ranking_metric
    from tests.conftest import PROJECT_ROOT

    assert _ranking_metric(PROJECT_ROOT, "diabetes_regressor", None) == "test_mae"
    assert _ranking_metric(PROJECT_ROOT, "fashion_mlp", None) == "test_accuracy"
    assert _ranking_metric(PROJECT_ROOT, "fashion_mlp", "macro_f1") == "macro_f1"
