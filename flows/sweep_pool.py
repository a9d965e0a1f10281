"""A sweep spread over a Prefect work pool: every grid point its own flow run, on any worker.

`sweep(..., point_deployment="sweep-point/points-gpu")` (`--deployment` on the command line)
submits each point as a run of that deployment (`run_deployment`, not waited for), so the workers
of its pool, on any number of machines, take the points as they have room: a worker started with
`--limit 1` runs one point at a time (one GPU each). On its worker a point runs `sweep_point` in a
fresh clone of the project (the deployment's pull step clones it): it checks out the sweep's
commit, pulls the inputs its stages need from the DVC remote (`dvc pull --with-deps`), runs as a
DVC experiment (`dvc exp run -n <point> -S ...`, its training's resume state pushed to the DVC
remote every epoch: `runtime.checkpoint_every`) and pushes it (`dvc exp push origin <point>`: the
experiment's git ref to origin, its outputs to the DVC remote).

The parent checks before submitting anything that the deployment and its pool exist, that the
project has a DVC remote and a git remote, and that its commit is on that remote (the workers clone
it). It then waits for every point: one whose process died (the worker reports the run Crashed:
killed, out of memory) is submitted again, up to `point_retries` times; one that failed (a Python
exception: bad data, a refused push) is reported with its message. Last it `dvc exp pull`s the
points, so `dvc exp show` lists them here, as in any clone that pulls them.
"""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.common import DvcCommandError, git_changes, has_dvc_remote, run_command, tool_env
from pipeline.core.errors import AtelierError

POLL_S = 2.0  # how often the parent reads its points' states from the server
POINT_RETRIES = 1


# --- on the parent ------------------------------------------------------------------------------


def pool_preflight(root: Path, deployment: str, git_remote: str) -> str:
    """Check everything a distributed sweep needs before any point is submitted; return the
    commit the points run on.

    Raises:
        AtelierError: naming what is missing and the command that adds it: the deployment or its
            work pool on the Prefect server, the DVC remote, the git remote, a commit not pushed,
            uncommitted changes to tracked files (the workers would not see them).
    """
    missing = []
    if not has_dvc_remote(root):
        missing.append(
            "a DVC remote, where points pull their inputs and push their outputs "
            "(`dvc remote add -d storage <url>`, committed in .dvc/config)"
        )
    remotes = _git(root, "remote").split()
    if git_remote not in remotes:
        missing.append(
            f"a git remote {git_remote!r}, which the workers clone and the points push their "
            f"experiments to (`git remote add {git_remote} <url>`)"
        )
    if missing:
        raise AtelierError(
            f"A sweep on a work pool needs remotes that {root} does not have: "
            + "; ".join(missing)
            + ". Nothing was submitted."
        )
    changed = [line for line in git_changes(root) if not line.startswith("??")]
    if changed:
        raise AtelierError(
            f"{len(changed)} uncommitted change(s) to tracked files ({', '.join(changed[:5])}): "
            "the workers clone the last commit and would not see them. Commit and push them "
            f"(`git push {git_remote}`). Nothing was submitted."
        )
    revision = _git(root, "rev-parse", "HEAD").strip()
    _git(root, "fetch", "--quiet", git_remote)
    holders = _git(root, "branch", "--remotes", "--contains", revision).split()
    if not any(branch.startswith(f"{git_remote}/") for branch in holders):
        raise AtelierError(
            f"Commit {revision[:7]} is not on {git_remote!r}: the workers clone it from there. "
            f"Push it first (`git push {git_remote} HEAD`). Nothing was submitted."
        )
    _require_deployment(deployment, root)
    return revision


def _require_deployment(deployment: str, root: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    with get_client(sync_client=True) as client:
        try:
            found = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise AtelierError(
                f"No deployment {deployment!r} on the Prefect server at {PREFECT_API_URL.value()}: "
                "deploy prefect.yaml (`python -m flows.deploy`). Nothing was submitted."
            ) from None
        if found.work_pool_name is None:  # its pool was deleted after it was deployed
            from flows.deploy import work_pools

            prefect_file = root / "prefect.yaml"
            named = prefect_file.is_file() and work_pools(prefect_file, [found.name])
            pool = named[0] if named else "<pool>"
            raise AtelierError(
                f"Deployment {deployment!r} is on no work pool (its pool was deleted): "
                f"`prefect work-pool create {pool} --type process`, deploy again "
                "(`python -m flows.deploy`) and start workers on the pool. Nothing was submitted."
            )
        try:
            client.read_work_pool(found.work_pool_name)
        except ObjectNotFound:
            raise AtelierError(
                f"Work pool {found.work_pool_name!r} of deployment {deployment!r} does not exist: "
                f"`prefect work-pool create {found.work_pool_name} --type process`, then start "
                f"workers on it. Nothing was submitted."
            ) from None


def run_points_on_pool(
    root: Path,
    deployment: str,
    points: dict[str, list[str]],
    *,
    revision: str,
    targets: list[str],
    git_remote: str,
    point_retries: int = POINT_RETRIES,
) -> list[dict[str, Any]]:
    """Submit every point (`{name: [-S arguments]}`) to `deployment`, wait for all, run a crashed
    one again, then `dvc exp pull` them; return each point's timing and attempts.

    Raises:
        AtelierError: after every point ended, naming each that failed and why (the others are
            pulled first, so their results are kept).
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    logger = get_run_logger()

    def submit(name: str, attempt: int):
        run = run_deployment(
            name=deployment,
            parameters={
                "revision": revision,
                "name": name,
                "set_args": points[name],
                "targets": targets,
                "git_remote": git_remote,
            },
            flow_run_name=f"point-{name}" + (f"-retry{attempt}" if attempt else ""),
            timeout=0,
        )
        logger.info("point %s: flow run %s submitted to %s", name, run.id, deployment)
        return run.id

    pending = {name: (submit(name, 0), 0) for name in points}
    done: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        while pending:
            for name, (run_id, attempt) in list(pending.items()):
                run = client.read_flow_run(run_id)
                if run.state is None or not run.state.is_final():
                    continue
                del pending[name]
                if run.state.is_completed():
                    done[name] = {
                        "name": name,
                        "started": run.start_time.timestamp() if run.start_time else None,
                        "finished": run.end_time.timestamp() if run.end_time else None,
                        "attempts": attempt + 1,
                    }
                elif run.state.is_crashed() and attempt < point_retries:
                    logger.warning(
                        "point %s crashed (%s); submitting it again (retry %d of %d)",
                        name, run.state.message, attempt + 1, point_retries,
                    )  # fmt: skip
                    pending[name] = (submit(name, attempt + 1), attempt + 1)
                else:
                    failed[name] = f"{run.state.name}: {run.state.message}"
            if pending:
                time.sleep(POLL_S)  # polling the server, not waiting for an event
    if done:
        run_command(["dvc", "exp", "pull", git_remote, *done], root, logger)
    if failed:
        raise AtelierError(
            f"{len(failed)} of {len(points)} point(s) failed on the pool:\n  "
            + "\n  ".join(f"{name}: {message}" for name, message in failed.items())
            + (f"\nThe others ran and were pulled: {', '.join(done)}." if done else "")
        )
    return [done[name] for name in points]


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=root, env=tool_env(), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DvcCommandError(["git", *args], result.returncode, result.stderr)
    return result.stdout


# --- on a worker --------------------------------------------------------------------------------


@flow(name="sweep-point", log_prints=True)
def sweep_point(
    revision: str,
    name: str,
    set_args: list[str],
    targets: list[str],
    git_remote: str = "origin",
    project_dir: str = ".",
    checkpoint_every: int = 1,
) -> dict[str, Any]:
    """One point of a distributed sweep, in the clone the deployment's pull step made.

    Args:
        revision: the commit the sweep runs on (fetched from `git_remote`).
        name: the experiment's name (`dvc exp run -n`).
        set_args: the point's `-S` arguments.
        targets: the stages it runs (`train@<experiment>`, `evaluate@<experiment>`).
        git_remote: where the commit comes from and the experiment goes.
        project_dir: the clone's root.
        checkpoint_every: push the training's resume state to the DVC remote every N epochs
            (`runtime.checkpoint_every`), so that the point, run again after a crash on any
            worker, resumes from it; 0: never.

    Raises:
        AtelierError: the inputs cannot be pulled from the DVC remote, or the push is refused,
            naming the remote and what to configure on this worker.
    """
    logger = get_run_logger()
    root = Path(project_dir).resolve()
    host = platform.node()
    run_command(["git", "fetch", "--quiet", git_remote, revision], root, logger)
    run_command(["git", "checkout", "--quiet", "--detach", revision], root, logger)
    if not has_dvc_remote(root):
        raise AtelierError(
            f"point {name} on {host}: the clone of {revision[:7]} has no DVC remote to pull its "
            "inputs from (`dvc remote add -d storage <url>`, committed in .dvc/config)."
        )
    try:
        run_command(["dvc", "pull", "--with-deps", "--allow-missing", *targets], root, logger)
    except DvcCommandError as exc:
        raise AtelierError(
            f"point {name} on {host}: cannot pull its inputs from the DVC remote: {exc}\n"
            "Give this worker access to it (credentials in the worker's environment or "
            "`dvc remote modify --local <remote> ...` in its clone)."
        ) from exc
    started = time.time()
    sets = [*set_args, f"runtime.checkpoint_every={checkpoint_every}"]
    run_command(
        ["dvc", "exp", "run", "-n", name, *(a for s in sets for a in ("-S", s)), *targets],
        root,
        logger,
    )
    finished = time.time()
    try:
        run_command(["dvc", "exp", "push", git_remote, name], root, logger)
    except DvcCommandError as exc:
        raise AtelierError(
            f"point {name} on {host}: `dvc exp push {git_remote} {name}` was refused: {exc}\n"
            f"Check that this worker may push to the git remote {git_remote!r} and write to the "
            "DVC remote."
        ) from exc
    logger.info("point %s on %s: ran in %.1f s, pushed to %s", name, host, finished - started,
                git_remote)  # fmt: skip
    return {"name": name, "host": host, "started": started, "finished": finished}
