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
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"
STARTUP_TIMEOUT_S = 90
RUN_TIMEOUT_S = 300
EXPERIMENTS = {
    "digits_sgd": {"dataset": "digits", "model": {"name": "sgd_logistic", "max_iter": 5}},
    "digits_mlp": {"dataset": "digits", "model": {"name": "mlp", "units": [16]}, "epochs": 2},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_repository(destination: Path, env: dict[str, str]) -> Path:
    """A committed git repository holding the project, shrunk to digits: what workers clone."""
    destination.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("pipeline", "flows"):
        shutil.copytree(PROJECT_ROOT / package, destination / package, ignore=ignore)
    for name in ("dvc.yaml", "prefect.yaml", "pyproject.toml", ".dvcignore", ".gitignore"):
        shutil.copy2(PROJECT_ROOT / name, destination / name)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"]["datasets"] = ["digits"]
    params["experiments"] = EXPERIMENTS
    params["crossval"] = {"experiments": [], "folds": []}  # no K-fold runs
    (destination / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (
        ["git", "init", "--quiet"],
        ["git", "config", "user.name", "Atelier Test"],
        ["git", "config", "user.email", "test@atelier.invalid"],
        ["dvc", "init", "--quiet"],
        ["cp", str(PROJECT_ROOT / ".dvc" / "config"), ".dvc/config"],
        ["git", "add", "--all"],
        ["git", "commit", "--quiet", "--message", "project"],
    ):
        subprocess.run(command, cwd=destination, env=env, check=True, capture_output=True)
    return destination


def stop(process: subprocess.Popen) -> None:
    """SIGINT first (a clean shutdown), then SIGKILL for the whole process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"prefect server exited:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)  # polling interval, not a wait for an event
    raise AssertionError(
        f"prefect server not healthy after {STARTUP_TIMEOUT_S} s:\n{log.read_text()}"
    )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict]:
    """A Prefect server on a free port with its own home; yields env, URL and a process list."""
    api_url = f"http://127.0.0.1:{free_port()}/api"
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "DVC_NO_ANALYTICS": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("PYTHONPATH", None)
    port = api_url.rsplit(":", 1)[1].split("/")[0]
    server_log = tmp_path / "server.log"
    processes: list[subprocess.Popen] = []
    with open(server_log, "w") as out:
        server = subprocess.Popen(
            [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    processes.append(server)
    try:
        wait_healthy(api_url, server, server_log)
        yield {"env": env, "api_url": api_url, "processes": processes, "tmp": tmp_path}
    finally:
        for process in reversed(processes):
            stop(process)


def prefect(stack: dict, *args: str, cwd: Path | None = None, check: bool = True):
    result = subprocess.run(
        [str(VENV_BIN / "prefect"), "--no-prompt", *args],
        cwd=cwd, env=stack["env"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, f"prefect {args}:\n{result.stdout}\n{result.stderr}"
    return result


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
        assert rows[0]["source"] == "metrics/digits_sgd.json"
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
