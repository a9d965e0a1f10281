"""A sweep spread over a work pool, for real: a Prefect server, a bare git repository as
`origin`, a local directory as the DVC remote, and two process workers on the `gpu` pool started
from two separate directories (two "machines" that share nothing but the remotes).

The sweep's 4 points of `digits_mlp` go to the `points-gpu` deployment. Once one worker has
completed a point and is running another, and every running point has pushed its resume state to
the DVC remote after a few epochs, that worker and every process under it get SIGKILL, as losing
the machine would. Checked: the mistakes refused before anything is submitted; the lost point,
whose heartbeats stopped, was marked Crashed by the automation `flows.deploy` creates, submitted
again by the sweep, run by the other worker, which fetched the pushed state and resumed after the
epochs done (the curves hold every epoch exactly once); every point completed and each worker
completed at least one; the leaderboard has all 4; a fresh clone lists all 4 experiments with
their metrics after `dvc exp pull`; and with the points cloning through a read-only
`git daemon`, a point whose push is refused fails, named with why.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.deploy import LOST_RUN_AUTOMATION
from tests.integration.prefect_stack import VENV_BIN, free_port, make_repository, prefect

pytestmark = pytest.mark.slow

DEPLOYMENT = "sweep-point/points-gpu"
VALUES = [0.01, 0.02, 0.03, 0.05]  # learning rates
EPOCHS = 150
KILL_AFTER_EPOCH = 3  # kill once a point's state on the remote is at least this far
SWEEP_TIMEOUT_S = 600


def run(cwd: Path, env: dict, *command: str) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def sweep_command(values: list = VALUES, epochs: int = EPOCHS) -> list[str]:
    return [
        str(VENV_BIN / "python"), "-m", "flows.sweep", "-e", "digits_mlp",
        "-g", "experiments.digits_mlp.learning_rate=" + ",".join(map(str, values)),
        "-g", f"experiments.digits_mlp.epochs={epochs}", "--deployment", DEPLOYMENT,
    ]  # fmt: skip


def pushed_epochs(storage: Path) -> list[int]:
    """The epoch of every resume state the points have pushed to the DVC remote so far."""
    epochs = []
    for pointer in storage.glob("atelier-resume/*/latest.json"):
        try:
            epochs.append(int(json.loads(pointer.read_text())["epoch"]))
        except (ValueError, KeyError):
            continue  # being written
    return epochs


def point_runs(api_url: str) -> list:
    """The flow runs of the point deployment on the server."""
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["points-gpu"]))
        )


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every process under it, as losing its machine would."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending += children.get(current, [])
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            continue


@pytest.fixture
def project(stack) -> dict:
    """origin (bare), the DVC remote with digits prepared, and a clone to sweep from."""
    env, tmp = stack["env"], stack["tmp"]
    source = make_repository(tmp / "source", env)
    origin = tmp / "origin.git"
    run(tmp, env, "git", "clone", "--quiet", "--bare", str(source), str(origin))
    parent = tmp / "parent"
    run(tmp, env, "git", "clone", "--quiet", str(origin), str(parent))
    for command in (
        ["dvc", "remote", "add", "-d", "storage", str(tmp / "dvc-storage")],
        ["dvc", "repro", "--quiet", "split@digits"],
        ["git", "add", "--all"],
        ["git", "commit", "--quiet", "-m", "digits prepared; a DVC remote"],
        ["git", "push", "--quiet", "origin", "HEAD"],
        ["dvc", "push", "--quiet"],
    ):
        run(parent, env, *command)
    env["ATELIER_GIT_URL"] = str(origin)
    return {"origin": origin, "parent": parent}


def test_a_sweep_on_a_work_pool_survives_a_killed_point(stack, project):
    env, tmp, parent = stack["env"], stack["tmp"], project["parent"]

    # Refused before anything is submitted: a deployment the server does not have ...
    for pool in ("cpu", "gpu"):
        prefect(stack, "work-pool", "create", pool, "--type", "process")
    missing = subprocess.run(
        sweep_command(), cwd=parent, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert f"No deployment '{DEPLOYMENT}' on the Prefect server" in missing.stderr
    assert "python -m flows.deploy" in missing.stderr
    run(parent, env, str(VENV_BIN / "python"), "-m", "flows.deploy", "--name", "points-gpu")
    with (
        temporary_settings({PREFECT_API_URL: stack["api_url"]}),
        get_client(sync_client=True) as client,
    ):
        assert client.read_automations_by_name(LOST_RUN_AUTOMATION)
    # ... a deployment whose work pool is gone ...
    prefect(stack, "work-pool", "delete", "gpu")
    no_pool = subprocess.run(sweep_command(), cwd=parent, env=env, capture_output=True, text=True)
    assert no_pool.returncode == 2
    assert f"Deployment '{DEPLOYMENT}' is on no work pool" in no_pool.stderr
    assert "prefect work-pool create gpu --type process" in no_pool.stderr
    prefect(stack, "work-pool", "create", "gpu", "--type", "process")
    run(parent, env, str(VENV_BIN / "python"), "-m", "flows.deploy", "--name", "points-gpu")
    # ... a commit the workers could not clone ...
    run(parent, env, "git", "commit", "--quiet", "--allow-empty", "-m", "not pushed")
    unpushed = subprocess.run(
        sweep_command(), cwd=parent, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    assert unpushed.returncode == 2
    assert "is not on 'origin'" in unpushed.stderr and "git push origin HEAD" in unpushed.stderr
    run(parent, env, "git", "reset", "--quiet", "--hard", "origin/HEAD")
    # ... and a point whose params the schema refuses.
    invalid = subprocess.run(
        sweep_command([0.01, -1]),
        cwd=parent, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert invalid.returncode == 2
    assert "learning_rate" in invalid.stderr and "Traceback" not in invalid.stderr
    assert point_runs(stack["api_url"]) == []

    # Two "machines": a worker each, one point at a time, in directories of their own.
    logs, workers = {}, {}
    for machine in ("a", "b"):
        home = tmp / f"machine-{machine}"
        home.mkdir()
        logs[machine] = home / "worker.log"
        with open(logs[machine], "w") as out:
            workers[machine] = subprocess.Popen(
                [str(VENV_BIN / "prefect"), "worker", "start", "--pool", "gpu",
                 "--name", f"gpu-{machine}", "--limit", "1"],
                cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        stack["processes"].append(workers[machine])

    sweep_log = tmp / "sweep.log"
    with open(sweep_log, "w") as out:
        sweep = subprocess.Popen(
            sweep_command(), cwd=parent, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    # Lose a machine: once a worker has completed a point and is running another, and every
    # running point has pushed its state after a few epochs, SIGKILL that worker and every
    # process under it. Nobody reports its point's end: the heartbeats stop.
    storage = tmp / "dvc-storage"
    lost = None
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while lost is None:
        assert sweep.poll() is None, sweep_log.read_text()
        assert time.monotonic() < deadline, sweep_log.read_text()
        runs = point_runs(stack["api_url"])
        running = [r for r in runs if r.state.is_running()]
        pushed = [epoch for epoch in pushed_epochs(storage) if epoch >= KILL_AFTER_EPOCH]
        if running and len(pushed) == len(running):
            for machine, log in logs.items():
                text = log.read_text()
                done = [r for r in runs if r.state.is_completed() and str(r.id) in text]
                busy = [r for r in running if str(r.id) in text]
                if done and busy:
                    kill_tree(workers[machine].pid)
                    lost = (machine, busy[0])
                    break
        time.sleep(0.2)  # polling interval
    machine, lost_run = lost
    survivor = "b" if machine == "a" else "a"
    assert sweep.wait(timeout=SWEEP_TIMEOUT_S) == 0, sweep_log.read_text()
    output = sweep_log.read_text()

    runs = point_runs(stack["api_url"])
    states = sorted(r.state.type.value for r in runs)
    assert states == ["COMPLETED"] * 4 + ["CRASHED"], (states, output)
    [crashed] = [r for r in runs if r.state.is_crashed()]
    assert crashed.id == lost_run.id and "No heartbeat" in crashed.state.message
    point = lost_run.name.removeprefix("point-")
    assert f"point {point} crashed" in output
    [retry] = [r for r in runs if r.name == f"point-{point}-retry1"]
    # The other worker ran it again, from the state the lost one had pushed.
    survivor_log = logs[survivor].read_text()
    assert str(retry.id) in survivor_log
    resumed = [int(e) for e in re.findall(r"after epoch (\d+) fetched from DVC remote",
                                          survivor_log)]  # fmt: skip
    assert resumed and max(resumed) >= KILL_AFTER_EPOCH, survivor_log[-5000:]
    assert re.search(r"resuming an interrupted run from \S+ after epoch [1-9]", survivor_log)
    assert not list(storage.glob("atelier-resume/*/latest.json")), (
        "a finished run leaves its resume state on the remote"
    )
    # Each worker completed at least one point.
    completed = {str(r.id) for r in runs if r.state.is_completed()}
    for name, log in logs.items():
        assert completed & set(re.findall(r"[0-9a-f-]{36}", log.read_text())), (
            f"worker {name} completed no point"
        )
    # The leaderboard: every point, with the value it ran.
    rows = [line for line in output.splitlines() if line.startswith("| digits_mlp-")]
    assert len(rows) == 4, output
    assert sorted(float(row.split("|")[3]) for row in rows) == VALUES

    # A fresh clone sees all four, with their metrics, once it pulls them.
    fresh = tmp / "fresh"
    run(tmp, env, "git", "clone", "--quiet", str(project["origin"]), str(fresh))
    names = run(fresh, env, "dvc", "exp", "list", "--name-only", "origin").split()
    assert len(names) == 4, names
    run(fresh, env, "dvc", "exp", "pull", "origin", *names)
    shown = json.loads(run(fresh, env, "dvc", "exp", "show", "--json", "--no-fetch"))
    revs = {
        rev["name"]: rev
        for baseline in shown
        for experiment in baseline.get("experiments") or []
        for rev in experiment.get("revs") or []
        if rev.get("name") in names
    }
    assert sorted(revs) == sorted(names)
    for name, rev in revs.items():
        figures = rev["data"]["metrics"]["metrics/digits_mlp.json"]["data"]
        assert figures["test_accuracy"] > 0.5, (name, figures)  # chance is 0.1
        # Every epoch once in the curves, the killed points' included.
        curve = run(
            fresh, env, "git", "show", f"{rev['rev']}:live/digits_mlp/plots/metrics/train/loss.tsv"
        )
        steps = [int(line.split("\t")[0]) for line in curve.splitlines()[1:]]
        assert steps == list(range(EPOCHS)), (name, steps)

    # A git remote that refuses the push: the points now clone origin through `git daemon`,
    # which serves fetches and refuses pushes. The point fails; the sweep names it and why.
    port = free_port()
    stack["processes"].append(
        subprocess.Popen(
            [
                "git",
                "daemon",
                "--export-all",
                "--reuseaddr",
                f"--base-path={tmp}",
                "--listen=127.0.0.1",
                f"--port={port}",
                str(tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    )
    read_only = f"git://127.0.0.1:{port}/origin.git"
    deadline = time.monotonic() + 30
    while subprocess.run(["git", "ls-remote", read_only], capture_output=True).returncode:
        assert time.monotonic() < deadline, "git daemon did not start"
        time.sleep(0.2)  # polling interval
    env["ATELIER_GIT_URL"] = read_only
    run(parent, env, str(VENV_BIN / "python"), "-m", "flows.deploy", "--name", "points-gpu")
    refused = subprocess.run(
        sweep_command([0.01], epochs=2), cwd=parent, env=env, capture_output=True, text=True,
        timeout=SWEEP_TIMEOUT_S,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    # Prefect logs the failed flow run (with its traceback); the last word is the sweep's own.
    message = refused.stderr[refused.stderr.rindex("\nerror: ") + 1 :]
    assert message.startswith("error: 1 of 1 point(s) failed on the pool"), message
    assert "dvc exp push origin" in message and "was refused" in message
    assert "Traceback" not in message
