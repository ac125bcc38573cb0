"""Hostile input to the key-value and secret ports: it works literally or fails typed.

Every case either round-trips exactly or raises the port's typed error (also a ``ValueError``
for bad arguments) naming the key or path; and in both cases nothing else in the store changes.
Subclasses provide the ``kv`` fixture (a store with an empty namespace) or ``secret_backend``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

import pytest

from crm_infra.errors import (
    DatabaseError,
    DatabaseInputError,
    InvalidSecretPathError,
    InvalidUserIdError,
    KeyValueStoreInputError,
    SecretNotFoundError,
)
from crm_infra.ports import KeyValueStore, SecretStore
from tests.battery.payloads import AWKWARD_KEYS, INJECTIONS, MIB, UNICODE_PATHS

__all__ = ["Database", "DatabaseBadInput", "KeyValueBadInput", "SecretBackend", "SecretBadInput"]

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


class Database(Protocol):
    """What the database cases use: the user-scoped port plus the admin path."""

    def execute(self, query: str, params: Any = (), user_id: Any = None) -> list[Any]: ...

    def execute_admin(self, query: str, params: Any = ()) -> list[Any]: ...

    def transaction(self, user_id: Any = None) -> Any: ...


def _new_user(db: Database) -> Any:
    rows = db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid.uuid4()}@example.com",)
    )
    return rows[0]["id"]


def _names(db: Database, user: Any) -> list[str]:
    return [row["name"] for row in db.execute("SELECT name FROM contacts ORDER BY name", (), user)]


class DatabaseBadInput:
    """Injection payloads, hostile user ids, NUL bytes, invalid unicode and 10 MiB values."""

    @pytest.fixture
    def two_users(self, db: Database) -> tuple[Any, Any]:
        alice, bob = _new_user(db), _new_user(db)
        db.execute("INSERT INTO contacts (name) VALUES ('bob-1')", (), bob)
        return alice, bob

    @pytest.mark.parametrize("payload", list(INJECTIONS.values()), ids=list(INJECTIONS))
    def test_injection_payloads_are_stored_and_read_back_literally(
        self, db: Database, two_users: tuple[Any, Any], payload: str
    ) -> None:
        alice, bob = two_users
        db.execute(
            "INSERT INTO contacts (name, email) VALUES (%s, %s)", (payload, payload), alice
        )
        rows = db.execute(
            "SELECT name, email FROM contacts WHERE name = %s", (payload,), alice
        )
        assert rows == [{"name": payload, "email": payload}]
        assert _names(db, bob) == ["bob-1"]  # nothing else changed
        assert db.execute_admin("SELECT count(*) AS n FROM contacts")[0]["n"] == 2

    @pytest.mark.parametrize(
        "user_id",
        ["' OR '1'='1", "", " ", "not-a-uuid", "00000000-0000-0000-0000-00000000000g",
         "1; DROP TABLE contacts", 42, b"\x00" * 16, 1.5],
        ids=["quote-or", "empty", "space", "word", "bad-hex", "stacked", "int", "bytes", "float"],
    )
    def test_a_user_id_that_is_not_a_uuid_is_refused_and_nothing_changes(
        self, db: Database, two_users: tuple[Any, Any], user_id: Any
    ) -> None:
        _alice, bob = two_users
        for call in (
            lambda: db.execute("INSERT INTO contacts (name) VALUES ('x')", (), user_id),
            lambda: db.execute("SELECT name FROM contacts", (), user_id),
            lambda: db.transaction(user_id).__enter__(),
        ):
            with pytest.raises(InvalidUserIdError) as info:
                call()
            assert isinstance(info.value, ValueError)
        assert _names(db, bob) == ["bob-1"]
        assert db.execute_admin("SELECT count(*) AS n FROM contacts")[0]["n"] == 1

    @pytest.mark.parametrize(
        "value", ["a\x00b", "\x00"], ids=["inner NUL", "only NUL"]
    )
    def test_a_nul_byte_in_text_is_a_typed_error_and_nothing_is_stored(
        self, db: Database, two_users: tuple[Any, Any], value: str
    ) -> None:
        alice, _bob = two_users
        with pytest.raises(DatabaseInputError) as info:
            db.execute("INSERT INTO contacts (name) VALUES (%s)", (value,), alice)
        assert isinstance(info.value, ValueError)
        assert "INSERT INTO contacts" in str(info.value)
        assert _names(db, alice) == []

    def test_a_lone_surrogate_is_a_typed_error_and_nothing_is_stored(
        self, db: Database, two_users: tuple[Any, Any]
    ) -> None:
        alice, _bob = two_users
        with pytest.raises(DatabaseInputError) as info:
            db.execute("INSERT INTO contacts (name) VALUES (%s)", ("bad\ud800",), alice)
        assert "INSERT INTO contacts" in str(info.value)
        assert "bad" not in str(info.value).replace("INSERT", "")
        assert _names(db, alice) == []

    @pytest.mark.parametrize("value", ["bad\udc80", "bad\x00"], ids=["surrogate", "NUL"])
    def test_a_refused_parameter_aborts_the_transaction_as_any_failed_statement_does(
        self, db: Database, two_users: tuple[Any, Any], value: str
    ) -> None:
        alice, _bob = two_users
        # The commit refuses: the block swallowed an error that aborted the transaction.
        with pytest.raises(DatabaseError), db.transaction(alice) as tx:  # noqa: PT012 - the block is the case
            tx.execute("INSERT INTO contacts (name) VALUES ('before')")
            with pytest.raises(DatabaseInputError):
                tx.execute("INSERT INTO contacts (name) VALUES (%s)", (value,))
            tx.execute("INSERT INTO contacts (name) VALUES ('after')")
        assert _names(db, alice) == []  # nothing of the aborted transaction was committed

    @pytest.mark.parametrize("value", ["bad\udc80", "bad\x00"], ids=["surrogate", "NUL"])
    def test_a_refused_parameter_in_a_nested_block_rolls_back_only_that_block(
        self, db: Database, two_users: tuple[Any, Any], value: str
    ) -> None:
        alice, _bob = two_users
        with db.transaction(alice) as tx:
            tx.execute("INSERT INTO contacts (name) VALUES ('before')")
            with pytest.raises(DatabaseInputError), db.transaction(alice) as inner:  # noqa: PT012 - the block is the case
                inner.execute("INSERT INTO contacts (name) VALUES ('inner')")
                inner.execute("INSERT INTO contacts (name) VALUES (%s)", (value,))
            tx.execute("INSERT INTO contacts (name) VALUES ('after')")
        assert _names(db, alice) == ["after", "before"]

    def test_unicode_edge_cases_round_trip_exactly(
        self, db: Database, two_users: tuple[Any, Any]
    ) -> None:
        alice, _bob = two_users
        values = ["🔑🏳️‍🌈", "\u202eevil", "e\u0301", "zero\u200bwidth", "line\u2028sep",
                  "ключ", "\ufeffbom", "tab\tnew\nline", "'\"\\"]
        for value in values:
            db.execute("INSERT INTO contacts (name) VALUES (%s)", (value,), alice)
        assert sorted(_names(db, alice)) == sorted(values)

    def test_a_ten_mebibyte_value_round_trips(
        self, db: Database, two_users: tuple[Any, Any]
    ) -> None:
        alice, _bob = two_users
        big = ("0123456789abcdéf" * (10 * MIB // 17 + 1))[: 10 * MIB]
        rows = db.execute(
            "INSERT INTO contacts (name) VALUES (%s) RETURNING name", (big,), alice
        )
        assert rows[0]["name"] == big
        assert _names(db, alice) == [big]
