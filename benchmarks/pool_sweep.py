"""Time a sweep spread over a work pool: what orchestration costs per point, one worker against two.

Built in a temporary directory, as a team would have it: a Prefect server on 127.0.0.1, a bare git
repository as `origin`, a local directory as the DVC remote, the project (shrunk to `digits`, its
data prepared and pushed) and the `points-gpu` deployment. For each number of workers (1, then 2;
each a process worker with `--limit 1` in a directory of its own) the same sweep runs as a user
runs it, `python -m flows.sweep -e digits_mlp -g ...learning_rate=... --deployment
sweep-point/points-gpu`, and is timed as a whole. Per point, read back from the server:

- waiting: from the flow run's creation to its start (a worker polls every
  PREFECT_WORKER_QUERY_SECONDS, 2 s here, and has to be free);
- run: from its start to its end on the worker;
- `dvc exp run`: the training and evaluation inside it (the point's own log line);
- orchestration: run minus `dvc exp run` (the flow engine, clone and checkout, `dvc pull`, `dvc
  exp push`).

Usage: `python benchmarks/pool_sweep.py [--points 4] [--epochs 30]`. `--quick`: 2 points of 3
epochs, a check that the script runs, not a measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flow_overhead import BIN, Shape, make_copy, start_server

DEPLOYMENT = "sweep-point/points-gpu"
WORKER_QUERY_S = "2"
RAN_IN = re.compile(r"point \S+ on \S+: ran in ([0-9.]+) s")


def run(cwd: Path, env: dict, *command: str) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def build(work: Path, env: dict) -> Path:
    """origin, the DVC remote with digits prepared, and a clone to sweep from (returned)."""
    source = make_copy(work / "source", Shape("digits"), env)
    origin = work / "origin.git"
    run(work, env, "git", "clone", "--quiet", "--bare", str(source), str(origin))
    parent = work / "parent"
    run(work, env, "git", "clone", "--quiet", str(origin), str(parent))
    for command in (
        ["dvc", "remote", "add", "-d", "storage", str(work / "dvc-storage")],
        ["dvc", "repro", "--quiet", "split@digits"],
        ["git", "add", "--all"],
        ["git", "commit", "--quiet", "-m", "digits prepared; a DVC remote"],
        ["git", "push", "--quiet", "origin", "HEAD"],
        ["dvc", "push", "--quiet"],
    ):
        run(parent, env, *command)
    env["ATELIER_GIT_URL"] = str(origin)
    run(parent, env, str(BIN / "prefect"), "--no-prompt", "work-pool", "create", "gpu",
        "--type", "process")  # fmt: skip
    run(parent, env, str(BIN / "python"), "-m", "flows.deploy", "--name", "points-gpu")
    return parent


def point_runs(seen: set) -> list:
    """The flow runs of the point deployment not in `seen`, with their `dvc exp run` time."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )

    rows = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["points-gpu"]))
        )
        for flow_run in runs:
            if flow_run.id in seen:
                continue
            seen.add(flow_run.id)
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id]))
            )
            ran = [float(m.group(1)) for log in logs if (m := RAN_IN.search(log.message))]
            rows.append(
                {
                    "waiting": (flow_run.start_time - flow_run.created).total_seconds(),
                    "run": (flow_run.end_time - flow_run.start_time).total_seconds(),
                    "exp_run": ran[0] if ran else float("nan"),
                    "state": flow_run.state.type.value,
                }
            )
    return rows


def sweep(parent: Path, env: dict, workers: int, points: int, epochs: int, seen: set):
    """Start `workers` workers, run the sweep, stop them; return its wall time and the points."""
    processes = []
    for index in range(workers):
        home = parent.parent / f"machine-{workers}-{index}"
        home.mkdir()
        processes.append(
            subprocess.Popen(
                [
                    str(BIN / "prefect"),
                    "worker",
                    "start",
                    "--pool",
                    "gpu",
                    "--limit",
                    "1",
                    "--name",
                    f"gpu-{workers}-{index}",
                ],
                cwd=home,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        )
    rates = ",".join(f"{0.01 * (index + 1):.2f}" for index in range(points))
    command = [
        str(BIN / "python"), "-m", "flows.sweep", "-e", "digits_mlp",
        "-g", f"experiments.digits_mlp.learning_rate={rates}",
        "-g", f"experiments.digits_mlp.epochs={epochs}", "--deployment", DEPLOYMENT,
    ]  # fmt: skip
    try:
        started = time.perf_counter()
        run(parent, env, *command)
        wall = time.perf_counter() - started
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    rows = point_runs(seen)
    if len(rows) != points or any(row["state"] != "COMPLETED" for row in rows):
        sys.exit(f"expected {points} completed points, got {rows}")
    return wall, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="2 points of 3 epochs: a smoke check")
    args = parser.parse_args()
    if args.quick:
        args.points, args.epochs = 2, 3
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": WORKER_QUERY_S,
    }
    env.pop("PYTHONPATH", None)
    work = Path(tempfile.mkdtemp(prefix="atelier-pool-bench-"))
    server, url = start_server(work / "prefect-home", env)
    env.update(PREFECT_API_URL=url, PREFECT_HOME=str(work / "prefect-home"))
    os.environ.update(PREFECT_API_URL=url)
    results = {}
    try:
        parent = build(work, env)
        seen: set = set()
        for workers in (1, 2):
            results[workers] = sweep(parent, env, workers, args.points, args.epochs, seen)
            print(f"{workers} worker(s): {results[workers][0]:.1f} s", file=sys.stderr)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}; a sweep of "
        f"{args.points} points of `digits_mlp` ({args.epochs} epochs each) over the `gpu` pool; "
        f"workers poll every {WORKER_QUERY_S} s"
        + (" (--quick: a check that the script runs, not a measurement)" if args.quick else "")
        + ".\n"
    )
    print(
        "| Workers | Sweep wall time | Speed-up over 1 worker | Waiting for a worker | Point run "
        "| `dvc exp run` | Orchestration |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    base = results[1][0]
    for workers, (wall, rows) in results.items():
        for row in rows:
            row["orchestration"] = row["run"] - row["exp_run"]
        median = {
            key: statistics.median(row[key] for row in rows)
            for key in ("waiting", "run", "exp_run", "orchestration")
        }
        print(
            f"| {workers} | {wall:.1f} s | {base / wall:.2f}× | {median['waiting']:.1f} s "
            f"| {median['run']:.1f} s | {median['exp_run']:.1f} s "
            f"| {median['orchestration']:.1f} s |"
        )
    print("\nPer point: medians over the sweep's points.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
