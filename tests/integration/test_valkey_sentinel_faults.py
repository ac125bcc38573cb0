"""ValkeyClient on a Sentinel-managed primary while it breaks: the primary killed with
SIGKILL, a Sentinel down (then the primary killed with only two Sentinels left), SCRIPT FLUSH,
and what asynchronous replication loses when the replica lags.

For each, hits run from a thread the whole time; the test measures the error window (printed
at the end of the run), checks that every error is a typed outage naming a real endpoint
(never redis-py's placeholder ``localhost:6379``), that no hit was counted twice, and that no
acknowledged ``set`` was lost once the replica had it (``WAIT``). Each test leaves the session
set whole again (``restore``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from crm_infra.adapters import ValkeyClient
from crm_infra.devservers.valkey_sentinel import ValkeySentinelDevServer
from tests.fixtures.valkey import FAULT_WINDOWS
from tests.fixtures.valkey_load import Load, report

PREFIX = "crm:"
HITS = "rl:hits"
SYNCED = 200


@pytest.fixture
def kv(valkey_sentinel_url: str) -> Iterator[ValkeyClient]:
    with ValkeyClient(valkey_sentinel_url, key_prefix=PREFIX) as client:
        yield client


@pytest.fixture
def sentinel(
    valkey_sentinel: ValkeySentinelDevServer, valkey_sentinel_url: str
) -> Iterator[ValkeySentinelDevServer]:
    yield valkey_sentinel
    valkey_sentinel.restore()


def _ports(sentinel: ValkeySentinelDevServer) -> set[str]:
    return {f"127.0.0.1:{s.port}" for s in [*sentinel.servers, *sentinel.sentinels]}


def _write_synced(kv: ValkeyClient, sentinel: ValkeySentinelDevServer) -> list[str]:
    names = [f"synced:{i}" for i in range(SYNCED)]
    for name in names:
        kv.set(name, "kept")
    assert sentinel.wait_replicated() >= 1
    return names


def _kill_primary_under_load(
    kv: ValkeyClient, sentinel: ValkeySentinelDevServer, key: str = HITS
) -> tuple[Load, list[str]]:
    synced = _write_synced(kv, sentinel)
    primary = sentinel.primary()
    with Load(kv, key, sets="w:") as load:
        load.wait_successes(20)
        primary.kill()
        sentinel.wait_failover(primary)
        load.wait_successes(20)
    return load, synced


def _check_kill(
    kv: ValkeyClient, sentinel: ValkeySentinelDevServer, load: Load, synced: list[str]
) -> int:
    assert [name for name in synced if kv.get(name) != "kept"] == []
    load.check_errors(every=_ports(sentinel))
    assert load.errors, "a crashed primary is noticed only after down-after-milliseconds"
    count = int(kv.get(load.key) or 0)
    # A hit is never sent twice: the counter holds at most the hits that may have run.
    assert count <= len(load.ok) + load.ambiguous()
    return sum(1 for name in load.acked_sets if kv.get(name) is None)


def test_a_primary_killed_with_sigkill_fails_over_with_typed_errors_and_no_double_count(
    sentinel: ValkeySentinelDevServer, kv: ValkeyClient
) -> None:
    load, synced = _kill_primary_under_load(kv, sentinel)
    lost_sets = _check_kill(kv, sentinel, load, synced)
    report("sentinel: kill -9 of the primary", load, lost_sets=lost_sets)


def test_a_sentinel_down_is_invisible_and_two_still_fail_over(
    sentinel: ValkeySentinelDevServer, valkey_sentinel_url: str, kv: ValkeyClient
) -> None:
    first = sentinel.sentinels[0]  # the first one a client asks
    with Load(kv, HITS) as load:
        load.wait_successes(20)
        first.kill()
        load.wait_successes(20)
        # A new client must find the primary through the Sentinels that are left.
        with ValkeyClient(valkey_sentinel_url, key_prefix=PREFIX) as fresh:
            assert fresh.health_check()
            assert fresh.get(HITS) is not None
    assert load.errors == []
    report("sentinel: one of three Sentinels killed", load)
    load, synced = _kill_primary_under_load(kv, sentinel, "rl:after-sentinel-down")
    lost_sets = _check_kill(kv, sentinel, load, synced)
    report("sentinel: kill -9 of the primary, 2 Sentinels", load, lost_sets=lost_sets)


def test_script_flush_is_invisible_to_hits(
    sentinel: ValkeySentinelDevServer, kv: ValkeyClient
) -> None:
    with Load(kv, HITS) as load:
        load.wait_successes(20)
        flushed = time.monotonic()
        with sentinel.admin(sentinel.primary()) as client:
            client.script_flush()
        load.wait_successes(20, since=flushed)
    assert load.errors == []
    assert [o.value for o in load.ok] == list(range(1, len(load.ok) + 1))
    assert int(kv.get(HITS) or 0) == len(load.ok)
    report("sentinel: SCRIPT FLUSH", load)


def test_writes_the_replica_never_received_are_lost_in_a_failover(
    sentinel: ValkeySentinelDevServer, kv: ValkeyClient
) -> None:
    """Replication is asynchronous: a write is acknowledged before any replica has it. With
    the replica frozen, what the kernel's socket buffers could not take on its way to the
    replica is still in the primary's memory when it dies, and is lost."""
    synced = _write_synced(kv, sentinel)
    primary, replica = sentinel.primary(), sentinel.replicas()[0]
    value = "x" * 500_000
    unsynced = [f"unsynced:{i}" for i in range(40)]  # 20 MB: more than socket buffers hold
    replica.pause()
    try:
        for name in unsynced:
            kv.set(name, value)
        primary.kill()
    finally:
        replica.resume()
    sentinel.wait_failover(primary)
    assert [name for name in synced if kv.get(name) != "kept"] == []
    lost = sum(1 for name in unsynced if not kv.exists(name))
    assert lost > 0
    FAULT_WINDOWS.append(
        f"sentinel: replica frozen, then primary killed: acknowledged sets lost: {lost} of "
        f"{len(unsynced)} written after the replica's last sync; 0 of {len(synced)} synced"
    )
