"""A real Prefect stack for tests: `prefect server start` on a free port with its own home, and
a throwaway git repository holding the project shrunk to `digits`, which workers clone.
"""

from __future__ import annotations

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

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"
STARTUP_TIMEOUT_S = 90
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
