"""The asyncio in-memory secret store: the sync store's answers and errors, awaited."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from crm_infra import (
    AsyncSecretStore,
    InvalidSecretError,
    InvalidSecretPathError,
    SecretNotFoundError,
)
from crm_infra import secret_paths as sp
from crm_infra.fakes import AsyncInMemorySecretStore, InMemorySecretStore
from crm_infra.secret_paths import AsyncSecretLayoutMethods
from tests.fixtures.openbao import TEST_SECRETS

pytestmark = pytest.mark.asyncio


async def test_it_reads_what_it_was_given_and_the_layout_values() -> None:
    async with AsyncInMemorySecretStore(TEST_SECRETS) as store:
        assert await store.get_secret("crm/email") == TEST_SECRETS["crm/email"]
        assert await store.get_database_url() == TEST_SECRETS["crm/database"]["url"]
        assert await store.get_admin_database_url() == TEST_SECRETS["crm/database"]["admin_url"]
        assert await store.get_valkey_url() == TEST_SECRETS["crm/valkey"]["url"]
        credentials = await store.get_email_credentials()
        assert credentials == sp.EmailCredentials(
            from_address=TEST_SECRETS["crm/email"]["from_address"],
            api_key=TEST_SECRETS["crm/email"]["api_key"],
        )
        assert await store.health_check() is True


async def test_put_and_delete_are_awaited_and_a_deleted_secret_says_so() -> None:
    store = AsyncInMemorySecretStore()
    await store.put_secret("crm/valkey", {"url": "redis://h:6379/0"})
    assert await store.get_valkey_url() == "redis://h:6379/0"
    await store.delete_secret("crm/valkey")
    with pytest.raises(SecretNotFoundError, match="deleted"):
        await store.get_secret("crm/valkey")
    with pytest.raises(SecretNotFoundError, match="deleted"):
        await store.get_valkey_url()
    await store.put_secret("crm/valkey", {"url": "redis://h:6379/1"})
    assert await store.get_valkey_url() == "redis://h:6379/1"


async def test_the_sync_store_underneath_shares_the_secrets_both_ways() -> None:
    store = AsyncInMemorySecretStore({"app/a": {"v": "1"}})
    store.sync.put_secret("app/b", {"v": "2"})
    assert await store.get_secret("app/b") == {"v": "2"}
    await store.put_secret("app/c", {"v": "3"})
    assert store.sync.get_secret("app/c") == {"v": "3"}


async def test_wrapping_gives_the_face_of_an_existing_store() -> None:
    sync = InMemorySecretStore({"app/a": {"v": "1"}})
    store = AsyncInMemorySecretStore.wrapping(sync)
    assert store.sync is sync
    sync.delete_secret("app/a")
    with pytest.raises(SecretNotFoundError, match="deleted"):
        await store.get_secret("app/a")


async def test_it_takes_the_sync_stores_arguments() -> None:
    assert inspect.signature(AsyncInMemorySecretStore) == inspect.signature(InMemorySecretStore)
    store = AsyncInMemorySecretStore(mount_point="kv")
    with pytest.raises(InvalidSecretPathError, match="'crm/x'"):
        await store.get_secret("kv/data/crm/x")


async def test_results_are_copies() -> None:
    store = AsyncInMemorySecretStore({"app/a": {"hosts": ["a"], "opts": {"tls": True}}})
    first = await store.get_secret("app/a")
    first["hosts"].append("b")
    first["opts"]["tls"] = False
    assert await store.get_secret("app/a") == {"hosts": ["a"], "opts": {"tls": True}}


async def test_set_up_errors_are_the_sync_stores() -> None:
    store = AsyncInMemorySecretStore()
    with pytest.raises(InvalidSecretError, match="JSON"):
        await store.put_secret("crm/x", {"k": object()})
    with pytest.raises(SecretNotFoundError, match="nothing to delete"):
        await store.delete_secret("crm/x")
    with pytest.raises(InvalidSecretPathError):
        await store.put_secret("../x", {"k": "v"})
    with pytest.raises(InvalidSecretPathError):
        AsyncInMemorySecretStore({"/crm/x": {"k": "v"}})


# The same call on both stores must end the same way: the same value, or the same error class
# and message. Each entry: an id, the method and its arguments.
_CALLS: list[tuple[str, str, tuple[object, ...]]] = [
    ("read", "get_secret", ("crm/email",)),
    ("missing", "get_secret", ("app/none",)),
    ("bad-path", "get_secret", ("a//b",)),
    ("not-a-str", "get_secret", (7,)),
    ("api-prefix", "get_secret", ("secret/data/x/y",)),
    ("no-fields", "get_secret", ("app/empty",)),
    ("database", "get_database_url", ()),
    ("admin", "get_admin_database_url", ()),
    ("valkey", "get_valkey_url", ()),
    ("email", "get_email_credentials", ()),
    ("health", "health_check", ()),
]
_ODD_SECRETS: dict[str, dict[str, Any]] = {
    "crm/database": {"url": "mysql://u:pw@h/db", "admin_url": ""},
    "crm/valkey": {"url": "valkey://h:6379"},
    "crm/email": {"api_key": "k", "from_address": "nobody"},
    "app/empty": {},
}


async def _outcome(call: Callable[[], object]) -> tuple[str, object]:
    try:
        result = call()
        return ("value", await result if inspect.isawaitable(result) else result)
    except Exception as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("secrets", [TEST_SECRETS, _ODD_SECRETS], ids=["layout", "odd"])
@pytest.mark.parametrize(("method", "args"), [c[1:] for c in _CALLS], ids=[c[0] for c in _CALLS])
async def test_every_call_ends_as_on_the_sync_store(
    secrets: dict[str, dict[str, Any]], method: str, args: tuple[object, ...]
) -> None:
    sync, face = InMemorySecretStore(secrets), AsyncInMemorySecretStore(secrets)
    expected = await _outcome(lambda: getattr(sync, method)(*args))
    assert expected[0] != "TypeError"  # the call itself is right
    assert await _outcome(lambda: getattr(face, method)(*args)) == expected


async def test_repr_lists_paths_but_no_values() -> None:
    store = AsyncInMemorySecretStore({"crm/email": {"api_key": "marker-1", "from_address": "a@b"}})
    assert repr(store) == "AsyncInMemorySecretStore(paths=['crm/email'])"


async def test_it_satisfies_the_async_port() -> None:
    store: AsyncSecretStore = AsyncInMemorySecretStore()
    assert isinstance(store, AsyncSecretStore)
    await store.health_check()


class _Invalid(InvalidSecretError):
    """A store's own class for a bad field."""


class _Store(AsyncSecretLayoutMethods):
    invalid_secret_error = _Invalid

    async def get_secret(self, path: str) -> dict[str, str]:
        return {"url": "mysql://x", "admin_url": "", "api_key": "k", "from_address": "nobody"}

    async def health_check(self) -> bool:
        return True


@pytest.mark.parametrize(
    "method",
    ["get_database_url", "get_admin_database_url", "get_valkey_url", "get_email_credentials"],
)
async def test_the_async_layout_methods_raise_the_stores_own_class(method: str) -> None:
    with pytest.raises(_Invalid):
        await getattr(_Store(), method)()
