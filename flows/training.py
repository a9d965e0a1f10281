"""The `training` flow: the DVC pipeline, one Prefect task per stage group, in dependency order.

Each task runs `dvc repro <stage@item ...>` for one group (download, preprocess, split, train,
evaluate, report, then any other group `dvc.yaml` declares), so `dvc.lock`, the cache and the
outputs are exactly what `dvc repro` would produce and DVC skips what has not changed. The flow
adds what DVC does not have: parameters checked before anything runs, retries with backoff on
I/O (download, `dvc pull`, `dvc push`), a leaderboard table and the report as Prefect artifacts,
and an optional release to the model registry.

Param overrides (`{"split.val_fraction": 0.3}`, or `-S split.val_fraction=0.3` on the command
line) are read the way `dvc exp run -S` reads them and written into `params.yaml` before the
stages run, as `dvc exp run -S` does in the workspace; `dvc.lock` then records the params the
outputs were made with. Commit the result, or `git checkout params.yaml` to go back.

Run it locally (Prefect starts a temporary server when `PREFECT_API_URL` is not set):

    python -m flows.training                      # all experiments
    python -m flows.training -e digits_mlp -S split.val_fraction=0.3
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import (
    CommandResult,
    DvcCommandError,
    git_changes,
    has_dvc_remote,
    leaderboard,
    list_stages,
    load_params_with,
    markdown_table,
    parse_overrides,
    run_command,
    tool_env,
    write_overrides,
)
from flows.release import IO_RETRIES, IO_RETRY_DELAYS, release_artifacts, release_models
from pipeline.core import paths
from pipeline.core.errors import AtelierError, ParamsError
from pipeline.params import Params

GROUP_ORDER = (
    "download",
    "preprocess",
    "split",
    "train",
    "train_fold",
    "crossval",
    "evaluate",
    "report",
)
IO_GROUPS = frozenset({"download"})
REPORT_FILE = paths.REPORTS_DIR / "report.md"


# --- the plan -----------------------------------------------------------------------------------


def validate(
    project_dir: Path, experiments: list[str] | None, overrides: Any
) -> tuple[Params, list[str], dict[str, Any]]:
    """Check the flow's parameters against the pipeline's schema before any stage runs.

    Returns:
        The params with the overrides applied, the experiments to run (all when `experiments` is
        None) and the parsed overrides.

    Raises:
        ParamsError: an unknown experiment, or an override that makes `params.yaml` invalid
            (the pipeline's own message, naming the key).
    """
    parsed = parse_overrides(overrides)
    params = load_params_with(project_dir, parsed)
    if experiments is None:
        return params, list(params.experiments), parsed
    if not experiments:
        raise ParamsError("experiments is an empty list: name at least one, or pass None for all.")
    for name in experiments:
        params.experiment(name)
    return params, list(dict.fromkeys(experiments)), parsed


def plan_groups(
    stages: Iterable[str], params: Params, experiments: list[str]
) -> dict[str, list[str]]:
    """Stage addresses per group, groups in dependency order.

    For all experiments every stage is planned. For a subset, only the stages of those
    experiments and the data stages of their datasets are; a stage that aggregates experiments
    (`report`, `select@<dataset>`) is left out, since DVC would otherwise train the experiments
    left out to feed it.
    """
    everything = set(experiments) == set(params.experiments)
    datasets = {params.experiments[name].dataset for name in experiments}
    groups: dict[str, list[str]] = {}
    before_training = True
    for stage in stages:
        group, _, item = stage.partition("@")
        if group == "train_fold":  # train_fold@<experiment>-<fold>
            item = item.rpartition("-")[0]
        before_training = before_training and not (item and item in params.experiments)
        # A dataset's stages upstream of training prepare its data; a dataset stage further down
        # (such as select@<dataset>) reads every experiment of that dataset, so a subset skips it.
        wanted = item in experiments or (before_training and item in datasets)
        if everything or (item and wanted):
            groups.setdefault(group, []).append(stage)
    known = [group for group in GROUP_ORDER if group in groups]
    others = [group for group in groups if group not in GROUP_ORDER]
    return {group: groups[group] for group in [*known, *others]}


# --- tasks --------------------------------------------------------------------------------------


def _repro(root: Path, targets: list[str]) -> dict[str, Any]:
    logger = get_run_logger()
    result: CommandResult = run_command(["dvc", "repro", *targets], root, logger)
    logger.info(
        "%d stage(s) ran, %d unchanged (%.1f s)",
        len(result.ran),
        len(result.skipped),
        result.seconds,
    )
    return {"targets": targets, "ran": result.ran, "skipped": result.skipped}


@task(
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    task_run_name="{group}",
    cache_policy=NO_CACHE,
)
def io_stage(root: Path, group: str, targets: list[str]) -> dict[str, Any]:
    """A stage group that fetches data: retried with backoff, since its failures pass."""
    return _repro(root, targets)


@task(task_run_name="{group}", cache_policy=NO_CACHE)
def stage(root: Path, group: str, targets: list[str]) -> dict[str, Any]:
    """A computing stage group: not retried, a failure is a bug or bad data to look at."""
    return _repro(root, targets)


@task(
    name="dvc-pull",
    task_run_name="dvc-pull",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    cache_policy=NO_CACHE,
)
def dvc_pull(root: Path) -> None:
    """Fetch cached outputs from the DVC remote, so that DVC skips stages already computed."""
    run_command(["dvc", "pull", "--allow-missing"], root, get_run_logger())


@task(
    name="dvc-push",
    task_run_name="dvc-push",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    cache_policy=NO_CACHE,
)
def dvc_push(root: Path) -> None:
    run_command(["dvc", "push"], root, get_run_logger())


@task(name="dvc-status", task_run_name="dvc-status", cache_policy=NO_CACHE)
def changed_stages(root: Path, targets: list[str]) -> dict[str, Any]:
    """`dvc status` of `targets` and their upstream stages; empty when nothing changed."""
    command = [sys.executable, "-m", "dvc", "status", "--json", "--with-deps", *targets]
    result = subprocess.run(
        command, cwd=root, env=tool_env(), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DvcCommandError(["dvc", *command[3:]], result.returncode, result.stderr)
    return json.loads(result.stdout or "{}")


@task(name="publish-results", task_run_name="publish-results", cache_policy=NO_CACHE)
def publish_results(root: Path, params: Params, experiments: list[str]) -> dict[str, Any]:
    """The leaderboard as a table artifact, the report as a Markdown artifact."""
    rows = leaderboard(root, params, experiments)
    create_table_artifact(
        key="leaderboard",
        table=rows,
        description="Experiments, best first, from metrics/<experiment>.json "
        "(models/<experiment>/train.json where evaluate has not run).",
    )
    report = root / REPORT_FILE
    if report.is_file():
        markdown = report.read_text()
    else:
        markdown = "# Leaderboard\n\n" + markdown_table(rows)
        report = None
    create_markdown_artifact(key="training-report", markdown=markdown, description="The report")
    return {"leaderboard": rows, "report": str(report) if report else None}


# --- the flow -----------------------------------------------------------------------------------


@flow(name="training", log_prints=True)
def training(
    experiments: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    release: bool = False,
    skip_if_unchanged: bool = False,
    require_remotes: bool = False,
    project_dir: str = ".",
) -> dict[str, Any]:
    """Run the DVC pipeline stage group by stage group and publish its results.

    Args:
        experiments: names from `params.yaml` `experiments:`; None runs all of them (and the
            stages that aggregate them, such as the report).
        overrides: params to change first, `{"split.val_fraction": 0.3}`, read as
            `dvc exp run -S` reads them and written into `params.yaml`.
        release: after the stages, commit the results and release the champion of each
            dataset the experiments use (`registry.artifacts` in params.yaml) through the
            model registry, then push the commit and tags to `origin` if there is one.
            Refused when the workspace has uncommitted changes to begin with.
        skip_if_unchanged: the nightly mode: when `dvc status` reports nothing changed, run no
            stage and record the skip as an artifact.
        require_remotes: refuse, before any stage runs, unless the project has a DVC remote
            and a git remote `origin`: a deployment's run starts in a fresh clone on its
            worker, and without the remotes it can neither skip what was computed elsewhere
            nor keep what it computes (`nightly-retrain` sets it).
        project_dir: the project root (where `dvc.yaml` is); a deployment's working directory.

    Returns:
        `{"skipped": bool, "stages": {group: {"ran": [...], "skipped": [...]}},
        "leaderboard": [...], "report": path or None, "released": [...]}`.
    """
    logger = get_run_logger()
    root = Path(project_dir).resolve()
    params, selected, parsed = validate(root, experiments, overrides)
    if release:
        changes = git_changes(root)
        if changes:
            raise AtelierError(
                f"Refusing to release from a dirty workspace ({root}): "
                f"{len(changes)} uncommitted change(s):\n  "
                + "\n  ".join(changes[:10])
                + "\nCommit or discard them first, so the release records exactly what ran."
            )
    remote = has_dvc_remote(root)
    if require_remotes:
        check_remotes(root, dvc_remote=remote)
    if remote:
        dvc_pull(root)
    groups = plan_groups(list_stages(root), params, selected)
    summary: dict[str, Any] = {"skipped": False, "stages": {}, "released": []}
    if skip_if_unchanged and not parsed:
        targets = [address for group in groups.values() for address in group]
        changes = changed_stages(root, targets)
        if not changes:
            create_markdown_artifact(
                key="training-skipped",
                markdown="# Training skipped\n\n`dvc status` reports no changed stage among "
                f"{len(targets)}: params, code and data match `dvc.lock`.\n",
                description="The nightly run found nothing to retrain.",
            )
            logger.info("dvc status: nothing changed in %d stage(s); skipping", len(targets))
            return {**summary, "skipped": True}
        logger.info("dvc status: changed stages: %s", ", ".join(sorted(changes)))
    write_overrides(root, parsed)
    for group, targets in groups.items():
        runner = io_stage if group in IO_GROUPS else stage
        summary["stages"][group] = runner(root, group, targets)
    summary.update(publish_results(root, params, selected))
    if release:
        from prefect.runtime import flow_run

        artifacts = release_artifacts(params, selected)
        summary["released"] = release_models(root, artifacts, flow_run.name or "local")
    if remote:
        dvc_push(root)
    return summary


def check_remotes(root: Path, *, dvc_remote: bool) -> None:
    """Refuse, naming the settings to add, a project without a DVC remote or a git `origin`."""
    missing = []
    if not dvc_remote:
        missing.append(
            "a DVC remote, for the cached outputs a fresh worker pulls and the release reads "
            "(`dvc remote add -d storage <url>`, committed in .dvc/config; credentials in the "
            "worker's environment or `dvc remote modify --local`)"
        )
    remotes = subprocess.run(
        ["git", "remote"], cwd=root, capture_output=True, text=True, check=False
    ).stdout.split()
    if "origin" not in remotes:
        missing.append(
            "a git remote `origin`, where the release pushes its commit and the registry's tags "
            "(`git remote add origin <url>`; a deployment's clone of ATELIER_GIT_URL has it)"
        )
    if missing:
        raise AtelierError(
            f"This run needs remotes that {root} does not have (require_remotes): "
            + "; ".join(missing)
            + ". Nothing was run."
        )


# --- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None, *, prog: str = "python -m flows.training") -> int:
    """`atelier flow training` (also `python -m flows.training`): parse, check, run the flow."""
    from pipeline.cli import HelpParser, Listing
    from pipeline.core.logs import setup_logging

    listing = Listing(paths.PARAMS_FILE)
    parser = HelpParser(
        prog=prog,
        description=__doc__.replace("python -m flows.training", prog),
        epilog_from=listing.experiments,
    )
    parser.add_argument(
        "-e",
        "--experiment",
        action="append",
        dest="experiments",
        metavar="NAME",
        help="run this experiment's stages only (repeatable; the report and select stages, "
        "which need every experiment, are skipped); default: every experiment",
    )
    parser.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="change a param first, as `dvc exp run -S` does: written into params.yaml "
        "(repeatable), e.g. -S split.val_fraction=0.3",
    )
    parser.add_argument(
        "--release",
        action="store_true",
        help="then commit the results and release each dataset's champion to the registry "
        "(refused when the workspace has uncommitted changes)",
    )
    parser.add_argument(
        "--skip-if-unchanged",
        action="store_true",
        help="run no stage when `dvc status` reports nothing changed (the nightly mode)",
    )
    parser.add_argument(
        "--require-remotes",
        action="store_true",
        help="refuse before any stage unless the project has a DVC remote and a git `origin` "
        "(what a deployment's fresh clone needs; `nightly-retrain` sets it)",
    )
    parser.add_argument(
        "--project-dir",
        default=".",
        metavar="DIR",
        help="the project root, where dvc.yaml is (default: the current directory)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug log lines")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="warnings and errors only")
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        overrides = parse_overrides(args.overrides)
        validate(Path(args.project_dir), args.experiments, overrides)
        summary = training(
            experiments=args.experiments,
            overrides=overrides or None,
            release=args.release,
            skip_if_unchanged=args.skip_if_unchanged,
            require_remotes=args.require_remotes,
            project_dir=args.project_dir,
        )
    except AtelierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if summary["skipped"]:
        print("Nothing changed since the last run (dvc status); no stage ran.")
        return 0
    print(markdown_table(summary["leaderboard"]))
    report = summary["report"]
    print(f"Report: {report}" if report else "Report: no report stage in dvc.yaml yet.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
