"""Hostile input to the key-value and secret ports: it works literally or fails typed.

Every case either round-trips exactly or raises the port's typed error (also a ``ValueError``
for bad arguments) naming the key or path; and in both cases nothing else in the store changes.
Subclasses provide the ``kv`` fixture (a store with an empty namespace) or ``secret_backend``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pytest

from crm_infra.errors import InvalidSecretPathError, KeyValueStoreInputError, SecretNotFoundError
from crm_infra.ports import KeyValueStore, SecretStore
from tests.battery.payloads import AWKWARD_KEYS, INJECTIONS, MIB, UNICODE_PATHS

__all__ = ["KeyValueBadInput", "SecretBackend", "SecretBadInput"]

NEIGHBOURS = {"user:1": "one", "user:2": "two", "user:a": "a", "a": "plain", "ab": "plain2"}


def _assert_neighbours_intact(kv: KeyValueStore) -> None:
    for key, value in NEIGHBOURS.items():
        assert kv.get(key) == value, key
        assert kv.ttl(key) == -1, key


class KeyValueBadInput:
    """Awkward keys, injection payloads, NUL bytes, invalid unicode, 10 MiB values, huge TTLs."""

    @pytest.fixture
    def neighbours(self, kv: KeyValueStore) -> KeyValueStore:
        for key, value in NEIGHBOURS.items():
            kv.set(key, value)
        return kv

    @pytest.mark.parametrize("key", list(AWKWARD_KEYS.values()), ids=list(AWKWARD_KEYS))
    def test_an_awkward_key_addresses_exactly_one_entry(
        self, neighbours: KeyValueStore, key: str
    ) -> None:
        kv = neighbours
        kv.set(key, "v", expire_seconds=60)
        assert kv.get(key) == "v"
        assert kv.exists(key)
        assert 0 < kv.ttl(key) <= 60
        kv.set_json(key, {"k": key})
        assert kv.get_json(key) == {"k": key}
        assert kv.delete(key) is True
        assert kv.get(key) is None
        assert kv.hit(key, 60) == 1
        assert kv.delete(key) is True
        _assert_neighbours_intact(kv)

    @pytest.mark.parametrize("pattern", ["*", "user:*", "user:?", "user:[0-9]", "a*"])
    def test_glob_characters_are_never_patterns(
        self, neighbours: KeyValueStore, pattern: str
    ) -> None:
        kv = neighbours
        assert kv.get(pattern) is None
        assert kv.exists(pattern) is False
        assert kv.delete(pattern) is False
        assert kv.expire(pattern, 5) is False
        assert kv.ttl(pattern) == -2
        _assert_neighbours_intact(kv)

    @pytest.mark.parametrize("payload", list(INJECTIONS.values()), ids=list(INJECTIONS))
    def test_injection_payloads_are_stored_and_read_back_literally(
        self, neighbours: KeyValueStore, payload: str
    ) -> None:
        kv = neighbours
        kv.set("payload", payload)
        assert kv.get("payload") == payload
        kv.set_json("payload-json", {"v": payload, payload: [payload]})
        assert kv.get_json("payload-json") == {"v": payload, payload: [payload]}
        kv.set(payload, "as a key")
        assert kv.get(payload) == "as a key"
        _assert_neighbours_intact(kv)

    def test_nul_bytes_and_unicode_round_trip(self, kv: KeyValueStore) -> None:
        value = "a\x00b\x00\u2028\U0001f600\ufeffé"
        kv.set("k", value)
        assert kv.get("k") == value
        kv.set_json("j", [value, {"nested\x00": value}])
        assert kv.get_json("j") == [value, {"nested\x00": value}]

    @pytest.mark.parametrize(
        "store",
        [
            pytest.param(lambda kv: kv.set("k", "bad\ud800"), id="set value"),
            pytest.param(lambda kv: kv.set_json("k", {"v": "bad\udc80"}), id="set_json value"),
            pytest.param(lambda kv: kv.set_json("k", {"bad\ud800": 1}), id="set_json dict key"),
        ],
    )
    def test_a_lone_surrogate_value_is_refused_and_nothing_changes(
        self, neighbours: KeyValueStore, store: Callable[[KeyValueStore], object]
    ) -> None:
        kv = neighbours
        kv.set("k", "old", expire_seconds=60)
        with pytest.raises(KeyValueStoreInputError) as info:
            store(kv)
        assert isinstance(info.value, ValueError)
        assert "'k'" in str(info.value)
        assert kv.get("k") == "old"
        assert 0 < kv.ttl("k") <= 60
        _assert_neighbours_intact(kv)

    def test_a_lone_surrogate_key_is_refused_and_nothing_changes(
        self, neighbours: KeyValueStore
    ) -> None:
        kv = neighbours
        for call in (
            lambda: kv.set("user:\ud800", "v"),
            lambda: kv.incr("user:\ud800"),
            lambda: kv.hit("user:\ud800", 5),
        ):
            with pytest.raises(KeyValueStoreInputError, match="lone surrogate"):
                call()
        _assert_neighbours_intact(kv)

    def test_ten_mebibyte_values_round_trip(self, kv: KeyValueStore) -> None:
        big = ("0123456789abcdéf" * (10 * MIB // 17 + 1))[: 10 * MIB]
        kv.set("big", big, expire_seconds=60)
        assert kv.get("big") == big
        assert 0 < kv.ttl("big") <= 60
        kv.set_json("big-json", {"blob": big, "n": 1})
        assert kv.get_json("big-json") == {"blob": big, "n": 1}

    @pytest.mark.parametrize("seconds", [2**31, 2**62, 10**20], ids=["2^31", "2^62", "1e20"])
    def test_an_expiry_beyond_range_is_refused_and_nothing_changes(
        self, neighbours: KeyValueStore, seconds: int
    ) -> None:
        kv = neighbours
        kv.set("k", "old", expire_seconds=60)
        calls: list[Callable[[], object]] = [
            lambda: kv.set("k", "new", expire_seconds=seconds),
            lambda: kv.set_json("k", "new", expire_seconds=seconds),
            lambda: kv.expire("k", seconds),
            lambda: kv.hit("counter", seconds),
        ]
        for call in calls:
            with pytest.raises(KeyValueStoreInputError, match="positive int") as info:
                call()
            assert isinstance(info.value, ValueError)
        assert kv.get("k") == "old"
        assert 0 < kv.ttl("k") <= 60
        assert kv.exists("counter") is False  # no counter left behind without an expiry
        _assert_neighbours_intact(kv)


class SecretBackend(Protocol):
    """A secret store under test and a way to write into it behind its back."""

    store: SecretStore

    def put(self, path: str, data: dict[str, Any]) -> None:
        """Write the secret at ``path``."""
        ...


class SecretBadInput:
    """Unicode and invisible characters in paths; hostile and huge secret values."""

    @pytest.mark.parametrize("path", list(UNICODE_PATHS.values()), ids=list(UNICODE_PATHS))
    def test_a_unicode_or_invisible_path_is_refused_and_nothing_changes(
        self, secret_backend: SecretBackend, path: str
    ) -> None:
        store = secret_backend.store
        before = store.get_secret("crm/database")
        with pytest.raises(InvalidSecretPathError) as info:
            store.get_secret(path)
        assert isinstance(info.value, ValueError)
        assert not isinstance(info.value, SecretNotFoundError)
        assert store.get_secret("crm/database") == before

    def test_injection_payloads_in_secret_values_are_returned_literally(
        self, secret_backend: SecretBackend
    ) -> None:
        secret_backend.put("crm/hostile", dict(INJECTIONS))
        assert secret_backend.store.get_secret("crm/hostile") == INJECTIONS

    def test_nul_bytes_and_unicode_in_values_round_trip(
        self, secret_backend: SecretBackend
    ) -> None:
        data = {"password": "a\x00b\u2028c🔑", "ключ": "значение", "empty": ""}
        secret_backend.put("crm/unicode", data)
        assert secret_backend.store.get_secret("crm/unicode") == data

    def test_a_ten_mebibyte_secret_round_trips(self, secret_backend: SecretBackend) -> None:
        blob = ("-----BEGIN CERTIFICATE-----" * (10 * MIB // 27 + 1))[: 10 * MIB]
        secret_backend.put("crm/big", {"bundle": blob})
        assert secret_backend.store.get_secret("crm/big") == {"bundle": blob}
