"""Throwaway copies of the project for the flow tests.

A project copy is a committed git + DVC repository holding the pipeline, the flows and
`dvc.yaml`, with `params.yaml` shrunk to the digits dataset and seconds-long experiments.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"
COPIED = ("dvc.yaml", "pyproject.toml", ".dvcignore", ".gitignore")

TINY_EXPERIMENTS = {
    "digits_sgd": {
        "dataset": "digits",
        "model": {"name": "sgd_logistic", "max_iter": 5, "cv_folds": 2},
    },
    "digits_mlp": {
        "dataset": "digits",
        "model": {"name": "mlp", "units": [16]},
        "epochs": 2,
        "batch_size": 64,
    },
}


def tool_env() -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("PYTHONPATH", None)
    return env


def run(root: Path, *command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, cwd=root, env=kwargs.pop("env", tool_env()), capture_output=True, text=True,
        timeout=300, **kwargs,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


def make_project(
    destination: Path, experiments: dict | None = None, stages: tuple[str, ...] | None = None
) -> Path:
    """Copy the project into `destination` as a fresh, committed git + DVC repository.

    `stages`, when given, keeps only those stage groups of `dvc.yaml` (a pipeline that ends
    earlier); the default keeps all of them.
    """
    destination.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("pipeline", "flows"):
        shutil.copytree(PROJECT_ROOT / package, destination / package, ignore=ignore)
    for name in COPIED:
        if (PROJECT_ROOT / name).exists():
            shutil.copy2(PROJECT_ROOT / name, destination / name)
    if stages is not None:
        pipeline = yaml.safe_load((destination / "dvc.yaml").read_text())
        pipeline["stages"] = {k: v for k, v in pipeline["stages"].items() if k in stages}
        (destination / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"]["datasets"] = ["digits"]
    params["experiments"] = experiments if experiments is not None else TINY_EXPERIMENTS
    params["crossval"] = {"experiments": [], "folds": []}  # no K-fold runs
    (destination / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(destination, "git", "init", "--quiet")
    run(destination, "git", "config", "user.name", "Atelier Test")
    run(destination, "git", "config", "user.email", "test@atelier.invalid")
    run(destination, "dvc", "init", "--quiet")
    shutil.copy2(PROJECT_ROOT / ".dvc" / "config", destination / ".dvc" / "config")
    run(destination, "git", "add", "--all")
    run(destination, "git", "commit", "--quiet", "--message", "project copy")
    return destination
