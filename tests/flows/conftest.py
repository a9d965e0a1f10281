"""Fixtures for the flow tests: one Prefect test server per session, throwaway project copies."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flow_project import make_project


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A temporary Prefect server (SQLite) shared by every flow test; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with prefect_test_harness(server_startup_timeout=60):
        yield PREFECT_API_URL.value()


@pytest.fixture
def new_project(tmp_path: Path) -> Callable[..., Path]:
    """`new_project(name="project", experiments=None, stages=None)`: a fresh project copy."""

    def factory(
        name: str = "project", experiments: dict | None = None, stages: tuple | None = None
    ) -> Path:
        return make_project(tmp_path / name, experiments, stages)

    return factory
