"""The backends every contract suite runs against.

To add a backend, add ONE entry to ``DB_BACKENDS`` (its name and the fixture that yields it,
already reset for the test); every test in ``test_user_scoped_db.py`` then runs on it too.

The asyncio twins run the same tests through a sync facade (``async_facade.py``): each test is
written once and runs on sync and async, fake and real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, cast

import pytest

from crm_infra.adapters import AsyncPostgresClient
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.fakes import AsyncInMemoryUserScopedDB, InMemoryUserScopedDB
from crm_infra.ports import AdminDB, UserScopedDB
from tests.contract.async_facade import AsyncContractDB, SyncDB
from tests.fixtures.pgbouncer import PgBouncer
from tests.fixtures.postgres import truncate_all

DB_BACKENDS: dict[str, str] = {
    "memory": "memory_db",
    "postgres": "pg_db",
    "pgbouncer": "pgbouncer_db",  # PostgreSQL through PgBouncer, transaction mode
    "memory-async": "memory_async_db",
    "postgres-async": "pg_async_db",
    "pgbouncer-async": "pgbouncer_async_db",
}
# Marked ``real``: left out by --skip-real.
REAL_BACKENDS = frozenset({"postgres", "pgbouncer", "postgres-async", "pgbouncer-async"})


class ContractDB(UserScopedDB, AdminDB, Protocol):
    """What the database contract tests need: both ports on one object."""


def backend_params(names: Iterator[str] | list[str]) -> list[object]:
    """One ``pytest.param`` per backend name, the real ones marked ``real``."""
    return [
        pytest.param(name, marks=[pytest.mark.real] if name in REAL_BACKENDS else [])
        for name in sorted(names)
    ]


def async_memory_db() -> SyncDB:
    """A fresh async in-memory fake, behind the sync facade."""

    async def build() -> AsyncContractDB:
        return AsyncInMemoryUserScopedDB()

    return SyncDB(build)


def async_postgres_db(make: Callable[[], AsyncPostgresClient]) -> SyncDB:
    """The client ``make()`` builds, opened on the facade's loop (its pools belong to that
    loop), behind the sync facade."""

    async def build() -> AsyncContractDB:
        client = make()
        await client.open()
        return client

    return SyncDB(build)


@pytest.fixture
def memory_db() -> Iterator[InMemoryUserScopedDB]:
    """A fresh in-memory fake built from the same sql/ files."""
    with InMemoryUserScopedDB() as fake:
        yield fake


@pytest.fixture
def memory_async_db() -> Iterator[SyncDB]:
    """A fresh async in-memory fake, behind the sync facade."""
    db = async_memory_db()
    yield db
    db.close()


def _session_client(build: Callable[[], SyncDB]) -> Iterator[SyncDB]:
    db = build()
    try:
        yield db
    finally:
        db.close()


@pytest.fixture(scope="session")
def pg_async_session_client(pg_database: BootstrappedDatabase) -> Iterator[SyncDB]:
    """One async client for the session (pool of 4), like ``pg_session_client``."""
    yield from _session_client(
        lambda: async_postgres_db(
            lambda: AsyncPostgresClient(
                pg_database.app_url, 4, admin_connection_url=pg_database.admin_url
            )
        )
    )


@pytest.fixture
def pg_async_db(pg_async_session_client: SyncDB) -> SyncDB:
    """The session's async client, with every CRM table emptied first."""
    truncate_all(pg_async_session_client)
    return pg_async_session_client


@pytest.fixture(scope="session")
def pgbouncer_async_session_client(pgbouncer: PgBouncer) -> Iterator[SyncDB]:
    """One async client for the session whose URLs both go through ``pgbouncer``."""
    yield from _session_client(
        lambda: async_postgres_db(
            lambda: AsyncPostgresClient(
                pgbouncer.app_url, 4, admin_connection_url=pgbouncer.admin_url
            )
        )
    )


@pytest.fixture
def pgbouncer_async_db(pgbouncer_async_session_client: SyncDB) -> SyncDB:
    """The async client through PgBouncer, with every CRM table emptied first."""
    truncate_all(pgbouncer_async_session_client)
    return pgbouncer_async_session_client


@pytest.fixture(params=backend_params(list(DB_BACKENDS)))
def db(request: pytest.FixtureRequest) -> ContractDB:
    """A database backend with empty CRM tables, both user-scoped and admin."""
    return cast(ContractDB, request.getfixturevalue(DB_BACKENDS[request.param]))
