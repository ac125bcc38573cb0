"""Each asyncio twin has its sync twin's shape: the same public methods, the same parameters,
awaited.

The contract suite runs the same tests on both twins through the methods it uses; this pins
the rest (a method added to one twin only, a parameter renamed or given another default in
one of them) without any I/O.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from crm_infra import ports
from crm_infra.adapters import (
    AsyncPostgresClient,
    AsyncValkeyClient,
    AsyncVaultClient,
    PostgresClient,
    ValkeyClient,
    VaultClient,
)
from crm_infra.adapters.postgres.transactions import (
    AdminTransaction,
    AsyncAdminTransaction,
    AsyncUserTransaction,
    UserTransaction,
)
from crm_infra.fakes import (
    AsyncInMemoryKeyValueStore,
    AsyncInMemorySecretStore,
    AsyncInMemoryUserScopedDB,
    InMemoryKeyValueStore,
    InMemorySecretStore,
    InMemoryUserScopedDB,
)

PORTS = (
    ports.SecretStore, ports.UserScopedDB, ports.AdminDB, ports.KeyValueStore, ports.Transaction
)
TWINS: list[tuple[type[Any], type[Any]]] = [
    *((port, getattr(ports, f"Async{port.__name__}")) for port in PORTS),
    (PostgresClient, AsyncPostgresClient),
    (UserTransaction, AsyncUserTransaction),
    (AdminTransaction, AsyncAdminTransaction),
    (VaultClient, AsyncVaultClient),
    (ValkeyClient, AsyncValkeyClient),
    (InMemoryUserScopedDB, AsyncInMemoryUserScopedDB),
    (InMemorySecretStore, AsyncInMemorySecretStore),
    (InMemoryKeyValueStore, AsyncInMemoryKeyValueStore),
]

# What only one twin has, and why. Anything else on one side only fails the test.
ASYNC_ONLY: dict[str, str] = {
    "open": "the async constructors do no I/O; open() (or `async with`) connects",
    "sync": "an async fake's sync face, for synchronous set-up code",
    "wrapping": "the async face of an existing sync fake",
    "sync_client": "the VaultClient the async one runs in its threads, for the lease keeper",
}
SYNC_ONLY: dict[tuple[type[Any], str], str] = {
    # Leases are issued and renewed by the credentials keeper, a thread of its own: it takes
    # the async client's sync_client, never the event loop.
    (VaultClient, "issue_lease"): "leases",
    (VaultClient, "renew_lease"): "leases",
    (VaultClient, "revoke_lease"): "leases",
    (VaultClient, "token_lifetime"): "leases",
}
# Calls that do no I/O stay plain methods on the async twin: nothing to wait for.
NO_IO: frozenset[tuple[type[Any], str]] = frozenset(
    {
        (PostgresClient, "pool_stats"),
        (ValkeyClient, "pool_stats"),
        (InMemoryKeyValueStore, "pool_stats"),
        (VaultClient, "invalidate"),
        (UserTransaction, "close"),  # a handle's close only marks it used up
        (AdminTransaction, "close"),
    }
)
# Constructor parameters only the async twin has, and why.
CONSTRUCTOR_EXTRAS: dict[type[Any], set[str]] = {
    AsyncInMemoryUserScopedDB: {"db"},  # wraps an existing sync fake, as `wrapping` does
}

IDS = [f"{sync.__name__}-{twin.__name__}" for sync, twin in TWINS]


def public(cls: type[Any]) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def methods(cls: type[Any]) -> set[str]:
    """The public names that are methods (not properties, constants or classes)."""
    return {name for name in public(cls) if inspect.isfunction(inspect.getattr_static(cls, name))}


def parameters(cls: type[Any], name: str) -> list[str]:
    """The parameters of ``cls.name`` as written (name, kind, annotation, default), no self."""
    return [str(p) for p in list(inspect.signature(getattr(cls, name)).parameters.values())[1:]]


def opens_a_block(function: Any, *, twin: bool) -> bool:
    """Whether ``function`` returns a (sync, or with ``twin`` async) context manager."""
    inner = inspect.unwrap(function)
    if twin and inspect.isasyncgenfunction(inner):  # an @asynccontextmanager
        return True
    if not twin and inspect.isgeneratorfunction(inner):  # a @contextmanager
        return True
    manager = "AbstractAsyncContextManager[" if twin else "AbstractContextManager["
    return str(inner.__annotations__.get("return", "")).startswith(manager)


@pytest.mark.parametrize(("sync", "twin"), TWINS, ids=IDS)
def test_the_twins_have_the_same_public_names(sync: type[Any], twin: type[Any]) -> None:
    only_sync = {name for name in public(sync) - public(twin) if (sync, name) not in SYNC_ONLY}
    only_twin = public(twin) - public(sync) - set(ASYNC_ONLY)
    assert (only_sync, only_twin) == (set(), set())


@pytest.mark.parametrize(("sync", "twin"), TWINS, ids=IDS)
def test_the_twins_methods_take_the_same_parameters(sync: type[Any], twin: type[Any]) -> None:
    shared = methods(sync) & methods(twin)
    assert shared
    different = {
        name: (parameters(sync, name), parameters(twin, name))
        for name in shared
        if parameters(sync, name) != parameters(twin, name)
    }
    assert different == {}


@pytest.mark.parametrize(("sync", "twin"), TWINS, ids=IDS)
def test_the_async_twins_methods_are_awaited(sync: type[Any], twin: type[Any]) -> None:
    """Each shared method is a coroutine function on the async twin, except the blocks
    (``transaction()``...: an async context manager where the sync one gives a sync one) and
    the calls that do no I/O."""
    wrong = []
    for name in sorted(methods(sync) & methods(twin)):
        mine, theirs = getattr(sync, name), getattr(twin, name)
        if opens_a_block(mine, twin=False):
            if not opens_a_block(theirs, twin=True):
                wrong.append(f"{name}: not an async context manager")
        elif (sync, name) in NO_IO:
            if inspect.iscoroutinefunction(inspect.unwrap(theirs)):
                wrong.append(f"{name}: awaited, though it does no I/O")
        elif not inspect.iscoroutinefunction(inspect.unwrap(theirs)):
            wrong.append(f"{name}: not a coroutine function")
    assert not wrong, "; ".join(wrong)


@pytest.mark.parametrize(("sync", "twin"), TWINS, ids=IDS)
def test_a_sync_context_manager_has_an_async_one_for_a_twin(
    sync: type[Any], twin: type[Any]
) -> None:
    assert hasattr(twin, "__aenter__") == hasattr(sync, "__enter__")
    assert hasattr(twin, "__aexit__") == hasattr(sync, "__exit__")


@pytest.mark.parametrize(
    ("sync", "twin"),
    [pair for pair in TWINS if pair[0] not in {*PORTS, UserTransaction, AdminTransaction}],
)
def test_the_twins_take_the_same_constructor_arguments(sync: type[Any], twin: type[Any]) -> None:
    """The adapters and fakes (the transaction handles are made by their clients only)."""
    extras = CONSTRUCTOR_EXTRAS.get(twin, set())
    theirs = [str(p) for p in inspect.signature(twin).parameters.values() if p.name not in extras]
    assert theirs == [str(p) for p in inspect.signature(sync).parameters.values()]


# --- the checks can fail ----------------------------------------------------------------------


class _Sync:
    def get(self, key: str) -> str:
        return key

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield


class _DriftedTwin:
    def get(self, key: str, default: str = "") -> str:  # a parameter the sync twin lacks
        return key or default

    @contextmanager
    def transaction(self) -> Iterator[None]:  # a sync block on the async twin
        yield

    def extra(self) -> None:  # a method the sync twin lacks
        """Nothing."""


def test_the_checks_see_a_drifted_twin() -> None:
    with pytest.raises(AssertionError):
        test_the_twins_have_the_same_public_names(_Sync, _DriftedTwin)
    with pytest.raises(AssertionError):
        test_the_twins_methods_take_the_same_parameters(_Sync, _DriftedTwin)
    with pytest.raises(AssertionError, match="not a coroutine function") as caught:
        test_the_async_twins_methods_are_awaited(_Sync, _DriftedTwin)
    assert "transaction: not an async context manager" in str(caught.value)
