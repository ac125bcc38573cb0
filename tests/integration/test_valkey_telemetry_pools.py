"""The Valkey clients' pools on real servers: the asyncio client's queue for a free slot
(``waiting``, ``wait_seconds``, ``requests`` in ``pool_stats()`` and the pool metrics), under
real contention, and the asyncio cluster client's one pool per node, as the sync one reports.

Contention is made real and held still: the server is paused for writes (``CLIENT PAUSE ...
WRITE``), so the call holding the one slot waits for its reply while the others queue; the
tests wait for conditions, never for time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

import pytest
import redis

from crm_infra.adapters import AsyncValkeyClient, ValkeyClient
from crm_infra.devservers.valkey_cluster import ValkeyClusterDevServer
from crm_infra.pool_stats import PoolStats
from crm_infra.telemetry.pools import client_number
from tests.fixtures.telemetry import Telemetry

POOL = "db.client.connection.pool.name"
CALLS = 40


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Yield to the event loop until ``condition()`` holds (``timeout`` only bounds a
    failure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.001)


@contextlib.contextmanager
def writes_paused(url: str) -> Iterator[None]:
    """Valkey holds every write command until the block ends (reads and PING still run)."""
    with redis.Redis.from_url(url) as admin:
        admin.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        try:
            yield
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")


@contextlib.asynccontextmanager
async def tasks() -> AsyncIterator[list[asyncio.Task[None]]]:
    """A list of tasks, each cancelled and awaited on leaving (a failing test leaves none
    running against a closed client)."""
    started: list[asyncio.Task[None]] = []
    try:
        yield started
    finally:
        for task in started:
            task.cancel()
        await asyncio.gather(*started, return_exceptions=True)


def only_pool(kv: AsyncValkeyClient | ValkeyClient) -> PoolStats:
    (stats,) = kv.pool_stats().values()
    return stats


def by_pool(telemetry: Telemetry, metric: str, name: str) -> dict[str, float]:
    """The points of ``metric`` for pool ``name`` (other tests' clients may still be open)."""
    return {p.attributes[POOL]: p.value for p in telemetry.points(metric)
            if p.attributes[POOL] == name}


def one_slot_client(url: str) -> AsyncValkeyClient:
    """A client of one slot whose paused call waits out any slow machine's scheduling
    (the tests unpause as soon as they have seen the queue)."""
    return AsyncValkeyClient(url, max_connections=1, socket_timeout=30, timeout=60)


@pytest.mark.asyncio
async def test_calls_queued_on_a_full_asyncio_pool_are_counted_while_they_wait(
    telemetry: Telemetry, valkey_url: str
) -> None:
    async with one_slot_client(valkey_url) as kv:  # its ping: request 1
        name = only_pool(kv).name
        assert (only_pool(kv).waiting, only_pool(kv).wait_seconds) == (0, 0.0)
        async with tasks() as calls:
            with writes_paused(valkey_url):
                calls += [asyncio.create_task(kv.set(f"session:{n}", "v")) for n in range(CALLS)]
                await until(lambda: only_pool(kv).waiting == CALLS - 1, "39 calls queueing")
                held = only_pool(kv)
                assert (held.in_use, held.requests) == (1, CALLS + 1)
                assert by_pool(telemetry, "db.client.connection.pending_requests", name) == {
                    name: CALLS - 1
                }
                assert not any(call.done() for call in calls)
            await asyncio.gather(*calls)
        after = only_pool(kv)
        assert (after.waiting, after.in_use, after.requests) == (0, 0, CALLS + 1)
        assert after.wait_seconds is not None
        assert after.wait_seconds > 0
        assert by_pool(telemetry, "db.client.connection.pending_requests", name) == {name: 0}
        assert by_pool(telemetry, "crm.pool.requests", name) == {name: CALLS + 1}
        assert by_pool(telemetry, "crm.pool.wait_time", name) == {name: after.wait_seconds}
        assert len(telemetry.named("set")) == CALLS


@pytest.mark.asyncio
async def test_calls_that_find_a_free_slot_count_as_requests_and_never_wait(
    valkey_url: str,
) -> None:
    async with AsyncValkeyClient(valkey_url, max_connections=4) as kv:
        for n in range(10):
            await kv.set(f"session:{n}", "v")
        await asyncio.gather(*(kv.get(f"session:{n}") for n in range(4)))  # 4 slots: no wait
        stats = only_pool(kv)
        assert (stats.waiting, stats.wait_seconds, stats.requests) == (0, 0.0, 1 + 10 + 4)


@pytest.mark.asyncio
async def test_a_cancelled_wait_leaves_the_queue_and_counts_its_time(valkey_url: str) -> None:
    async with one_slot_client(valkey_url) as kv, tasks() as started:
        with writes_paused(valkey_url):
            first = asyncio.create_task(kv.set("session:first", "v"))
            queued = [asyncio.create_task(kv.set(f"session:{n}", "v")) for n in range(5)]
            started += [first, *queued]
            await until(lambda: only_pool(kv).waiting == 5, "5 calls queueing")
            for call in queued:
                call.cancel()
            await asyncio.gather(*queued, return_exceptions=True)
            stats = only_pool(kv)
            assert stats.waiting == 0
            assert stats.wait_seconds is not None
            assert stats.wait_seconds > 0
            assert not first.done()
        await first
        await kv.set("session:after", "v")  # the slot came back
        assert (only_pool(kv).waiting, only_pool(kv).in_use) == (0, 0)
        assert only_pool(kv).requests == 1 + 1 + 5 + 1


def test_the_sync_client_does_not_queue_and_says_so(valkey_url: str) -> None:
    with ValkeyClient(valkey_url) as kv:
        kv.set("session:s1", "v")
        stats = only_pool(kv)
        assert (stats.waiting, stats.wait_seconds, stats.requests) == (None, None, None)


# --- a cluster ---------------------------------------------------------------------------------


def _where(names: Iterable[str]) -> set[str]:
    """Pool names without the client's number: ``valkey host:port/db``."""
    return {name.rsplit(" #", 1)[0] for name in names}


@pytest.mark.asyncio
async def test_the_asyncio_cluster_client_reports_one_pool_per_node(
    telemetry: Telemetry, valkey_cluster_url: str, valkey_cluster: ValkeyClusterDevServer
) -> None:
    primaries = {f"valkey 127.0.0.1:{node.port}/0" for node in valkey_cluster.primaries()}
    with ValkeyClient(valkey_cluster_url) as sync_kv:
        sync_pools = sync_kv.pool_stats()
    async with AsyncValkeyClient(valkey_cluster_url, max_connections=7) as kv:
        for n in range(30):  # keys of every slot's node
            await kv.set(f"session:{n}", "v")
        pools = kv.pool_stats()
        nodes = {f"valkey {n.host}:{n.port}/0" for n in kv._client.get_nodes()}
        assert _where(pools) == nodes  # every node of the slot map, replicas included
        assert primaries <= nodes
        assert primaries <= _where(sync_pools)  # named as the sync client names them
        for name, stats in pools.items():
            assert name.endswith(f" #{client_number(kv)}")
            assert stats.max == 7
            assert stats.in_use == 0
            assert stats.size == stats.idle
            # The client's slots are shared by every node: no node's pool claims the queue.
            assert (stats.waiting, stats.wait_seconds, stats.requests) == (None, None, None)
        used = {name for name, stats in pools.items() if stats.size > 0}
        assert _where(used) == primaries  # every primary served some of the keys
        counts = telemetry.points("db.client.connection.count")
        idle = {(p.attributes[POOL], p.value) for p in counts
                if p.attributes["db.client.connection.state"] == "idle"
                and p.attributes[POOL] in pools}  # other tests' clients may still be open
        assert idle == {(name, stats.idle) for name, stats in pools.items()}
    assert kv.pool_stats() == {}

