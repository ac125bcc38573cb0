"""Test-wide configuration.

Real-service tests (marked ``real``) run by default and start their own OpenBao and Valkey
servers; PostgreSQL comes from ``CRM_TEST_DATABASE_URL`` (default: the local server). A missing
service fails the run with instructions. ``--skip-real`` leaves them out locally; under CI it
is refused, so CI can never pass by skipping.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.common import in_ci

pytest_plugins = [
    "tests.fixtures.openbao",
    "tests.fixtures.valkey",
    "tests.fixtures.postgres",
    "tests.fixtures.pgbouncer",
    "tests.fixtures.telemetry",
    "tests.fixtures.database_engine",
]

_INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--skip-real",
        action="store_true",
        default=False,
        help="leave out tests that need real servers (refused when CI=true)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--skip-real") and in_ci():
        raise pytest.UsageError("--skip-real is refused under CI: real-service tests must run")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.real)
    if config.getoption("--skip-real"):
        skip = pytest.mark.skip(reason="--skip-real given")
        for item in items:
            if "real" in item.keywords:
                item.add_marker(skip)
