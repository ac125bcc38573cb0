"""The KeyValueStore contract: every test runs on each backend of ``conftest.KV_BACKENDS``: the
in-memory fake and a real Valkey (one server, a cluster, and a Sentinel-managed primary),
through the sync clients and the asyncio ones.

The fake passing this suite is what lets unit tests trust it. Expiry tests wait for real (a
second or so): both backends expire keys in real time.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import pytest

from crm_infra.errors import (
    KeyValueStoreDataError,
    KeyValueStoreError,
    KeyValueStoreInputError,
)
from crm_infra.ports import AsyncKeyValueStore, KeyValueStore
from tests.contract.async_facade import SyncKeyValueStore
from tests.contract.conftest import KV_BACKENDS, backend_params
from tests.contract.conftest import KVStore as Store
from tests.contract.conftest import MakeKVStore as MakeStore

MARKER = "m4rker-s3cret-value"
BAD_SECONDS = [0, -1, -3600, True, False, 1.5, "10"]


@pytest.fixture(params=backend_params(list(KV_BACKENDS)))
def make_store(request: pytest.FixtureRequest) -> MakeStore:
    """Return a factory of stores that share one backend (one fake server, or one Valkey)."""
    return cast(MakeStore, request.getfixturevalue(KV_BACKENDS[request.param]))


@pytest.fixture
def kv(make_store: MakeStore) -> Store:
    """Return a store with a key prefix, as applications use it."""
    return make_store(key_prefix="crm-test:")


def test_both_backends_are_key_value_stores(kv: Store) -> None:
    if isinstance(kv, SyncKeyValueStore):
        assert isinstance(kv.inner, AsyncKeyValueStore)
    else:
        assert isinstance(kv, KeyValueStore)


# --- get / set / delete / exists -----------------------------------------------------------


def test_set_then_get_returns_the_value(kv: Store) -> None:
    kv.set("test_key", "test_value")
    assert kv.get("test_key") == "test_value"


def test_get_of_a_missing_key_returns_none(kv: Store) -> None:
    assert kv.get("nonexistent_key_12345") is None


def test_set_overwrites_the_previous_value(kv: Store) -> None:
    kv.set("k", "one")
    kv.set("k", "two")
    assert kv.get("k") == "two"


def test_empty_string_and_unicode_round_trip(kv: Store) -> None:
    kv.set("empty", "")
    kv.set("clé-ключ-鍵", "значение ✓ 🚀")
    assert kv.get("empty") == ""
    assert kv.get("clé-ключ-鍵") == "значение ✓ 🚀"


def test_a_one_mebibyte_value_round_trips(kv: Store) -> None:
    value = "0123456789abcdef" * 65536  # 1 MiB
    kv.set("big", value)
    assert kv.get("big") == value


def test_set_refuses_a_value_that_is_not_a_str_and_stores_nothing(kv: Store) -> None:
    with pytest.raises(KeyValueStoreInputError, match=r"'k'.*str"):
        kv.set("k", 42)  # type: ignore[arg-type]  # the mistake under test
    assert not kv.exists("k")


def test_delete_reports_whether_the_key_existed(kv: Store) -> None:
    kv.set("k", "v")
    assert kv.delete("k") is True
    assert kv.get("k") is None
    assert kv.delete("k") is False


def test_exists_tells_present_from_absent(kv: Store) -> None:
    assert kv.exists("k") is False
    kv.set("k", "v")
    assert kv.exists("k") is True


# --- expiry and TTL ------------------------------------------------------------------------


def test_a_key_expires_after_its_expire_seconds(kv: Store) -> None:
    kv.set("expire_test", "value", expire_seconds=1)
    assert kv.get("expire_test") == "value"
    time.sleep(1.2)
    assert kv.get("expire_test") is None
    assert kv.exists("expire_test") is False


def test_ttl_reports_the_seconds_left(kv: Store) -> None:
    kv.set("ttl_test", "value", expire_seconds=100)
    assert 95 <= kv.ttl("ttl_test") <= 100


def test_ttl_is_minus_two_for_a_missing_key(kv: Store) -> None:
    assert kv.ttl("missing") == -2


def test_ttl_is_minus_one_for_a_key_without_expiry(kv: Store) -> None:
    kv.set("forever", "v")
    assert kv.ttl("forever") == -1


def test_set_without_expiry_clears_an_earlier_expiry(kv: Store) -> None:
    kv.set("k", "v", expire_seconds=100)
    kv.set("k", "w")
    assert kv.ttl("k") == -1


@pytest.mark.parametrize("bad", BAD_SECONDS)
def test_set_refuses_bad_expire_seconds_and_stores_nothing(kv: Store, bad: Any) -> None:
    with pytest.raises(KeyValueStoreInputError, match=r"'session:1'.*expire_seconds") as info:
        kv.set("session:1", "v", expire_seconds=bad)
    assert isinstance(info.value, ValueError)
    assert not kv.exists("session:1")


def test_a_refused_set_leaves_the_old_value_and_ttl(kv: Store) -> None:
    kv.set("k", "old", expire_seconds=100)
    with pytest.raises(KeyValueStoreInputError):
        kv.set("k", "new", expire_seconds=0)
    assert kv.get("k") == "old"
    assert 95 <= kv.ttl("k") <= 100


def test_expire_gives_an_existing_key_a_ttl(kv: Store) -> None:
    kv.set("k", "v")
    assert kv.expire("k", 50) is True
    assert 45 <= kv.ttl("k") <= 50


def test_expire_on_a_missing_key_returns_false_and_creates_nothing(kv: Store) -> None:
    assert kv.expire("missing", 10) is False
    assert kv.exists("missing") is False


@pytest.mark.parametrize("bad", BAD_SECONDS)
def test_expire_refuses_bad_seconds_and_changes_nothing(kv: Store, bad: Any) -> None:
    kv.set("k", "v")
    with pytest.raises(KeyValueStoreInputError, match="'k'"):
        kv.expire("k", bad)
    assert kv.get("k") == "v"
    assert kv.ttl("k") == -1


# --- incr ----------------------------------------------------------------------------------


def test_incr_creates_a_missing_key_and_counts_up(kv: Store) -> None:
    assert kv.incr("counter_test") == 1
    assert kv.incr("counter_test") == 2
    assert kv.incr("counter_test") == 3
    assert kv.get("counter_test") == "3"


def test_incr_on_a_missing_key_sets_no_expiry(kv: Store) -> None:
    kv.incr("counter")
    assert kv.ttl("counter") == -1


def test_incr_continues_from_an_integer_string(kv: Store) -> None:
    kv.set("counter", "41")
    assert kv.incr("counter") == 42


def test_incr_keeps_an_existing_expiry(kv: Store) -> None:
    kv.set("counter", "1", expire_seconds=100)
    kv.incr("counter")
    assert 95 <= kv.ttl("counter") <= 100


@pytest.mark.parametrize("stored", ["abc", "1.5", "", str(2**63 - 1)])
def test_incr_on_a_non_integer_raises_a_data_error_and_changes_nothing(
    kv: Store, stored: str
) -> None:
    kv.set("counter", stored)
    with pytest.raises(KeyValueStoreDataError, match="incr of key 'counter'"):
        kv.incr("counter")
    assert kv.get("counter") == stored


# --- hit: the fixed-window rate-limit counter ----------------------------------------------


def test_hit_counts_within_a_window(kv: Store) -> None:
    assert [kv.hit("rl:user1", 60) for _ in range(5)] == [1, 2, 3, 4, 5]


def test_the_first_hit_sets_the_window_as_ttl(kv: Store) -> None:
    kv.hit("rl:user1", 60)
    assert 55 <= kv.ttl("rl:user1") <= 60


def test_later_hits_do_not_extend_the_window(kv: Store) -> None:
    kv.hit("rl:user1", 3)
    time.sleep(1.1)
    assert kv.hit("rl:user1", 100) == 2
    assert 0 < kv.ttl("rl:user1") <= 2


def test_hit_starts_a_new_window_after_expiry(kv: Store) -> None:
    assert kv.hit("rl:user1", 1) == 1
    assert kv.hit("rl:user1", 1) == 2
    time.sleep(1.2)
    assert kv.hit("rl:user1", 1) == 1


def test_hit_gives_a_ttl_to_a_counter_that_incr_created(kv: Store) -> None:
    kv.incr("rl:user1")
    assert kv.ttl("rl:user1") == -1
    assert kv.hit("rl:user1", 30) == 2
    assert 25 <= kv.ttl("rl:user1") <= 30


def test_hit_counters_are_per_key(kv: Store) -> None:
    kv.hit("rl:a", 60)
    kv.hit("rl:a", 60)
    assert kv.hit("rl:b", 60) == 1


@pytest.mark.parametrize("bad", BAD_SECONDS)
def test_hit_refuses_a_bad_window_and_counts_nothing(kv: Store, bad: Any) -> None:
    with pytest.raises(KeyValueStoreInputError, match=r"'rl:a'.*window_seconds"):
        kv.hit("rl:a", bad)
    assert not kv.exists("rl:a")


def test_hit_on_a_non_integer_raises_a_data_error(kv: Store) -> None:
    kv.set("rl:a", MARKER)
    with pytest.raises(KeyValueStoreDataError, match="hit of key 'rl:a'") as info:
        kv.hit("rl:a", 60)
    assert MARKER not in str(info.value)
    assert kv.get("rl:a") == MARKER


# --- JSON ----------------------------------------------------------------------------------


def test_json_round_trip(kv: Store) -> None:
    data = {"user_id": "123", "roles": ["admin", "user"]}
    kv.set_json("json_test", data, expire_seconds=60)
    assert kv.get_json("json_test") == data
    assert 55 <= kv.ttl("json_test") <= 60


def test_json_round_trips_unicode_unescaped(kv: Store) -> None:
    data = {"name": "Zoë Ørsted", "city": "東京", "note": "שלום 🚀", "combining": "é"}
    kv.set_json("contact", data)
    assert kv.get_json("contact") == data
    assert "東京" in (kv.get("contact") or "")


@pytest.mark.parametrize(
    "value",
    [1, -2.5, "text", True, [1, "a", None], {"nested": {"list": [1, 2], "empty": {}}}],
)
def test_json_round_trips_any_json_value(kv: Store, value: Any) -> None:
    kv.set_json("k", value)
    assert kv.get_json("k") == value


def test_a_one_mebibyte_json_value_round_trips(kv: Store) -> None:
    data = {"blob": "x" * (1024 * 1024), "n": 1}
    kv.set_json("big", data)
    assert kv.get_json("big") == data


def test_get_json_of_a_missing_key_returns_none(kv: Store) -> None:
    assert kv.get_json("missing") is None


def test_get_json_of_a_non_json_value_names_the_key_not_the_value(kv: Store) -> None:
    kv.set("session:abc", f"not json {MARKER}")
    with pytest.raises(KeyValueStoreDataError, match="'session:abc'") as info:
        kv.get_json("session:abc")
    assert MARKER not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or MARKER not in str(info.value.__context__)


@pytest.mark.parametrize(
    "value", [{MARKER, "b"}, {"when": object()}, float("nan"), {"x": float("inf")}]
)
def test_set_json_refuses_what_json_cannot_hold_and_stores_nothing(
    kv: Store, value: Any
) -> None:
    with pytest.raises(KeyValueStoreInputError, match="'k'") as info:
        kv.set_json("k", value)
    assert MARKER not in str(info.value)
    assert not kv.exists("k")


def test_set_json_refuses_bad_expire_seconds_and_stores_nothing(kv: Store) -> None:
    with pytest.raises(KeyValueStoreInputError, match="'k'"):
        kv.set_json("k", {"a": 1}, expire_seconds=0)
    assert not kv.exists("k")


def test_set_json_stores_text_that_json_loads(kv: Store) -> None:
    kv.set_json("k", {"a": [1, 2]})
    assert json.loads(kv.get("k") or "") == {"a": [1, 2]}


# --- prefixes ------------------------------------------------------------------------------


def test_stores_with_different_prefixes_do_not_see_each_others_keys(
    make_store: MakeStore,
) -> None:
    tenant_a, tenant_b = make_store("a:"), make_store("b:")
    tenant_a.set("k", "from a")
    assert tenant_b.get("k") is None
    assert tenant_b.exists("k") is False
    assert tenant_b.ttl("k") == -2
    assert tenant_b.delete("k") is False
    assert tenant_a.get("k") == "from a"


def test_the_prefix_is_prepended_to_every_key(make_store: MakeStore) -> None:
    prefixed, bare = make_store("crm:"), make_store()
    prefixed.set("session:1", "s", expire_seconds=100)
    prefixed.incr("counter")
    prefixed.hit("rl:1", 60)
    prefixed.set_json("j", [1])
    assert bare.get("crm:session:1") == "s"
    assert 95 <= bare.ttl("crm:session:1") <= 100
    assert bare.get("crm:counter") == "1"
    assert bare.get("crm:rl:1") == "1"
    assert bare.get_json("crm:j") == [1]
    assert bare.exists("session:1") is False


def test_hit_honours_the_prefix(make_store: MakeStore) -> None:
    tenant_a, tenant_b = make_store("a:"), make_store("b:")
    tenant_a.hit("rl", 60)
    tenant_a.hit("rl", 60)
    assert tenant_b.hit("rl", 60) == 1
    assert tenant_a.hit("rl", 60) == 3


def test_delete_expire_and_ttl_honour_the_prefix(make_store: MakeStore) -> None:
    prefixed, bare = make_store("p:"), make_store()
    bare.set("k", "unprefixed")
    prefixed.set("k", "prefixed")
    assert prefixed.expire("k", 100) is True
    assert bare.ttl("k") == -1
    assert prefixed.delete("k") is True
    assert bare.get("k") == "unprefixed"


# --- health and lifecycle ------------------------------------------------------------------


def test_health_check_returns_true(kv: Store) -> None:
    assert kv.health_check() is True


def test_a_closed_store_raises_a_key_value_store_error(make_store: MakeStore) -> None:
    with make_store("p:") as store:
        store.set("k", "v")
    with pytest.raises(KeyValueStoreError, match=r"get of key 'k'.*closed"):
        store.get("k")
    with pytest.raises(KeyValueStoreError, match="closed"):
        store.hit("k", 10)


def test_a_key_that_is_not_a_str_is_refused(kv: Store) -> None:
    with pytest.raises(KeyValueStoreInputError, match="get: key must be a str"):
        kv.get(b"k")  # type: ignore[arg-type]  # the mistake under test
