"""`prefect.yaml` for real: a Prefect server and a process worker on 127.0.0.1, nothing mocked.

The test starts `prefect server start` on a free port with its own database, checks that deploying
to missing work pools is refused with the command that creates them, creates the pools, deploys
every deployment of `prefect.yaml` from a throwaway copy of the project (the worker clones that
copy, as it would clone the real repository), starts a worker on the `cpu` pool, runs
`training-cpu` and waits for it to complete, checks its artifacts, and reads the nightly
schedule back from the server.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from tests.integration.prefect_stack import VENV_BIN, make_repository, prefect

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 300


def test_deploy_run_on_a_worker_and_read_back_the_schedule(stack):
    env = stack["env"]
    repository = make_repository(stack["tmp"] / "repository", env)
    env["ATELIER_GIT_URL"] = str(repository)
    deploy = [str(VENV_BIN / "python"), "-m", "flows.deploy", "--prefect-file", "prefect.yaml"]

    # Bad input: the work pools do not exist yet.
    refused = subprocess.run(deploy, cwd=repository, env=env, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "Work pools 'gpu', 'cpu' do not exist on the Prefect server at" in refused.stderr
    assert "prefect work-pool create gpu --type process" in refused.stderr
    assert "prefect work-pool create cpu --type process" in refused.stderr
    assert "Traceback" not in refused.stderr

    for pool in ("cpu", "gpu"):
        prefect(stack, "work-pool", "create", pool, "--type", "process")
    deployed = subprocess.run(deploy, cwd=repository, env=env, capture_output=True, text=True)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    worker_log = stack["tmp"] / "worker.log"
    with open(worker_log, "w") as out:
        worker = subprocess.Popen(
            [str(VENV_BIN / "prefect"), "worker", "start", "--pool", "cpu", "--name", "cpu-1"],
            cwd=stack["tmp"], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    stack["processes"].append(worker)

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: stack["api_url"]}),
        get_client(sync_client=True) as client,
    ):
        deployment = client.read_deployment_by_name("training/training-cpu")
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"experiments": ["digits_sgd"]}
        )
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not (state := client.read_flow_run(flow_run.id).state).is_final():
            assert time.monotonic() < deadline, f"run still {state.name}:\n{worker_log.read_text()}"
            assert worker.poll() is None, f"worker exited:\n{worker_log.read_text()}"
            time.sleep(0.5)  # polling interval
        assert state.is_completed(), f"{state.name}: {state.message}\n{worker_log.read_text()}"

        artifacts = {
            artifact.key: artifact.data
            for artifact in client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])
                )
            )
        }
        rows = json.loads(artifacts["leaderboard"])
        assert [row["experiment"] for row in rows] == ["digits_sgd"]
        assert 0.8 < rows[0]["test_accuracy"] <= 1.0
        assert rows[0]["source"] == "plots/digits_sgd/evaluation.json"
        assert "digits_sgd" in artifacts["training-report"]

        # The schedules and pools on the server are the ones prefect.yaml declares.
        config = yaml.safe_load((repository / "prefect.yaml").read_text())
        declared = {item["name"]: item for item in config["deployments"]}
        nightly = client.read_deployment_by_name("training/nightly-retrain")
        assert nightly.work_pool_name == "gpu"
        assert nightly.parameters == declared["nightly-retrain"]["parameters"]
        # No device pinned: each gpu worker is started for its own GPU, and its runs inherit it.
        assert "CUDA_VISIBLE_DEVICES" not in nightly.job_variables["env"]
        assert nightly.parameters["require_remotes"] is True
        [schedule] = nightly.schedules
        expected = declared["nightly-retrain"]["schedules"][0]
        assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (
            expected["cron"],
            expected["timezone"],
            True,
        )
        assert (expected["cron"], expected["timezone"]) == ("0 2 * * *", "UTC")
        for name in ("sweep/sweep", "training/training-cpu"):
            assert client.read_deployment_by_name(name).schedules == []
        assert client.read_deployment_by_name("sweep/sweep").work_pool_name == "gpu"
        assert deployment.work_pool_name == "cpu"
        assert deployment.job_variables["env"]["CUDA_VISIBLE_DEVICES"] == ""
