"""Deploy `prefect.yaml`'s deployments, after checking that their work pools exist.

`prefect deploy` refuses a missing pool without saying how to make one; this names the pools
missing on the server at `PREFECT_API_URL` and the command that creates each, then runs

    prefect --no-prompt deploy --all --prefect-file prefect.yaml

It also creates, once per server, the automation that marks a flow run Crashed when its heartbeats
stop (its worker or machine lost), so that nothing waits on it forever.

Usage: `python -m flows.deploy [--prefect-file prefect.yaml] [--name nightly-retrain ...]`.
The git repository the workers clone is read from `ATELIER_GIT_URL` (see `prefect.yaml`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.core.errors import AtelierError

log = logging.getLogger(__name__)


def work_pools(prefect_file: Path, names: list[str] | None = None) -> list[str]:
    """The work pools the (named) deployments of `prefect_file` run on, in file order."""
    config = yaml.safe_load(prefect_file.read_text()) or {}
    pools: list[str] = []
    for deployment in config.get("deployments") or []:
        if names and deployment.get("name") not in names:
            continue
        pool = (deployment.get("work_pool") or {}).get("name")
        if pool and pool not in pools:
            pools.append(pool)
    return pools


def check_work_pools(pools: list[str]) -> None:
    """Raise `AtelierError` naming each missing pool and the command that creates it."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    missing = []
    with get_client(sync_client=True) as client:
        for pool in pools:
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                missing.append(pool)
    if missing:
        commands = "\n".join(
            f"  prefect work-pool create {pool} --type process" for pool in missing
        )
        raise AtelierError(
            f"Work pool{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"do{'' if len(missing) > 1 else 'es'} not exist on the Prefect server at "
            f"{PREFECT_API_URL.value() or 'the temporary local server'}, so no worker could "
            f"pick up the runs. Create {'them' if len(missing) > 1 else 'it'} first:\n{commands}\n"
            "then start a worker on each: `prefect worker start --pool <name>`."
        )


# Flow runs on the pools send a heartbeat every 30 s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY in
# prefect.yaml); one that misses three (its machine or worker lost, so nobody reports its end) is
# marked Crashed by this automation, which the sweep's parent then runs again.
LOST_RUN_AUTOMATION = "atelier: crash flow runs whose heartbeats stopped"
LOST_AFTER_S = 90


def ensure_lost_run_automation() -> bool:
    """Create the automation that marks a flow run Crashed when its heartbeats stop, unless the
    server has it; return whether it was created."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    with get_client(sync_client=True) as client:
        if client.read_automations_by_name(LOST_RUN_AUTOMATION):
            return False
    Automation(
        name=LOST_RUN_AUTOMATION,
        description="A flow run that sent heartbeats and then none for "
        f"{LOST_AFTER_S} s, without reaching a final state, lost its process: mark it Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=LOST_AFTER_S),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {LOST_AFTER_S} s: the flow run's process was lost.",
            )
        ],
    ).create()
    return True


def deploy(prefect_file: Path, names: list[str] | None = None) -> str:
    """Check the pools, then `prefect deploy` the named deployments (all when None)."""
    prefect_file = prefect_file.resolve()
    if not prefect_file.is_file():
        raise AtelierError(
            f"{prefect_file} does not exist: run this from the project root, or name the file "
            "with --prefect-file."
        )
    check_work_pools(work_pools(prefect_file, names))
    if not os.environ.get("ATELIER_GIT_URL"):
        raise AtelierError(
            "ATELIER_GIT_URL is not set: set it to the git URL the workers clone the project "
            "from (for example `export ATELIER_GIT_URL=$(git remote get-url origin)`)."
        )
    selection = [arg for name in names for arg in ("--name", name)] if names else ["--all"]
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", *selection]
    command += ["--prefect-file", str(prefect_file)]
    result = subprocess.run(
        command, cwd=prefect_file.parent, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AtelierError(f"`prefect deploy` failed:\n{result.stdout}\n{result.stderr}".strip())
    if ensure_lost_run_automation():
        log.info("automation created: %s", LOST_RUN_AUTOMATION)
    return result.stdout


def main(argv: list[str] | None = None, *, prog: str = "python -m flows.deploy") -> int:
    """`atelier deploy` (also `python -m flows.deploy`): check the pools, then deploy."""
    from pipeline.cli import HelpParser
    from pipeline.core.logs import setup_logging

    parser = HelpParser(prog=prog, description=__doc__.replace("python -m flows.deploy", prog))
    parser.add_argument(
        "--prefect-file",
        type=Path,
        default=Path("prefect.yaml"),
        metavar="FILE",
        help="the deployments to deploy (default: prefect.yaml)",
    )
    parser.add_argument(
        "--name",
        action="append",
        dest="names",
        metavar="DEPLOYMENT",
        help="deploy this deployment only (repeatable; e.g. nightly-retrain); default: all",
    )
    args = parser.parse_args(argv)
    setup_logging()
    try:
        print(deploy(args.prefect_file, args.names))
    except AtelierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
