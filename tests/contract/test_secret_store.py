"""The SecretStore contract: every test runs on each backend of ``conftest.SECRET_BACKENDS``:
the in-memory fake and a real OpenBao, through the sync clients and the asyncio ones.

A difference in behaviour between the two is a bug in the fake (or in the adapter), which is
what this suite exists to catch.
"""

from __future__ import annotations

import uuid
from typing import cast

import pytest

from crm_infra import (
    AsyncSecretStore,
    InvalidSecretError,
    InvalidSecretPathError,
    SecretNotFoundError,
    SecretStore,
    SecretStoreError,
)
from crm_infra import secret_paths as sp
from tests.contract.async_facade import SyncSecretStore
from tests.contract.conftest import SECRET_BACKENDS, backend_params
from tests.contract.conftest import SecretBackend as Backend
from tests.fixtures.openbao import TEST_SECRETS
from tests.fixtures.secret_paths import BAD_PATHS


@pytest.fixture(params=backend_params(list(SECRET_BACKENDS)))
def backend(request: pytest.FixtureRequest) -> Backend:
    """A secret store holding the layout of TEST_SECRETS, fake or real, sync or async."""
    return cast(Backend, request.getfixturevalue(SECRET_BACKENDS[request.param]))


def unique_path() -> str:
    return f"app/{uuid.uuid4().hex}"


# --- reading -----------------------------------------------------------------------------------


def test_reads_every_field_of_a_secret(backend: Backend) -> None:
    assert dict(backend.store.get_secret("crm/email")) == TEST_SECRETS["crm/email"]


def test_reads_the_latest_version_after_an_update(backend: Backend) -> None:
    path = unique_path()
    backend.put(path, {"v": "1"})
    backend.put(path, {"v": "2", "extra": "x"})
    assert dict(backend.store.get_secret(path)) == {"v": "2", "extra": "x"}


def test_json_value_types_round_trip(backend: Backend) -> None:
    path = unique_path()
    data = {"s": "x", "i": 3, "f": 1.5, "b": True, "n": None, "l": [1, "a"], "d": {"k": "v"}}
    backend.put(path, data)
    assert dict(backend.store.get_secret(path)) == data


def test_unicode_values_round_trip(backend: Backend) -> None:
    path = unique_path()
    data = {"greeting": "héllo wörld ✓ 日本語 🔑", "combining": "e\u0301", "rtl": "שלום"}
    backend.put(path, data)
    assert dict(backend.store.get_secret(path)) == data


def test_a_path_with_allowed_punctuation_is_read(backend: Backend) -> None:
    path = f"app/{uuid.uuid4().hex}/key-v1.2_x@y+z=w,u"
    backend.put(path, {"k": "v"})
    assert dict(backend.store.get_secret(path)) == {"k": "v"}


def test_a_secret_without_fields_is_invalid_not_empty(backend: Backend) -> None:
    path = unique_path()
    backend.put(path, {})
    with pytest.raises(InvalidSecretError, match="no fields"):
        backend.store.get_secret(path)


# --- copies ------------------------------------------------------------------------------------


def test_mutating_a_result_does_not_change_the_store(backend: Backend) -> None:
    first = backend.store.get_secret("crm/email")
    assert isinstance(first, dict)
    first["api_key"] = "changed"
    first["new"] = "added"
    assert dict(backend.store.get_secret("crm/email")) == TEST_SECRETS["crm/email"]


def test_mutating_a_nested_value_does_not_change_the_store(backend: Backend) -> None:
    path = unique_path()
    backend.put(path, {"hosts": ["a", "b"], "opts": {"tls": True}})
    first = backend.store.get_secret(path)
    first["hosts"].append("c")
    first["opts"]["tls"] = False
    assert dict(backend.store.get_secret(path)) == {"hosts": ["a", "b"], "opts": {"tls": True}}


def test_each_read_returns_a_distinct_object(backend: Backend) -> None:
    assert backend.store.get_secret("crm/email") is not backend.store.get_secret("crm/email")


# --- missing and deleted -----------------------------------------------------------------------


def test_a_missing_secret_raises_not_found_naming_the_path(backend: Backend) -> None:
    path = unique_path()
    with pytest.raises(SecretNotFoundError, match="not found") as info:
        backend.store.get_secret(path)
    assert path in str(info.value)


def test_not_found_is_a_lookup_error_and_a_secret_store_error(backend: Backend) -> None:
    with pytest.raises(LookupError):
        backend.store.get_secret(unique_path())
    with pytest.raises(SecretStoreError):
        backend.store.get_secret(unique_path())


def test_a_deleted_secret_raises_not_found_saying_deleted(backend: Backend) -> None:
    path = unique_path()
    backend.put(path, {"k": "v"})
    backend.delete(path)
    with pytest.raises(SecretNotFoundError, match="deleted") as info:
        backend.store.get_secret(path)
    assert path in str(info.value)


def test_deleting_the_latest_version_does_not_fall_back_to_an_older_one(
    backend: Backend,
) -> None:
    path = unique_path()
    backend.put(path, {"v": "old"})
    backend.put(path, {"v": "new"})
    backend.delete(path)
    with pytest.raises(SecretNotFoundError, match="deleted"):
        backend.store.get_secret(path)


def test_writing_after_a_delete_makes_the_secret_readable_again(backend: Backend) -> None:
    path = unique_path()
    backend.put(path, {"v": "1"})
    backend.delete(path)
    backend.put(path, {"v": "2"})
    assert dict(backend.store.get_secret(path)) == {"v": "2"}


def test_not_found_messages_never_show_a_value(backend: Backend) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    path = unique_path()
    backend.put(path, {"password": marker})
    backend.delete(path)
    with pytest.raises(SecretNotFoundError) as info:
        backend.store.get_secret(path)
    assert marker not in str(info.value)
    assert marker not in repr(info.value)


# --- invalid paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(BAD_PATHS.values()), ids=list(BAD_PATHS))
def test_an_invalid_path_raises_invalid_path_and_value_error(backend: Backend, path: str) -> None:
    with pytest.raises(InvalidSecretPathError) as info:
        backend.store.get_secret(path)
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, SecretNotFoundError)


def test_a_non_string_path_raises_invalid_path(backend: Backend) -> None:
    with pytest.raises(InvalidSecretPathError, match="must be a str"):
        backend.store.get_secret(42)  # type: ignore[arg-type]  # the wrong type on purpose


def test_the_api_prefix_error_suggests_the_relative_path(backend: Backend) -> None:
    with pytest.raises(InvalidSecretPathError, match="'crm/database'"):
        backend.store.get_secret("secret/data/crm/database")


# --- typed accessors ---------------------------------------------------------------------------


def test_accessors_return_the_layout_values(backend: Backend) -> None:
    store = backend.store
    assert sp.database_url(store) == TEST_SECRETS["crm/database"]["url"]
    assert sp.admin_database_url(store) == TEST_SECRETS["crm/database"]["admin_url"]
    assert sp.valkey_url(store) == TEST_SECRETS["crm/valkey"]["url"]
    creds = sp.email_credentials(store)
    assert creds.api_key == TEST_SECRETS["crm/email"]["api_key"]
    assert creds.from_address == TEST_SECRETS["crm/email"]["from_address"]


def test_the_get_methods_delegate_to_the_layout_accessors(backend: Backend) -> None:
    store = backend.store
    assert store.get_database_url() == sp.database_url(store)
    assert store.get_admin_database_url() == sp.admin_database_url(store)
    assert store.get_valkey_url() == sp.valkey_url(store)
    assert store.get_email_credentials() == sp.email_credentials(store)


def test_email_credentials_repr_hides_the_api_key(backend: Backend) -> None:
    creds = backend.store.get_email_credentials()
    assert creds.api_key not in repr(creds)
    assert creds.from_address in repr(creds)


@pytest.mark.parametrize(
    "url", ["postgres://u@h/db", "postgresql://u:p@h:5432/db", "POSTGRESQL://u@h/db"]
)
def test_database_url_accepts_both_postgres_schemes(backend: Backend, url: str) -> None:
    backend.put("crm/database", {"url": url, "admin_url": url})
    assert backend.store.get_database_url() == url
    assert backend.store.get_admin_database_url() == url


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:6379/0",
        "rediss://h:6380/1",
        "unix:///tmp/v.sock",
        "redis+sentinel://:pw@h1:26379,h2:26379/crm",
        "redis+cluster://:pw@h1:6379,h2:6379",
    ],
)
def test_valkey_url_accepts_every_topology_scheme(backend: Backend, url: str) -> None:
    backend.put("crm/valkey", {"url": url})
    assert backend.store.get_valkey_url() == url


def test_a_missing_field_names_path_and_field(backend: Backend) -> None:
    backend.put("crm/database", {"url": "postgresql://u@h/db"})
    with pytest.raises(InvalidSecretError) as info:
        backend.store.get_admin_database_url()
    assert "'crm/database'" in str(info.value)
    assert "'admin_url'" in str(info.value)


@pytest.mark.parametrize(
    ("accessor", "path", "field", "data"),
    [
        ("get_database_url", "crm/database", "url", {"url": "mysql://u:{m}@h/db"}),
        ("get_admin_database_url", "crm/database", "admin_url", {"admin_url": "{m}"}),
        ("get_valkey_url", "crm/valkey", "url", {"url": "valkey://u:{m}@h:6379"}),
        ("get_valkey_url", "crm/valkey", "url", {"url": "http://{m}@h"}),
    ],
    ids=["mysql", "no-scheme", "valkey-scheme", "http"],
)
def test_a_wrong_scheme_names_path_and_field_but_not_the_value(
    backend: Backend, accessor: str, path: str, field: str, data: dict[str, str]
) -> None:
    marker = f"marker{uuid.uuid4().hex}"
    backend.put(path, {k: v.format(m=marker) for k, v in data.items()})
    with pytest.raises(InvalidSecretError) as info:
        getattr(backend.store, accessor)()
    message = str(info.value)
    assert repr(path) in message
    assert repr(field) in message
    assert "://" in message  # it says which schemes are expected
    assert marker not in message
    assert marker not in repr(info.value)


@pytest.mark.parametrize(
    ("value", "why"), [("", "empty"), ("   ", "empty"), (5432, "must be a string")]
)
def test_an_empty_or_non_string_field_is_invalid(backend: Backend, value: object, why: str) -> None:
    backend.put("crm/valkey", {"url": value})
    with pytest.raises(InvalidSecretError, match=why):
        backend.store.get_valkey_url()


def test_email_credentials_need_both_fields(backend: Backend) -> None:
    backend.put("crm/email", {"from_address": "noreply@example.com"})
    with pytest.raises(InvalidSecretError, match="'api_key'"):
        backend.store.get_email_credentials()


def test_email_from_address_must_be_an_address(backend: Backend) -> None:
    backend.put("crm/email", {"api_key": "k", "from_address": "nobody"})
    with pytest.raises(InvalidSecretError, match="'from_address'"):
        backend.store.get_email_credentials()


def test_an_accessor_on_a_deleted_secret_raises_not_found(backend: Backend) -> None:
    backend.delete("crm/valkey")
    with pytest.raises(SecretNotFoundError, match="deleted"):
        backend.store.get_valkey_url()


# --- health and the port -----------------------------------------------------------------------


def test_health_check_returns_true(backend: Backend) -> None:
    assert backend.store.health_check() is True


def test_the_store_satisfies_the_port(backend: Backend) -> None:
    if isinstance(backend.store, SyncSecretStore):
        assert isinstance(backend.store.inner, AsyncSecretStore)
    else:
        store: SecretStore = backend.store
        assert isinstance(store, SecretStore)


def test_repr_never_shows_a_value(backend: Backend) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    backend.put(unique_path(), {"password": marker})
    assert marker not in repr(backend.store)
