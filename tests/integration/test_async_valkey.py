"""AsyncValkeyClient on real Valkey: every topology, the bounded pool that waits, NOSCRIPT,
and cancellation at every await point. (The port's behaviour itself is the contract suite's.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
import redis

from crm_infra.adapters import AsyncValkeyClient
from crm_infra.adapters.valkey import ValkeyError, ValkeyUnavailableError
from crm_infra.ports import AsyncKeyValueStore
from tests.fixtures.cancellation import cancel_after, steps_of

pytestmark = [pytest.mark.real, pytest.mark.asyncio]

TOPOLOGIES = ["valkey_url", "valkey_cluster_url", "valkey_sentinel_url"]


@pytest.mark.parametrize("url_fixture", TOPOLOGIES)
async def test_every_call_works_on_each_topology(
    request: pytest.FixtureRequest, url_fixture: str
) -> None:
    url: str = request.getfixturevalue(url_fixture)
    async with AsyncValkeyClient(url, key_prefix="crm-test:") as kv:
        assert isinstance(kv, AsyncKeyValueStore)
        await kv.set("k", "v", 60)
        assert await kv.get("k") == "v"
        assert 0 < await kv.ttl("k") <= 60
        assert await kv.exists("k")
        await kv.set_json("j", {"a": [1, 2]})
        assert await kv.get_json("j") == {"a": [1, 2]}
        assert [await kv.hit("rate", 60) for _ in range(3)] == [1, 2, 3]
        assert await kv.incr("n") == 1
        assert await kv.expire("n", 30)
        assert await kv.delete("k")
        assert await kv.get("k") is None
        assert await kv.health_check()


async def test_more_concurrent_calls_than_connections_wait_and_count_exactly(
    valkey_url: str,
) -> None:
    """2,000 concurrent hits on a pool of 8: none fails with "too many connections", every
    hit is counted once, and the pool never holds more than 8 connections."""
    async with AsyncValkeyClient(valkey_url, max_connections=8) as kv:
        counts = await asyncio.gather(*(kv.hit("burst", 60) for _ in range(2000)))
        assert sorted(counts) == list(range(1, 2001))
        stats = kv.pool_stats()
        assert stats, "the pool reports its state"
        for pool in stats.values():
            assert pool.size <= 8
            assert pool.in_use == 0


async def test_a_flushed_script_is_loaded_again_and_counts_once(valkey_url: str) -> None:
    async with AsyncValkeyClient(valkey_url) as kv:
        assert await kv.hit("w", 60) == 1
        with redis.Redis.from_url(valkey_url) as raw:
            raw.script_flush()
        assert await kv.hit("w", 60) == 2


async def test_an_unreachable_server_fails_open_and_names_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free, and nothing listens once closed
    kv = AsyncValkeyClient(f"redis://:hunter2@127.0.0.1:{port}/0", retries=0)
    with pytest.raises(ValkeyUnavailableError) as caught:
        await kv.__aenter__()
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "hunter2" not in message
    with pytest.raises(ValkeyError, match="closed"):
        await kv.get("k")  # a failed __aenter__ closed it


@pytest.mark.parametrize("operation", ["hit", "incr", "get", "set_json"])
async def test_a_call_cancelled_at_any_point_leaves_nothing_behind(
    valkey_url: str, operation: str
) -> None:
    """Cancel the call after 1, 2, 3... turns of the event loop, every turn it takes, on a
    pool of one connection: the slot comes back, no stale reply is read by the next call,
    and a cancelled hit or incr counted once or not at all (never twice)."""
    async with AsyncValkeyClient(valkey_url, max_connections=1) as kv:

        async def call() -> object:
            if operation == "hit":
                return await kv.hit("counter", 600)
            if operation == "incr":
                return await kv.incr("counter")
            if operation == "get":
                return await kv.get("value")
            await kv.set_json("value", {"n": 1})
            return None

        await call()  # warm: the connection is made and the script loaded
        steps = await steps_of(call)
        assert steps >= 1
        attempts = 2  # the two calls above
        for point in range(1, steps + 2):
            await cancel_after(call, point)
            attempts += 1
            marker = f"after-{point}"
            await kv.set("probe", marker)
            assert await kv.get("probe") == marker, f"a stale reply after {point} turns"
            for pool in kv.pool_stats().values():
                assert pool.in_use == 0, f"a slot lost after {point} of {steps} turns"
        if operation in ("hit", "incr"):
            with redis.Redis.from_url(valkey_url, decode_responses=True) as raw:
                counted = int(raw.get("counter") or 0)
            assert 2 <= counted <= attempts  # none counted twice


async def test_asyncio_timeout_around_a_call_leaves_the_client_usable(valkey_url: str) -> None:
    async with AsyncValkeyClient(valkey_url, max_connections=1) as kv:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0):
                await kv.set("k", "v")
        await kv.set("k", "w")
        assert await kv.get("k") == "w"
