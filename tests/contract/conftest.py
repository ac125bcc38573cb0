"""The backends every contract suite runs against.

To add a backend, add ONE entry to ``DB_BACKENDS`` (its name and the fixture that yields it,
already reset for the test); every test in ``test_user_scoped_db.py`` then runs on it too.

The asyncio twins run the same tests through a sync facade (``async_facade.py``): each test is
written once and runs on sync and async, fake and real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol, cast

import attrs
import fakeredis
import pytest

from crm_infra.adapters import (
    AsyncPostgresClient,
    AsyncValkeyClient,
    AsyncVaultClient,
    ValkeyClient,
    VaultClient,
)
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.devservers.openbao import OpenBaoServer
from crm_infra.fakes import (
    AsyncInMemoryKeyValueStore,
    AsyncInMemorySecretStore,
    AsyncInMemoryUserScopedDB,
    InMemoryKeyValueStore,
    InMemorySecretStore,
    InMemoryUserScopedDB,
)
from crm_infra.ports import AdminDB, KeyValueStore, SecretStore, UserScopedDB
from crm_infra.secret_paths import EmailCredentials
from tests.contract.async_facade import (
    AsyncContractDB,
    SyncDB,
    SyncKeyValueStore,
    SyncSecretStore,
)
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
KV_BACKENDS: dict[str, str] = {
    "memory": "memory_kv",
    "valkey": "valkey_kv",
    "valkey-cluster": "valkey_cluster_kv",  # 3 primaries, 3 replicas
    "valkey-sentinel": "valkey_sentinel_kv",  # a primary, a replica, 3 Sentinels
    "memory-async": "memory_async_kv",
    "valkey-async": "valkey_async_kv",
    "valkey-cluster-async": "valkey_cluster_async_kv",
    "valkey-sentinel-async": "valkey_sentinel_async_kv",
}
# Marked ``real``: left out by --skip-real.
REAL_BACKENDS = frozenset(
    {"postgres", "pgbouncer", "postgres-async", "pgbouncer-async", "vault", "vault-async"}
    | {name for name in KV_BACKENDS if name.startswith("valkey")}
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


# --- key-value -----------------------------------------------------------------------------------


class KVStore(KeyValueStore, Protocol):
    """A key-value store under test: the port, closable, a context manager."""

    def close(self) -> None: ...
    def __enter__(self) -> KeyValueStore: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...


MakeKVStore = Callable[..., KVStore]


def _kv_stores(make_one: Callable[[str], KVStore]) -> Iterator[MakeKVStore]:
    """Yield a factory of stores (``make(key_prefix="")``); close every one made after."""
    made: list[KVStore] = []

    def make(key_prefix: str = "") -> KVStore:
        made.append(make_one(key_prefix))
        return made[-1]

    yield make
    for store in made:
        store.close()


def _async_kv(make_one: Callable[[str], AsyncValkeyClient]) -> Callable[[str], KVStore]:
    """Build each store on its facade's loop (its connections belong to that loop)."""

    def make(key_prefix: str) -> KVStore:
        async def build() -> AsyncValkeyClient:
            store = make_one(key_prefix)
            await store.open()
            return store

        return SyncKeyValueStore(build)

    return make


@pytest.fixture
def memory_kv() -> Iterator[MakeKVStore]:
    server = fakeredis.FakeServer()
    yield from _kv_stores(lambda prefix: InMemoryKeyValueStore(key_prefix=prefix, server=server))


@pytest.fixture
def memory_async_kv() -> Iterator[MakeKVStore]:
    server = fakeredis.FakeServer()
    yield from _kv_stores(
        _async_kv(lambda prefix: AsyncInMemoryKeyValueStore(key_prefix=prefix, server=server))
    )


def _valkey(url: str, *, twin: bool) -> Iterator[MakeKVStore]:
    if twin:
        yield from _kv_stores(_async_kv(lambda prefix: AsyncValkeyClient(url, key_prefix=prefix)))
    else:
        yield from _kv_stores(lambda prefix: ValkeyClient(url, key_prefix=prefix))


@pytest.fixture
def valkey_kv(valkey_url: str) -> Iterator[MakeKVStore]:
    yield from _valkey(valkey_url, twin=False)


@pytest.fixture
def valkey_async_kv(valkey_url: str) -> Iterator[MakeKVStore]:
    yield from _valkey(valkey_url, twin=True)


@pytest.fixture
def valkey_cluster_kv(valkey_cluster_url: str) -> Iterator[MakeKVStore]:
    yield from _valkey(valkey_cluster_url, twin=False)


@pytest.fixture
def valkey_cluster_async_kv(valkey_cluster_url: str) -> Iterator[MakeKVStore]:
    yield from _valkey(valkey_cluster_url, twin=True)


@pytest.fixture
def valkey_sentinel_kv(valkey_sentinel_url: str) -> Iterator[MakeKVStore]:
    yield from _valkey(valkey_sentinel_url, twin=False)


@pytest.fixture
def valkey_sentinel_async_kv(valkey_sentinel_url: str) -> Iterator[MakeKVStore]:
    yield from _valkey(valkey_sentinel_url, twin=True)
