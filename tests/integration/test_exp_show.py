"""`dvc exp show` of the default experiment set, read as a user reads it.

The repository's committed results are the default run's, so `dvc exp show --csv` in the project
root is what a new user sees after cloning. Its columns are counted here: each experiment's
summary comes first (`metrics/<experiment>.json`, headline first), then DVCLive's last-epoch
figures, then the params and a hash per dependency; no run facts, secondary or per-class figures.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline.params import load_params
from pipeline.tasks.kinds import task_kind

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIXED = ["Experiment", "rev", "typ", "Created", "parent"]
# Everything `dvc exp show` showed per experiment before the summaries; none of it is a column.
NOT_COLUMNS = ("train_time_s", "cpu_isa", "device", "params_count", "weighted_f1", "val_loss")


def dvc_exp_show(*args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--no-pager", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def flat(data: dict, prefix: str = "") -> list[str]:
    """Keys as `dvc exp show` names its columns: nested keys dotted, lists left out."""
    keys = []
    for key, value in data.items():
        if isinstance(value, dict):
            keys += flat(value, f"{prefix}{key}.")
        elif not isinstance(value, list):
            keys.append(f"{prefix}{key}")
    return keys


@pytest.fixture(scope="module")
def shown() -> dict:
    """The CSV header (the columns a user sees) and each column's kind and metrics file, from
    `--json` (a CSV column is `<file>:<key>` where two files share a key, else `<key>`)."""
    header = next(csv.reader(io.StringIO(dvc_exp_show("--csv"))))
    workspace = json.loads(dvc_exp_show("--json"))[0]["data"]
    metrics = {path: flat(entry.get("data") or {}) for path, entry in workspace["metrics"].items()}
    owner = Counter(key for keys in metrics.values() for key in keys)
    columns = []
    for column in header:
        path, _, key = column.rpartition(":")
        if path in metrics and key in metrics[path]:
            columns.append(("metrics", path, key))
        elif owner[column] == 1:
            path = next(path for path, keys in metrics.items() if column in keys)
            columns.append(("metrics", path, column))
        elif column in workspace["deps"]:
            columns.append(("deps", column, ""))
        elif column in FIXED:
            columns.append(("fixed", "", column))
        else:
            columns.append(("params", "params.yaml", column))
    return {"header": header, "columns": columns}


def test_the_summaries_come_first_headline_first(shown):
    params = load_params(PROJECT_ROOT / "params.yaml")
    first = next(iter(params.experiments))
    summary = task_kind(params.experiments[first].task).summary
    assert shown["header"][: len(FIXED)] == FIXED
    metrics = [(path, key) for kind, path, key in shown["columns"] if kind == "metrics"]
    assert shown["columns"][len(FIXED)] == ("metrics", f"metrics/{first}.json", summary[0])
    # Every experiment's summary before any of DVCLive's figures.
    summaries = {f"metrics/{name}.json" for name in params.experiments}
    last_summary = max(i for i, (path, _) in enumerate(metrics) if path in summaries)
    first_live = min(i for i, (path, _) in enumerate(metrics) if path.startswith("live/"))
    assert last_summary < first_live


def test_metrics_columns_are_each_summary_and_dvclives_last_epoch(shown):
    params = load_params(PROJECT_ROOT / "params.yaml")
    by_file: dict[str, list[str]] = {}
    for kind, path, key in shown["columns"]:
        if kind == "metrics":
            by_file.setdefault(path, []).append(key)
            assert not key.startswith(NOT_COLUMNS), (path, key)
    for name, experiment in params.experiments.items():
        assert by_file.pop(f"metrics/{name}.json") == list(task_kind(experiment.task).summary)
        live = by_file.pop(f"live/{name}/metrics.json")
        assert 1 <= len(live) <= 5, (name, live)  # train/eval loss and metric, step
    for name in params.crossval.experiments:
        kfold = by_file.pop(f"metrics/crossval/{name}.json")
        assert not any(re.match(r"fold\d", key) for key in kfold), kfold  # a list: hidden
    assert by_file == {}, by_file


def test_the_column_count(shown):
    """The count the README states, by kind: 5 fixed, a few metrics per experiment, every
    setting of params.yaml once, a hash per dependency (exact per-file code dependencies)."""
    counts = Counter(kind for kind, _, _ in shown["columns"])
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert counts["metrics"] / len(params.experiments) <= 9, counts  # 20 to 26 before summaries
    assert len(shown["header"]) <= 320, counts  # 499 before the summaries
    print(dict(counts), len(shown["header"]))


def test_the_readmes_narrow_view(shown):
    """The README's `dvc exp show --drop ...` line, run as written: about 60 columns, every
    experiment's summary still there."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("dvc exp show --drop "))
    header = next(csv.reader(io.StringIO(dvc_exp_show(*shlex.split(line)[3:], "--csv"))))
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert "the second line leaves 59:" in readme and len(header) == 59, header
    summaries = {f"metrics/{name}.json" for name in params.experiments}
    kept = [
        name
        for name, (kind, path, _) in zip(shown["header"], shown["columns"], strict=True)
        if kind == "metrics" and path in summaries
    ]
    assert len(kept) == 3 * len(params.experiments) and set(kept) <= set(header)
