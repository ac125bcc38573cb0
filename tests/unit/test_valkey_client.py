"""ValkeyClient's settings, reprs and error tree, and the fake's wiring; no server needed."""

from __future__ import annotations

import fakeredis
import pytest

import crm_infra.adapters
import crm_infra.fakes
from crm_infra.adapters import ValkeyClient, ValkeyError
from crm_infra.adapters.valkey import (
    ValkeyDataError,
    ValkeyInputError,
    ValkeyUnavailableError,
    redact_url,
)
from crm_infra.errors import (
    BackendUnavailableError,
    ConfigError,
    KeyValueStoreDataError,
    KeyValueStoreError,
    KeyValueStoreInputError,
    KeyValueStoreUnavailableError,
)
from crm_infra.fakes import InMemoryKeyValueStore

PASSWORD = "m4rker-pw-91c2"


def test_the_adapter_and_the_fake_are_exported() -> None:
    assert {"ValkeyClient", "ValkeyError"} <= set(crm_infra.adapters.__all__)
    assert "InMemoryKeyValueStore" in crm_infra.fakes.__all__


def test_the_fake_is_the_adapter_with_another_transport() -> None:
    assert issubclass(InMemoryKeyValueStore, ValkeyClient)
    overridden = {
        name for name in vars(InMemoryKeyValueStore) if not name.startswith("__")
    }
    assert overridden == set()  # no method of the adapter is replaced


@pytest.mark.parametrize(
    ("ours", "port_level"),
    [
        (ValkeyInputError, KeyValueStoreInputError),
        (ValkeyDataError, KeyValueStoreDataError),
        (ValkeyUnavailableError, KeyValueStoreUnavailableError),
    ],
)
def test_each_valkey_error_is_also_the_port_level_class(
    ours: type[ValkeyError], port_level: type[KeyValueStoreError]
) -> None:
    assert issubclass(ours, ValkeyError)
    assert issubclass(ours, port_level)


def test_input_errors_are_value_errors_and_outages_share_the_marker() -> None:
    assert issubclass(ValkeyInputError, ValueError)
    assert issubclass(ValkeyUnavailableError, BackendUnavailableError)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"redis://:{PASSWORD}@db:6379/0", "redis://:***@db:6379/0"),
        (f"redis://app:{PASSWORD}@db:6379/2", "redis://app:***@db:6379/2"),
        ("redis://app@db:6379", "redis://app@db:6379"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        (f"rediss://db:6380/0?password={PASSWORD}&db=1", "rediss://db:6380/0?password=***&db=1"),
        (f"unix:///run/valkey.sock?password={PASSWORD}", "unix:///run/valkey.sock?password=***"),
    ],
)
def test_redact_url_hides_passwords(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_the_repr_shows_the_redacted_url_and_prefix() -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:1/0"
    with ValkeyClient(url, key_prefix="crm:", check_connection=False) as kv:
        assert repr(kv) == "ValkeyClient(url='redis://:***@127.0.0.1:1/0', key_prefix='crm:')"


def test_the_fake_has_the_adapters_repr() -> None:
    with InMemoryKeyValueStore(key_prefix="t:") as kv:
        assert repr(kv) == "InMemoryKeyValueStore(client=FakeRedis, key_prefix='t:')"


def test_url_and_client_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="exactly one of connection_url and client"):
        ValkeyClient()
    with pytest.raises(ConfigError, match="exactly one of connection_url and client"):
        ValkeyClient("redis://localhost", client=fakeredis.FakeRedis(decode_responses=True))


def test_a_client_that_returns_bytes_is_refused() -> None:
    with pytest.raises(ConfigError, match="decode_responses=True"):
        ValkeyClient(client=fakeredis.FakeRedis())


def test_a_bad_url_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError, match="invalid connection URL") as info:
        ValkeyClient(f"http://:{PASSWORD}@db:6379/0")
    assert PASSWORD not in str(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize(
    "settings",
    [
        {"connect_timeout": 0},
        {"socket_timeout": -1},
        {"timeout": float("inf")},
        {"timeout": True},
        {"retries": -1},
        {"retries": 1.5},
        {"backoff": 0},
        {"connect_timeout": 3.0, "socket_timeout": 3.0, "timeout": 5.0},
    ],
)
def test_settings_that_cannot_work_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ValkeyClient("redis://127.0.0.1:1/0", check_connection=False, **settings)  # type: ignore[arg-type]


def test_the_defaults_fit_the_budget() -> None:
    with ValkeyClient("redis://127.0.0.1:1/0", check_connection=False) as kv:
        assert kv._policy.attempt_s <= kv._policy.budget <= 5


def test_a_key_prefix_that_is_not_a_str_is_refused() -> None:
    with pytest.raises(ConfigError, match="key_prefix"):
        InMemoryKeyValueStore(key_prefix=b"x:")  # type: ignore[arg-type]


def test_fakes_are_independent_unless_they_share_a_server() -> None:
    server = fakeredis.FakeServer()
    one, two = InMemoryKeyValueStore(server=server), InMemoryKeyValueStore(server=server)
    alone = InMemoryKeyValueStore()
    one.set("k", "v")
    assert two.get("k") == "v"
    assert alone.get("k") is None


def test_an_unreachable_fake_raises_the_adapters_unavailable_error() -> None:
    server = fakeredis.FakeServer()
    kv = InMemoryKeyValueStore(server=server)
    server.connected = False
    with pytest.raises(ValkeyUnavailableError, match="Valkey get of key 'k'"):
        kv.get("k")
    with pytest.raises(KeyValueStoreUnavailableError, match="hit of key 'k'"):
        kv.hit("k", 5)
    server.connected = True
    assert kv.hit("k", 5) == 1


def test_close_is_idempotent() -> None:
    kv = InMemoryKeyValueStore()
    kv.close()
    kv.close()
    with pytest.raises(ValkeyError, match="closed"):
        kv.health_check()
