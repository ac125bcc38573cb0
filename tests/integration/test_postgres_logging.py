"""No log record of the client (or of psycopg and its pool) carries a password."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from uuid import uuid4

import psycopg
import pytest

from crm_infra.adapters import PostgresClient
from crm_infra.bootstrap import BootstrappedDatabase
from tests.fixtures.postgres import login_role

# The server's own words when a backend is terminated. As the password they make a marker
# that a failure message really carries, so only scrubbing can keep it out of a log record.
_MARKER = "administrator"


@pytest.fixture
def marked_url(pg_database: BootstrappedDatabase) -> Iterator[str]:
    """A URL of a throwaway app login role whose password is the marker."""
    with login_role(
        pg_database, "NOBYPASSRLS IN ROLE crm_app", prefix="crm_test_log", password=_MARKER
    ) as role:
        yield role.url


def test_a_failed_give_back_logs_no_password(
    marked_url: str, pg_database: BootstrappedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with PostgresClient(
        marked_url, 1, min_pool_size=1, admin_connection_url=pg_database.admin_url
    ) as client:
        with pytest.raises(RuntimeError), client.transaction(uuid4()) as tx:  # noqa: PT012 - the block body is what is tested
            pid = tx.execute_scalar("SELECT pg_backend_pid() AS pid")
            with psycopg.connect(pg_database.superuser_url, autocommit=True) as su:
                su.execute("SELECT pg_terminate_backend(%s)", (pid,))
            raise RuntimeError("boom")  # the rollback on the way out meets a dead backend
        assert client.execute("SELECT 1 AS one", user_id=uuid4()) == [{"one": 1}]
    said = [r.getMessage() for r in caplog.records]
    assert any("rollback" in m for m in said)  # the failure was logged...
    assert not [m for m in said if _MARKER in m]  # ...without the password
