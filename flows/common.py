"""What the flows share: running DVC's CLI, param overrides, the workspace's git state, results.

Everything here shells out to `dvc` and `git` (the same executables a user runs), so the flows
never hold DVC's repository lock between commands and a failing command's own message is what
the task reports.
"""

from __future__ import annotations

import collections
import copy
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core import paths
from pipeline.core.errors import AtelierError, ParamsError
from pipeline.core.yamlio import load_yaml
from pipeline.params import Params, parse_params
from pipeline.tasks.kinds import rank, task_kind

log = logging.getLogger(__name__)

RAN = re.compile(r"^Running stage '([^']+)'")
SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping")
OUTPUT_TAIL_LINES = 60
# For commands whose output is data (stage lists, remotes), not progress worth logging.
_QUIET = logging.getLogger("flows.quiet")
_QUIET.setLevel(logging.WARNING)


class DvcCommandError(AtelierError):
    """A `dvc` or `git` command exited non-zero; the message carries the end of its output."""

    def __init__(self, command: list[str], returncode: int, output: str) -> None:
        self.command = command
        self.returncode = returncode
        self.output = output
        super().__init__(
            f"`{' '.join(command)}` failed with exit status {returncode}:\n{output.rstrip()}"
        )


@dataclass
class CommandResult:
    """One finished command: its combined stdout/stderr and, for `dvc repro`, what ran."""

    command: list[str]
    output: str
    seconds: float
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def tool_env() -> dict[str, str]:
    """The environment for `dvc`/`git`: this interpreter's bin directory first on PATH.

    DVC runs each stage's `cmd` (`python -m pipeline ...`) through the shell, so `python` must be
    the interpreter that has the project's dependencies, whichever way the worker was started.
    """
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_command(
    command: list[str],
    root: Path,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
    *,
    check: bool = True,
) -> CommandResult:
    """Run `command` in `root`, streaming its output lines to `logger` as they come.

    Raises:
        DvcCommandError: on a non-zero exit (when `check`), with the last lines of the output,
            where DVC and the stage print why they failed.
    """
    logger = logger or log
    executable = [sys.executable, "-m", "dvc", *command[1:]] if command[0] == "dvc" else command
    started = time.perf_counter()
    lines: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    with subprocess.Popen(
        executable,
        cwd=root,
        env=tool_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            tail.append(line)
            if line.strip():
                logger.info("%s", line)
        returncode = process.wait()
    seconds = time.perf_counter() - started
    output = "\n".join(lines)
    if check and returncode != 0:
        for line in tail:
            logger.error("%s", line)
        raise DvcCommandError(command, returncode, "\n".join(tail))
    result = CommandResult(command=command, output=output, seconds=seconds)
    for line in lines:
        if match := RAN.match(line):
            result.ran.append(match.group(1))
        elif match := SKIPPED.match(line):
            result.skipped.append(match.group(1))
    return result


# --- params and overrides -----------------------------------------------------------------------


def parse_override_value(key: str, value: Any) -> Any:
    """A value as `dvc exp run -S key=value` reads it: strings go through Hydra's grammar.

    `"0.3"` becomes 0.3, `"[64,32]"` a list, `"off"` stays a string; non-string values (from a
    Prefect parameter's JSON) are taken as they are.
    """
    if not isinstance(value, str):
        return value
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_override(f"{key}={value}").value()
    except OverrideParseException as exc:
        raise ParamsError(f"Override {key}={value!r} is not a valid value: {exc}") from None


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ParamsError(f"Override key {key!r} is not a dotted params.yaml key like split.folds.")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ParamsError(
                f"Override {key}: {where} is {child!r}, not a section with keys; "
                "override it whole or pick a key inside a section."
            )
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: Mapping[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """Normalise overrides given as a mapping or as `key=value` strings (the `-S` form)."""
    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for text in overrides:
            key, sep, value = str(text).partition("=")
            if not sep:
                raise ParamsError(
                    f"Override {text!r} must look like key=value (e.g. split.folds=3)."
                )
            items.append((key.strip(), value))
    return {key: parse_override_value(key, value) for key, value in items}


def load_params_with(root: Path, overrides: Mapping[str, Any]) -> Params:
    """`params.yaml` with `overrides` applied in memory, validated by the pipeline's schema.

    Raises:
        ParamsError: the pipeline's own message, naming the overridden key that is wrong.
    """
    path = root / paths.PARAMS_FILE
    try:
        raw = load_yaml(path)
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: point the flow at a project root.") from None
    raw = copy.deepcopy(raw) if isinstance(raw, dict) else raw
    if overrides and isinstance(raw, dict):
        for key, value in overrides.items():
            _set_dotted(raw, key, value)
        source = f"params.yaml with overrides {dict(overrides)}"
    else:
        source = "params.yaml"
    return parse_params(raw, source=source)


def write_overrides(root: Path, overrides: Mapping[str, Any]) -> None:
    """Write `overrides` into `params.yaml` through DVC's own writer (`modify_yaml`, which
    `dvc exp run -S` uses too), keeping its comments and order. Every setting that takes effect is
    written out in `params.yaml`, so an override replaces an existing value: its line alone
    changes."""
    if not overrides:
        return
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(root / paths.PARAMS_FILE) as data:
        for key, value in overrides.items():
            _set_dotted(data, key, value)


# --- workspace ----------------------------------------------------------------------------------


def git_changes(root: Path) -> list[str]:
    """`git status --porcelain` lines: uncommitted changes that a release would not record."""
    result = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=normal"],
        cwd=root,
        env=tool_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AtelierError(f"{root} is not a git repository ({result.stderr.strip()}).")
    return [line for line in result.stdout.splitlines() if line.strip()]


def has_dvc_remote(root: Path) -> bool:
    result = run_command(["dvc", "remote", "list"], root, _QUIET, check=False)
    return result.output.strip() != ""


def list_stages(root: Path) -> list[str]:
    """Every stage address in `dvc.yaml` order (`download@digits`, ..., `report`)."""
    result = run_command(["dvc", "stage", "list", "--name-only"], root, _QUIET)
    return [line.strip() for line in result.output.splitlines() if line.strip()]


# --- results ------------------------------------------------------------------------------------

LEADERBOARD_COLUMNS = (
    "experiment",
    "dataset",
    "model",
    "task",
    "metric",
    "value",
    "test_accuracy",
    "macro_f1",
    "val_accuracy",
    "val_loss",
    "epochs_run",
    "params_count",
    "train_time_s",
    "source",
)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def leaderboard(root: Path, params: Params, experiments: Iterable[str]) -> list[dict[str, Any]]:
    """One row per experiment, best first: `plots/<exp>/evaluation.json` where evaluate wrote it.

    Experiments without test metrics yet fall back to `models/<exp>/train.json` (validation
    figures of the best epoch); the `source` column says which file each row comes from.
    """
    rows = []
    for name in experiments:
        experiment = params.experiments[name]
        record_path = paths.evaluation_file(name)
        train_path = paths.MODELS_DIR / name / "train.json"
        figures = _read_json(root / record_path)
        source = record_path
        if figures is None:
            figures, source = _read_json(root / train_path), train_path
        if figures is None:
            continue
        row: dict[str, Any] = {
            "experiment": name,
            "dataset": experiment.dataset,
            "model": experiment.model.name,
            "task": experiment.task,
        }
        headline = task_kind(experiment.task).headline
        value = figures.get(headline)
        row["metric"], row["value"] = headline, round(value, 4) if value is not None else None
        for column in LEADERBOARD_COLUMNS[6:-1]:
            value = figures.get(column)
            row[column] = round(value, 4) if isinstance(value, float) else value
        row["source"] = str(source)
        rows.append(row)

    # By task kind, then its headline test metric, best first (one direction rule for all).
    return sorted(rows, key=lambda row: rank(row["task"], {row["metric"]: row["value"]}))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_No experiment has results yet._\n"
    columns = [column for column in LEADERBOARD_COLUMNS if any(row.get(column) for row in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = ["" if row.get(column) is None else str(row[column]) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
