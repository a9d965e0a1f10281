"""The `training` flow under a Prefect test server, on copies of the project shrunk to digits.

What is checked: the flow leaves the same `dvc.lock` as `dvc repro`, releases through the
registry, a second run re-runs no stage, the nightly mode records a skip, overrides act like
`dvc exp run -S`, a download that fails once is retried, a failing stage fails its task with
DVC's message, the artifacts carry the numbers of the metrics files, and bad input stops the
flow before any stage runs.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from flow_project import TINY_EXPERIMENTS, VENV_BIN, make_project, run
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterTaskRunId,
)
from prefect.logging.handlers import APILogWorker

from flows.training import training
from pipeline.core.errors import AtelierError, ParamsError

DATA_STAGES = ("download@digits", "preprocess@digits", "split@digits")


def lock_of(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]


def artifacts_of(flow_run_id: UUID) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact.data for artifact in found}


def task_runs_of(flow_run_id: UUID) -> dict[str, list]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    by_name: dict[str, list] = {}
    for task_run in runs:
        by_name.setdefault(task_run.name, []).append(task_run)
    return by_name


def expected_rows(root: Path, experiments) -> dict[str, dict]:
    """Each experiment's figures from the file the leaderboard must take them from."""
    rows = {}
    for name in experiments:
        evaluation = root / "plots" / name / "evaluation.json"
        path = evaluation if evaluation.is_file() else root / "models" / name / "train.json"
        rows[name] = json.loads(path.read_text())
    return rows


SGD_ONLY = {"digits_sgd": TINY_EXPERIMENTS["digits_sgd"]}


@pytest.mark.slow
def test_flow_matches_dvc_repro_releases_then_skips_unchanged_stages(prefect_server, new_project):
    flow_root, repro_root = new_project("by_flow", SGD_ONLY), new_project("by_repro", SGD_ONLY)
    origin = flow_root.parent / "origin.git"
    run(flow_root.parent, "git", "clone", "--quiet", "--bare", str(flow_root), str(origin))
    run(flow_root, "git", "remote", "add", "origin", str(origin))

    state = training(project_dir=str(flow_root), release=True, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["stages"]["train"]["ran"] == ["train@digits_sgd"]
    run(repro_root, "dvc", "repro", "train@digits_sgd")

    # The stages both ran: same command, params and inputs; the data outputs byte-identical
    # (a model directory differs by its recorded training time).
    by_flow, by_repro = lock_of(flow_root), lock_of(repro_root)
    assert set(by_repro) == {*DATA_STAGES, "train@digits_sgd"}
    assert set(by_repro) < set(by_flow)
    for name, entry in by_repro.items():
        assert by_flow[name]["cmd"] == entry["cmd"]
        assert by_flow[name]["params"] == entry["params"], name
        assert by_flow[name]["deps"] == entry["deps"], name
        assert [out["path"] for out in by_flow[name]["outs"]] == [
            out["path"] for out in entry["outs"]
        ]
    for name in DATA_STAGES:
        assert by_flow[name]["outs"] == by_repro[name]["outs"]
    # Every stage of dvc.yaml ran, and `dvc repro` agrees that nothing is left to do.
    assert set(by_flow) == set(run(flow_root, "dvc", "stage", "list", "--name-only").stdout.split())
    assert "Data and pipelines are up to date." in run(flow_root, "dvc", "repro").stdout

    # Artifacts: the leaderboard carries the evaluation records' numbers, the report is the report.
    artifacts = artifacts_of(state.state_details.flow_run_id)
    table = json.loads(artifacts["leaderboard"])
    expected = expected_rows(flow_root, SGD_ONLY)
    assert {row["experiment"] for row in table} == set(expected)
    for row in table:
        figures = expected[row["experiment"]]
        for key in ("test_accuracy", "macro_f1", "val_accuracy"):
            if key in figures:
                assert row[key] == pytest.approx(figures[key], abs=1e-4), (row, key)
    report = flow_root / "reports" / "report.md"
    if report.is_file():
        assert artifacts["training-report"] == report.read_text()
        assert summary["report"] == str(report)
    else:
        assert "digits_sgd" in artifacts["training-report"]

    # The release: the results committed, then the registry versioned the digits champion.
    assert [item["artifact"] for item in summary["released"]] == ["digits-classifier"]
    assert "digits-classifier: registered v0.1.0" in artifacts["release"]
    assert run(flow_root, "git", "tag", "--list").stdout.split() == ["digits-classifier@v0.1.0"]
    assert run(flow_root, "git", "status", "--porcelain").stdout == ""
    assert "Retrain (" in run(flow_root, "git", "log", "-1", "--format=%s").stdout
    pushed = run(flow_root, "git", "ls-remote", "origin").stdout
    head = run(flow_root, "git", "rev-parse", "HEAD").stdout.strip()
    assert "refs/tags/digits-classifier@v0.1.0" in pushed
    assert f"{head}\trefs/heads/" in pushed

    # A second run re-runs nothing; the nightly mode sees nothing changed and records a skip.
    again = training(project_dir=str(flow_root))
    assert all(not result["ran"] for result in again["stages"].values()), again["stages"]
    nightly = training(project_dir=str(flow_root), skip_if_unchanged=True, return_state=True)
    assert nightly.result()["skipped"] is True
    skip_note = artifacts_of(nightly.state_details.flow_run_id)["training-skipped"]
    assert "`dvc status` reports no changed stage" in skip_note
    assert set(task_runs_of(nightly.state_details.flow_run_id)) == {"dvc-status"}


@pytest.mark.slow
def test_download_that_fails_once_is_retried_then_override_reruns_what_reads_it(
    prefect_server, new_project
):
    """DVC's repository lock, held by another process, fails the first download attempt."""
    import zc.lockfile

    root = new_project()
    (root / ".dvc" / "tmp").mkdir(exist_ok=True)
    held = zc.lockfile.LockFile(str(root / ".dvc" / "tmp" / "lock"))
    outcome: dict = {}
    context = contextvars.copy_context()

    def run_flow() -> None:
        outcome["state"] = training(
            project_dir=str(root), experiments=["digits_sgd"], return_state=True
        )

    worker = threading.Thread(target=context.run, args=(run_flow,))
    worker.start()
    try:
        # Release the lock once the download task has failed and waits for its retry.
        with get_client(sync_client=True) as client:
            while worker.is_alive() and not _download_awaits_retry(client, root):
                time.sleep(0.1)
    finally:
        held.close()
        worker.join(timeout=240)

    state = outcome["state"]
    assert state.is_completed(), state.message
    download = task_runs_of(state.state_details.flow_run_id)["download"][0]
    assert download.state_name == "Completed"
    assert download.run_count >= 2
    with get_client(sync_client=True) as client:
        history = [s.name for s in client.read_task_run_states(download.id)]
        APILogWorker.drain_all(timeout=10)
        logs = client.read_logs(LogFilter(task_run_id=LogFilterTaskRunId(any_=[download.id])))
    assert "AwaitingRetry" in history and history[-1] == "Completed"
    assert any("Unable to acquire lock" in log.message for log in logs)
    assert (root / "data/raw/digits/digits.csv.gz").is_file()

    # An override is written to params.yaml as `dvc exp run -S` does; only what reads it reruns,
    # and only for the experiments asked for.
    changed = training(
        project_dir=str(root),
        experiments=["digits_sgd"],
        overrides={"split.val_fraction": "0.3"},
    )
    ran = [stage for result in changed["stages"].values() for stage in result["ran"]]
    assert ran == ["split@digits", "train@digits_sgd", "evaluate@digits_sgd"]
    assert "report" not in changed["stages"]  # aggregates experiments left out of the subset
    assert yaml.safe_load((root / "params.yaml").read_text())["split"]["val_fraction"] == 0.3
    assert lock_of(root)["split@digits"]["params"]["params.yaml"] == {
        "base.seed": 42,
        "split.val_fraction": 0.3,
        "split.folds": 3,
    }
    assert json.loads((root / "data/split/digits/split.json").read_text())["n_val"] == 431


def _download_awaits_retry(client, root: Path) -> bool:
    """Whether the download task of the flow run working on `root` waits for a retry."""
    for flow_run in client.read_flow_runs():
        if flow_run.parameters.get("project_dir") == str(root):
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
            )
            return any(
                task_run.name == "download" and task_run.state_name == "AwaitingRetry"
                for task_run in runs
            )
    return False


@pytest.mark.slow
def test_failing_stage_fails_its_task_with_dvcs_message(prefect_server, new_project):
    root = new_project()
    (root / "pipeline" / "stages" / "preprocess.py").write_text(
        'raise SystemExit("preprocess cannot read its input: broken on purpose")\n'
    )
    state = training(project_dir=str(root), experiments=["digits_sgd"], return_state=True)
    assert state.is_failed()
    assert "failed to reproduce 'preprocess@digits'" in state.message
    runs = task_runs_of(state.state_details.flow_run_id)
    assert runs["download"][0].state_name == "Completed"
    assert runs["preprocess"][0].state_name == "Failed"
    assert "train" not in runs
    with get_client(sync_client=True) as client:
        APILogWorker.drain_all(timeout=10)
        logs = client.read_logs(
            LogFilter(task_run_id=LogFilterTaskRunId(any_=[runs["preprocess"][0].id]))
        )
    assert any("broken on purpose" in log.message for log in logs)


# --- bad input: refused before any stage runs -----------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """One committed project copy for the bad-input tests: none of them may change it."""
    return make_project(tmp_path_factory.mktemp("pristine") / "project")


def assert_nothing_ran(root: Path, state) -> None:
    assert state.is_failed()
    assert not (root / "dvc.lock").exists()
    assert not (root / "data").exists()
    assert task_runs_of(state.state_details.flow_run_id) == {}


def test_unknown_experiment_fails_before_any_stage(prefect_server, pristine):
    root = pristine
    state = training(project_dir=str(root), experiments=["digits_cnn"], return_state=True)
    assert_nothing_ran(root, state)
    with pytest.raises(
        ParamsError, match=r"Unknown experiment 'digits_cnn'.*digits_mlp, digits_sgd"
    ):
        state.result()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"split.val_fractoin": 0.3}, r"val_fractoin: unknown key \(did you mean 'val_fraction'"),
        ({"split.val_fraction": "1.5"}, r"split\.val_fraction = 1\.5: Input should be less than 1"),
        ({"experiments.digits_sgd.model.name": "forest"}, r"'forest': unknown model; known models"),
        ({"base.seed.value": 1}, r"Override base\.seed\.value: base\.seed is 42, not a section"),
    ],
)  # fmt: skip
def test_bad_override_fails_before_any_stage(prefect_server, pristine, overrides, message):
    root = pristine
    before = (root / "params.yaml").read_text()
    state = training(project_dir=str(root), overrides=overrides, return_state=True)
    assert_nothing_ran(root, state)
    with pytest.raises(ParamsError, match=message):
        state.result()
    assert (root / "params.yaml").read_text() == before


def test_release_from_dirty_workspace_is_refused(prefect_server, pristine):
    root = pristine
    (root / "params.yaml").write_text((root / "params.yaml").read_text() + "\n# edited\n")
    try:
        state = training(project_dir=str(root), release=True, return_state=True)
    finally:
        run(root, "git", "checkout", "--", "params.yaml")
    assert_nothing_ran(root, state)
    with pytest.raises(
        AtelierError, match=r"(?s)Refusing to release from a dirty workspace.*M params\.yaml"
    ):
        state.result()


def test_a_run_that_requires_the_remotes_stops_before_any_stage_naming_both(
    prefect_server, pristine
):
    """`nightly-retrain` on a fresh worker of a project with neither remote: refused first."""
    root = pristine
    state = training(project_dir=str(root), require_remotes=True, return_state=True)
    assert_nothing_ran(root, state)
    with pytest.raises(AtelierError, match=r"(?s)dvc remote add -d.*git remote add origin"):
        state.result()
    # With a DVC remote (a local directory) only the git remote is missing.
    run(root, "dvc", "remote", "add", "--local", "-d", "storage", str(root.parent / "store"))
    try:
        state = training(project_dir=str(root), require_remotes=True, return_state=True)
    finally:
        run(root, "dvc", "remote", "remove", "--local", "storage")
    assert_nothing_ran(root, state)
    with pytest.raises(AtelierError) as refused:
        state.result()
    assert "git remote add origin" in str(refused.value)
    assert "dvc remote add" not in str(refused.value)


def test_command_line_reports_bad_input_without_traceback(pristine):
    root = pristine
    result = run(
        root, str(VENV_BIN / "python"), "-m", "flows.training",
        "-e", "nope", "-S", "split.folds=3", check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: Unknown experiment 'nope'")
    assert "Traceback" not in result.stderr
    assert not (root / "dvc.lock").exists()


def test_an_unchanged_nightly_run_on_a_fresh_worker_skips_with_the_remotes(
    prefect_server, tmp_path, new_project
):
    """A fresh clone (a worker's) of a project whose outputs are on its DVC remote: the nightly
    settings pull them, find nothing changed and train nothing."""
    root = new_project(experiments=SGD_ONLY)
    run(root, "dvc", "remote", "add", "-d", "storage", str(tmp_path / "store"))
    run(root, "dvc", "repro", "--quiet")
    run(root, "git", "add", "--all")
    run(root, "git", "commit", "--quiet", "-m", "built")
    run(root, "dvc", "push", "--quiet")
    fresh = tmp_path / "worker-clone"
    run(tmp_path, "git", "clone", "--quiet", str(root), str(fresh))
    assert not (fresh / "models").exists()
    summary = training(project_dir=str(fresh), skip_if_unchanged=True, require_remotes=True)
    assert summary["skipped"] is True
    assert (fresh / "models" / "digits_sgd").is_dir()  # pulled, not trained
    assert run(fresh, "git", "status", "--porcelain").stdout == ""
