"""The training flow's release step: commit the results, release each champion, push.

The registry versions what a commit records, so the new `dvc.lock`, params and metrics are
committed first; the commit and the registry's tags are then pushed to `origin` when the project
has one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import git_changes, run_command
from pipeline.params import Params

IO_RETRIES = 3
IO_RETRY_DELAYS = [2, 5, 15]


@task(name="release", task_run_name="release", cache_policy=NO_CACHE)
def release_models(root: Path, artifacts: list[str], flow_run_name: str) -> list[dict[str, Any]]:
    """Commit the run's results, then `python -m pipeline registry release` each artifact.

    The registry versions what a commit records, so the new `dvc.lock`, params and metrics are
    committed first; the commit and the registry's tags are then pushed to `origin` when the
    project has one. What each release promoted, and why (each rule with its figure), is kept
    as a Markdown artifact.
    """
    logger = get_run_logger()
    if git_changes(root):
        run_command(["git", "add", "--all"], root, logger)
        message = f"Retrain ({flow_run_name}): pipeline results"
        run_command(["git", "commit", "--quiet", "-m", message], root, logger)
    released = []
    for artifact in artifacts:
        result = run_command(
            [sys.executable, "-m", "pipeline", "registry", "release", artifact], root, logger
        )
        released.append({"artifact": artifact, "output": result.output})
    if "origin" in run_command(["git", "remote"], root, logger).output.split():
        push_release(root)
    create_markdown_artifact(
        key="release",
        markdown="# Release\n\n"
        + "\n\n".join(
            f"## {item['artifact']}\n\n```\n{item['output'].strip()}\n```" for item in released
        ),
        description="What the registry promoted, and the rule figures that decided it.",
    )
    return released


@task(
    name="git-push",
    task_run_name="git-push",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    cache_policy=NO_CACHE,
)
def push_release(root: Path) -> None:
    """Push the results commit and the registry's tags to `origin`.

    A deployment runs in a fresh clone on the worker: without the push, the versions and stages
    the registry just recorded would go away with the clone.
    """
    run_command(["git", "push", "origin", "HEAD", "--tags"], root, get_run_logger())


def release_artifacts(params: Params, experiments: list[str]) -> list[str]:
    """The registry artifacts (one champion per dataset) that the experiments compete for."""
    datasets = dict.fromkeys(params.experiments[name].dataset for name in experiments)
    return [params.registry.artifact_name(dataset) for dataset in datasets]
