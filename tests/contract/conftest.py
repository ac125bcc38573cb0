"""The backends every contract suite runs against.

To add a backend, add ONE entry to ``DB_BACKENDS`` (its name and the fixture that yields it,
already reset for the test); every test in ``test_user_scoped_db.py`` then runs on it too.

The asyncio twins run the same tests through a sync facade (``async_facade.py``): each test is
written once and runs on sync and async, fake and real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, cast

import attrs
import pytest

from crm_infra.adapters import AsyncPostgresClient, AsyncVaultClient, VaultClient
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.devservers.openbao import OpenBaoServer
from crm_infra.fakes import (
    AsyncInMemorySecretStore,
    AsyncInMemoryUserScopedDB,
    InMemorySecretStore,
    InMemoryUserScopedDB,
)
from crm_infra.ports import AdminDB, SecretStore, UserScopedDB
from crm_infra.secret_paths import EmailCredentials
from tests.contract.async_facade import AsyncContractDB, SyncDB, SyncSecretStore
from tests.fixtures.openbao import TEST_SECRETS, VaultMount
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
SECRET_BACKENDS: dict[str, str] = {
    "memory": "memory_secrets",
    "vault": "vault_secrets",  # OpenBao, a KV v2 mount of the test's own
    "memory-async": "memory_async_secrets",
    "vault-async": "vault_async_secrets",
}
# Marked ``real``: left out by --skip-real.
REAL_BACKENDS = frozenset(
    {"postgres", "pgbouncer", "postgres-async", "pgbouncer-async", "vault", "vault-async"}
)


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


# --- secrets -----------------------------------------------------------------------------------


class LayoutStore(SecretStore, Protocol):
    """A secret store with the layout accessors, as every secret backend has them."""

    def get_database_url(self) -> str: ...
    def get_admin_database_url(self) -> str: ...
    def get_valkey_url(self) -> str: ...
    def get_email_credentials(self) -> EmailCredentials: ...


@attrs.frozen
class SecretBackend:
    """One store under test and the means to change what it holds behind its back."""

    store: LayoutStore
    put: Callable[[str, Mapping[str, Any]], None]
    delete: Callable[[str], None]  # soft-delete the latest version


@pytest.fixture
def memory_secrets() -> SecretBackend:
    store = InMemorySecretStore(TEST_SECRETS)
    return SecretBackend(store, store.put_secret, store.delete_secret)


@pytest.fixture
def memory_async_secrets() -> Iterator[SecretBackend]:
    async def build() -> AsyncInMemorySecretStore:
        return AsyncInMemorySecretStore(TEST_SECRETS)

    store = SyncSecretStore(build)
    fake = cast(AsyncInMemorySecretStore, store.inner).sync  # set-up goes behind its back
    yield SecretBackend(store, fake.put_secret, fake.delete_secret)
    store.close()


@pytest.fixture
def vault_secrets(
    openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> Iterator[SecretBackend]:
    with VaultClient(openbao_server.addr, openbao_server.token, mount_point=vault_mount.name) as c:
        yield SecretBackend(c, vault_mount.put, vault_mount.delete)


@pytest.fixture
def vault_async_secrets(
    openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> Iterator[SecretBackend]:
    async def build() -> AsyncVaultClient:
        client = AsyncVaultClient(
            openbao_server.addr, openbao_server.token, mount_point=vault_mount.name
        )
        await client.open()
        return client

    store = SyncSecretStore(build)
    yield SecretBackend(store, vault_mount.put, vault_mount.delete)
    store.close()
