"""Counters under concurrent callers on a real Valkey: nothing lost, nothing left without TTL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from crm_infra.adapters import ValkeyClient

THREADS, CALLS = 8, 50


def test_concurrent_hits_are_all_counted_and_the_window_is_set_once(valkey_url: str) -> None:
    with ValkeyClient(valkey_url, key_prefix="conc:") as kv:
        with ThreadPoolExecutor(THREADS) as pool:
            counts = list(pool.map(lambda _: kv.hit("rl", 60), range(THREADS * CALLS)))
        assert sorted(counts) == list(range(1, THREADS * CALLS + 1))  # each count seen once
        assert 55 <= kv.ttl("rl") <= 60


def test_concurrent_incrs_are_all_counted(valkey_url: str) -> None:
    with ValkeyClient(valkey_url, key_prefix="conc:") as kv:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda _: kv.incr("n"), range(THREADS * CALLS)))
        assert kv.get("n") == str(THREADS * CALLS)


def test_clients_with_different_prefixes_count_separately(valkey_url: str) -> None:
    with ValkeyClient(valkey_url, key_prefix="a:") as a, ValkeyClient(
        valkey_url, key_prefix="b:"
    ) as b:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: (a if i % 2 else b).hit("rl", 60), range(100)))
        assert a.hit("rl", 60) == 51
        assert b.hit("rl", 60) == 51
