"""The data stages under real DVC in a throwaway git repository: run, no-op, and a param change.

The project is copied into `tmp_path` with params shrunk to the digits dataset (bundled with
scikit-learn, no network) and no experiments. `dvc repro` is given the data stages as targets, so
stages added later (train, evaluate, report) stay out of this test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

DATA_STAGES = ("download", "preprocess", "split")
PROJECT_FILES = ("dvc.yaml", "pyproject.toml", ".dvcignore", ".gitignore")


def make_copy(project_root, destination):
    shutil.copytree(
        project_root / "pipeline",
        destination / "pipeline",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in PROJECT_FILES:
        if (project_root / name).exists():
            shutil.copy2(project_root / name, destination / name)
    params = yaml.safe_load((project_root / "params.yaml").read_text())
    params["data"]["datasets"] = ["digits"]
    params["experiments"] = {}
    params["crossval"] = {"experiments": [], "folds": []}  # no K-fold runs
    (destination / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@dataclass
class Repo:
    root: Path
    env: dict[str, str]

    def run(self, *command: str) -> str:
        """Run `command` in the repository; return its stdout and stderr, which DVC splits."""
        result = subprocess.run(
            command, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=180
        )
        assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr


@pytest.fixture
def repo(project_root, tmp_path) -> Repo:
    """A committed git + DVC repository holding a copy of the project."""
    root = tmp_path / "project"
    root.mkdir()
    make_copy(project_root, root)
    env = {
        **os.environ,
        "PATH": f"{project_root / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("PYTHONPATH", None)
    repo = Repo(root, env)
    repo.run("git", "init", "--quiet")
    repo.run("git", "config", "user.name", "Atelier Test")
    repo.run("git", "config", "user.email", "test@atelier.invalid")
    repo.run("dvc", "init", "--quiet")
    shutil.copy2(project_root / ".dvc" / "config", root / ".dvc" / "config")
    repo.run("git", "add", "--all")
    repo.run("git", "commit", "--quiet", "--message", "project copy")
    return repo


def test_data_stages_run_then_skip_then_rerun_only_what_a_param_touches(repo):
    root = repo.root

    first = repo.run("dvc", "repro", *DATA_STAGES)
    for stage in DATA_STAGES:
        assert f"Running stage '{stage}@digits'" in first
    assert (root / "data/raw/digits/digits.csv.gz").is_file()
    for name in ("x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy", "meta.json"):
        assert (root / "data/prepared/digits" / name).is_file()
    for name in ("train_idx.npy", "val_idx.npy", "split.json"):
        assert (root / "data/split/digits" / name).is_file()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == ["download@digits", "preprocess@digits", "split@digits"]
    meta = json.loads((root / "data/prepared/digits/meta.json").read_text())
    assert (meta["n_train"], meta["n_test"]) == (1437, 360)
    repo.run("git", "add", "--all")
    repo.run("git", "commit", "--quiet", "--message", "first run")

    second = repo.run("dvc", "repro", *DATA_STAGES)
    assert "Running stage" not in second
    for stage in DATA_STAGES:
        assert f"Stage '{stage}@digits' didn't change, skipping" in second
    assert "Data and pipelines are up to date." in second

    changed = repo.run("dvc", "exp", "run", "-S", "split.val_fraction=0.3", *DATA_STAGES)
    assert "Stage 'download@digits' didn't change, skipping" in changed
    assert "Stage 'preprocess@digits' didn't change, skipping" in changed
    assert "Running stage 'split@digits'" in changed
    assert [line for line in changed.splitlines() if line.startswith("Running stage")] == [
        "Running stage 'split@digits':"
    ]
    summary = json.loads((root / "data/split/digits/split.json").read_text())
    assert summary["val_fraction"] == 0.3
    assert summary["n_val"] == 431  # round(0.3 * 1437)
