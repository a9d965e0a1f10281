"""Fixtures shared by the integration tests."""

from tests.integration.prefect_stack import stack  # noqa: F401 (a fixture: a real Prefect server)
