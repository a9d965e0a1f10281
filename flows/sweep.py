"""The `sweep` flow: a grid of param overrides, each point a DVC experiment, run in parallel.

Each point is `dvc exp run --temp -n <name> -S key=value ... train@<exp> evaluate@<exp>`: DVC
runs it in its own temporary workspace and records it as an experiment (a git ref), so points
do not share a working tree and `dvc exp show` / `dvc exp apply` work on the results as on any
other experiment. Points run on a Prefect thread-pool task runner with `max_parallel` slots,
or, with `--deployment`, each as a flow run on a work pool's workers (flows/sweep_pool.py).

    python -m flows.sweep -e digits_sgd -g experiments.digits_sgd.model.max_iter=5,10,20 -j 2
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import (
    DvcCommandError,
    list_stages,
    load_params_with,
    parse_override_value,
    run_command,
    tool_env,
)
from flows.sweep_pool import POINT_RETRIES, pool_preflight, run_points_on_pool
from pipeline.core import paths
from pipeline.core.errors import AtelierError, ParamsError
from pipeline.core.metrics import sort_key
from pipeline.core.yamlio import load_yaml
from pipeline.tasks.kinds import task_kind

LOCK_RETRIES = 3


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order the keys and values are given."""
    if not grid:
        raise ParamsError("The sweep grid is empty: give at least one key with a list of values.")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ParamsError(f"Sweep grid key {key!r} needs a non-empty list of values.")
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


MAX_POINTS = 32


def validate_grid(
    root: Path, grid: dict[str, list[Any]], experiment: str, max_points: int = MAX_POINTS
) -> list[dict[str, Any]]:
    """Every point of `grid`, each checked by the pipeline's schema before any runs.

    Raises:
        ParamsError: a grid of more than `max_points` points (a typo in a value list can make
            hundreds), naming the point's key that makes params.yaml invalid, or an unknown
            experiment.
    """
    combos = expand_grid(grid)
    if len(combos) > max_points:
        sizes = " × ".join(f"{len(values)} ({key})" for key, values in grid.items())
        raise ParamsError(
            f"The sweep grid has {len(combos)} points ({sizes}), more than max_points = "
            f"{max_points}: narrow the grid, or raise max_points (`--max-points`) if you mean "
            "it. Nothing was run."
        )
    for combo in combos:
        parsed = {key: parse_override_value(key, value) for key, value in combo.items()}
        chosen = load_params_with(root, parsed).experiment(experiment)
        for key in parsed:
            _require_effect(key, experiment, chosen)
    return combos


def _ranking_metric(root: Path, experiment: str, metric: str | None) -> str:
    """`metric`, or the experiment's headline metric when it is None; refused when
    `metrics/<experiment>.json` does not hold it (`dvc exp show` reports only that file's
    figures for each point)."""
    kind = task_kind(load_params_with(root, {}).experiment(experiment).task)
    summary = kind.summary
    if metric is None:
        return kind.headline
    if metric not in summary:
        raise ParamsError(
            f"The sweep ranks by {metric!r}, which metrics/{experiment}.json does not hold: use "
            f"one of {', '.join(summary)} (`--metric`). Nothing was run."
        )
    return metric


def _require_effect(key: str, name: str, experiment) -> None:
    """Refuse an override of a setting the experiment does not train with (`epochs` of the
    scikit-learn baseline, `threshold` of a classifier): its points would all be the same run."""
    prefix = f"experiments.{name}."
    if not key.startswith(prefix):
        return
    setting = key.removeprefix(prefix).split(".")[0]
    if setting not in experiment.effective_keys():
        raise ParamsError(
            f"Sweep key {key!r} changes nothing that {name!r} trains: a "
            f"{experiment.model.name} {experiment.task} experiment takes "
            f"{', '.join(experiment.effective_keys())}. Sweep one of those instead."
        )


def _set_arg(raw: dict, key: str, value: Any) -> str:
    """One `-S` argument; `++` adds a key that params.yaml leaves to the schema's default."""
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    prefix = "" if node is not None else "++"
    text = value if isinstance(value, str) else json.dumps(value)
    return f"{prefix}{key}={text}"


def _locked(task, task_run, state) -> bool:
    """Retry a point only when DVC's repository lock was busy (points start at the same time)."""
    try:
        state.result()
    except DvcCommandError as exc:
        return "Unable to acquire lock" in exc.output
    except Exception:  # noqa: BLE001 - any other failure is the point's own
        return False
    return False


@task(
    task_run_name="point-{name}",
    retries=LOCK_RETRIES,
    retry_delay_seconds=[1, 2, 4],
    retry_condition_fn=_locked,
    cache_policy=NO_CACHE,
)
def run_point(root: Path, name: str, set_args: list[str], targets: list[str]) -> dict[str, Any]:
    """Run one grid point as a DVC experiment in a temporary workspace; time it."""
    started = time.time()
    run_command(
        ["dvc", "exp", "run", "--temp", "-n", name, *(a for s in set_args for a in ("-S", s)),
         *targets],
        root,
        get_run_logger(),
    )  # fmt: skip
    return {"name": name, "started": started, "finished": time.time()}


def experiment_results(root: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` for the named experiments: their rev, params and metrics."""
    command = [sys.executable, "-m", "dvc", "exp", "show", "--json", "--no-fetch"]
    result = subprocess.run(
        command, cwd=root, env=tool_env(), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DvcCommandError(["dvc", *command[3:]], result.returncode, result.stderr)
    found: dict[str, dict[str, Any]] = {}
    for baseline in json.loads(result.stdout):
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                if rev.get("name") in names and rev.get("data"):
                    data = rev["data"]
                    found[rev["name"]] = {
                        "rev": rev["rev"],
                        "params": (data.get("params") or {}).get("params.yaml", {}).get("data", {}),
                        "metrics": {
                            path: entry.get("data", {})
                            for path, entry in (data.get("metrics") or {}).items()
                        },
                    }
    return found


def _dotted(data: dict, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def sweep_leaderboard(
    results: dict[str, dict[str, Any]],
    points: list[tuple[str, dict[str, Any]]],
    experiment: str,
    metric: str,
) -> list[dict[str, Any]]:
    """One row per point, best `metric` first (lowest first for losses and errors)."""
    metrics_file = str(paths.METRICS_DIR / f"{experiment}.json")
    files = [result.get("metrics", {}).get(metrics_file) for result in results.values()]
    summary = next((list(figures) for figures in files if figures), [])  # headline first
    rows = []
    for name, overrides in points:
        result = results.get(name, {})
        figures = result.get("metrics", {}).get(metrics_file, {})
        row: dict[str, Any] = {"experiment": name, "rev": result.get("rev", "")[:7]}
        for key in overrides:
            row[key] = _dotted(result.get("params", {}), key)
        for column in dict.fromkeys([metric, *summary]):
            row[column] = figures.get(column)
        rows.append(row)
    return sorted(rows, key=lambda row: sort_key(metric, row[metric]))


@flow(name="sweep", log_prints=True)
def sweep(
    grid: dict[str, list[Any]],
    experiment: str,
    metric: str | None = None,
    max_parallel: int = 2,
    apply_best: bool = False,
    project_dir: str = ".",
    max_points: int = MAX_POINTS,
    point_deployment: str | None = None,
    git_remote: str = "origin",
    point_retries: int = POINT_RETRIES,
) -> dict[str, Any]:
    """Run every point of `grid` as a DVC experiment of `experiment`: `max_parallel` at a time
    here, or each as a flow run of `point_deployment` on its work pool's workers.

    Args:
        grid: `{"experiments.digits_mlp.learning_rate": [0.001, 0.01], ...}`; keys are
            params.yaml keys as `dvc exp run -S` takes them, values the settings to try.
        experiment: the experiment whose stages each point runs (`train@`, `evaluate@`).
        metric: the key of `metrics/<experiment>.json` that ranks the points (None: the
            experiment's headline metric).
        max_parallel: points running at once (each is a process; keep it at most the cores or
            GPUs the worker has).
        apply_best: `dvc exp apply` the winner to the workspace.
        project_dir: the project root.
        max_points: the largest grid accepted; a larger one is refused before any point runs.
        point_deployment: e.g. `sweep-point/points-gpu`: each point a run of it on its pool
            (`max_parallel` then unused); `git_remote` the workers clone and push to; a
            crashed point submitted again up to `point_retries` times.

    Returns:
        `{"points": [{name, started, finished}], "leaderboard": rows, "applied": name or None}`.

    Raises:
        ParamsError: before any point runs, when a point's params are invalid.
    """
    logger = get_run_logger()
    if max_parallel < 1:
        raise ParamsError(f"max_parallel is {max_parallel}; it must be at least 1.")
    root = Path(project_dir).resolve()
    raw = load_yaml(root / paths.PARAMS_FILE)
    combos = validate_grid(root, grid, experiment, max_points)
    metric = _ranking_metric(root, experiment, metric)
    targets = [name for name in list_stages(root) if name.partition("@")[2] == experiment]

    from prefect.runtime import flow_run

    prefix = f"{experiment}-{flow_run.name or 'sweep'}"
    points = [(f"{prefix}-{index}", combo) for index, combo in enumerate(combos, start=1)]
    set_args = {name: [_set_arg(raw, key, value) for key, value in combo.items()]
                for name, combo in points}  # fmt: skip
    if point_deployment:
        revision = pool_preflight(root, point_deployment, git_remote)
        logger.info(
            "%d point(s) of commit %s to %s: %s",
            len(points), revision[:7], point_deployment, ", ".join(targets),
        )  # fmt: skip
        timings = run_points_on_pool(
            root, point_deployment, set_args, revision=revision, targets=targets,
            git_remote=git_remote, point_retries=point_retries,
        )  # fmt: skip
    else:
        logger.info("%d point(s), %d at a time: %s", len(points), max_parallel, ", ".join(targets))
        timings = _run_here(root, set_args, targets, max_parallel)
    rows = sweep_leaderboard(
        experiment_results(root, [n for n, _ in points]), points, experiment, metric
    )
    create_table_artifact(
        key="sweep-leaderboard",
        table=rows,
        description=f"Sweep of {experiment}, best {metric} first (from `dvc exp show`).",
    )
    applied = None
    if apply_best and rows and rows[0][metric] is not None:
        applied = rows[0]["experiment"]
        run_command(["dvc", "exp", "apply", applied], root, logger)
    return {"points": timings, "leaderboard": rows, "applied": applied}


def _run_here(
    root: Path, set_args: dict[str, list[str]], targets: list[str], max_parallel: int
) -> list[dict[str, Any]]:
    """Every point as `dvc exp run --temp` on this machine, `max_parallel` at a time."""
    with ThreadPoolTaskRunner(max_workers=max_parallel) as runner:
        futures = [
            runner.submit(
                run_point, {"root": root, "name": name, "set_args": args, "targets": targets}
            )
            for name, args in set_args.items()
        ]
        return [future.result() for future in futures]


def main(argv: list[str] | None = None, *, prog: str = "python -m flows.sweep") -> int:
    """`atelier flow sweep` (also `python -m flows.sweep`): parse, check, run the flow."""
    from pipeline.cli import HelpParser, Listing
    from pipeline.core.logs import setup_logging

    parser = HelpParser(
        prog=prog,
        description=__doc__.replace("python -m flows.sweep", prog),
        epilog_from=Listing(paths.PARAMS_FILE).experiments,
    )
    parser.add_argument(
        "-e",
        "--experiment",
        required=True,
        metavar="NAME",
        help="the experiment whose train and evaluate stages every point runs (listed below)",
    )
    parser.add_argument(
        "-g",
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2,...",
        help="a params.yaml key as `dvc exp run -S` takes it and the values to try "
        "(repeatable: the grid is every combination)",
    )
    parser.add_argument(
        "-m",
        "--metric",
        help="the key of metrics/<experiment>.json that ranks the points (default: the "
        "experiment's headline metric, e.g. test_accuracy or test_mae; lowest first for losses "
        "and errors)",
    )
    parser.add_argument(
        "-j",
        "--max-parallel",
        type=int,
        default=2,
        metavar="N",
        help="points running at once, each a process (default: 2; at most the cores or GPUs)",
    )
    parser.add_argument(
        "--max-points",
        type=int,
        default=MAX_POINTS,
        metavar="N",
        help=f"refuse a grid of more points than this, before any runs (default: {MAX_POINTS})",
    )
    parser.add_argument(
        "--deployment",
        metavar="FLOW/DEPLOYMENT",
        help="submit each point to this deployment's work pool (e.g. sweep-point/points-gpu) "
        "instead of running it here: any number of workers, on any machines, take points",
    )
    parser.add_argument(
        "--git-remote",
        default="origin",
        metavar="NAME",
        help="with --deployment: the git remote the workers clone and push to",
    )
    parser.add_argument("--point-retries", type=int, default=POINT_RETRIES, metavar="N",
                        help=f"with --deployment: a crashed point runs again up to N times "
                        f"(default: {POINT_RETRIES})")  # fmt: skip
    parser.add_argument(
        "--apply-best",
        action="store_true",
        help="`dvc exp apply` the best point to the workspace afterwards",
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
    grid: dict[str, list[Any]] = {}
    for item in args.grid:
        key, _, values = item.partition("=")
        grid[key.strip()] = [value for value in values.split(",") if value]
    try:
        validate_grid(Path(args.project_dir), grid, args.experiment, args.max_points)
        summary = sweep(
            grid=grid,
            experiment=args.experiment,
            metric=args.metric,
            max_parallel=args.max_parallel,
            apply_best=args.apply_best,
            project_dir=args.project_dir,
            max_points=args.max_points,
            point_deployment=args.deployment,
            git_remote=args.git_remote,
            point_retries=args.point_retries,
        )
    except AtelierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_table(summary["leaderboard"]))
    if summary["applied"]:
        print(f"Applied {summary['applied']} to the workspace (dvc exp apply).")
    return 0


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No results."
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
