"""ValkeyClient on a Valkey Cluster while it breaks: a primary killed with SIGKILL, a manual
CLUSTER FAILOVER, SCRIPT FLUSH, and the resharding of the very slot being hit.

For each, hits run from a thread the whole time; the test measures the error window (printed
at the end of the run), checks that every error is a typed outage naming a real node, that no
hit was counted twice, and that no acknowledged ``set`` was lost once the replica had it
(``WAIT``). Each test leaves the session cluster whole again (``restore``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from crm_infra.adapters import ValkeyClient
from crm_infra.devservers.valkey_cluster import ValkeyClusterDevServer
from crm_infra.devservers.valkey_topology import wait_for
from tests.fixtures.valkey_load import Load, report

PREFIX = "crm:"
HITS = "{rl}:hits"  # the hash tag puts every key of these tests in one slot
SLOT_KEY = PREFIX + HITS
SYNCED = 200


@pytest.fixture
def kv(valkey_cluster_url: str) -> Iterator[ValkeyClient]:
    with ValkeyClient(valkey_cluster_url, key_prefix=PREFIX) as client:
        yield client


@pytest.fixture
def cluster(
    valkey_cluster: ValkeyClusterDevServer, valkey_cluster_url: str
) -> Iterator[ValkeyClusterDevServer]:
    yield valkey_cluster
    valkey_cluster.restore()


def _ports(cluster: ValkeyClusterDevServer) -> set[str]:
    return {f"127.0.0.1:{node.port}" for node in cluster.nodes}


def _write_synced(kv: ValkeyClient, cluster: ValkeyClusterDevServer) -> list[str]:
    """Set keys in the hits' slot and wait until the replica has them (WAIT)."""
    names = [f"{{rl}}:synced:{i}" for i in range(SYNCED)]
    for name in names:
        kv.set(name, "kept")
    primary = cluster.primary_of_slot(cluster.slot_of(SLOT_KEY))
    assert cluster.wait_replicated(primary, PREFIX + "{rl}:sync-marker") >= 1
    return names


def _count(kv: ValkeyClient) -> int:
    return int(kv.get(HITS) or 0)


def test_a_primary_killed_with_sigkill_fails_over_with_typed_errors_and_no_double_count(
    cluster: ValkeyClusterDevServer, kv: ValkeyClient
) -> None:
    slot = cluster.slot_of(SLOT_KEY)
    primary = cluster.primary_of_slot(slot)
    synced = _write_synced(kv, cluster)
    with Load(kv, HITS, sets="{rl}:w:") as load:
        load.wait_successes(20)
        primary.kill()
        wait_for(
            lambda: cluster.primary_of_slot(slot).port != primary.port,
            timeout=60,
            what="a replica taking over the slot",
        )
        load.wait_successes(20)
    assert [name for name in synced if kv.get(name) != "kept"] == []
    lost_sets = sum(1 for name in load.acked_sets if kv.get(name) is None)
    load.check_errors(every=_ports(cluster))
    assert load.errors, "a crashed primary is noticed only after cluster-node-timeout"
    count = _count(kv)
    # A hit is never sent twice: the counter holds at most the hits that may have run (it
    # may hold fewer: a hit acknowledged but not yet replicated dies with the primary).
    assert count <= len(load.ok) + load.ambiguous()
    report(
        "cluster: kill -9 of the slot's primary",
        load,
        lost_sets=lost_sets,
        note=f"counter {count} for {len(load.ok)} acknowledged hits",
    )


def test_a_manual_cluster_failover_loses_nothing_and_counts_every_hit_once(
    cluster: ValkeyClusterDevServer, kv: ValkeyClient
) -> None:
    slot = cluster.slot_of(SLOT_KEY)
    replica = cluster.replicas_of(cluster.primary_of_slot(slot))[0]
    synced = _write_synced(kv, cluster)
    with Load(kv, HITS, sets="{rl}:w:") as load:
        load.wait_successes(20)
        cluster.failover(replica)  # coordinated: the replica catches up before taking over
        assert cluster.primary_of_slot(slot).port == replica.port
        load.wait_successes(20)
    assert [name for name in synced if kv.get(name) != "kept"] == []
    lost_sets = sum(1 for name in load.acked_sets if kv.get(name) is None)
    load.check_errors(every=_ports(cluster))
    values = [o.value for o in load.ok if o.value is not None]
    assert values == sorted(set(values))  # strictly increasing: no hit counted twice
    assert len(load.ok) <= _count(kv) <= len(load.ok) + load.ambiguous()
    assert lost_sets == 0
    report("cluster: CLUSTER FAILOVER (manual)", load, lost_sets=lost_sets)


def test_script_flush_on_every_primary_is_invisible_to_hits(
    cluster: ValkeyClusterDevServer, kv: ValkeyClient
) -> None:
    with Load(kv, HITS) as load:
        load.wait_successes(20)
        flushed = time.monotonic()
        for node in cluster.primaries():
            with cluster.admin(node) as client:
                client.script_flush()
        load.wait_successes(20, since=flushed)
    assert load.errors == []
    assert [o.value for o in load.ok] == list(range(1, len(load.ok) + 1))
    assert _count(kv) == len(load.ok)
    report("cluster: SCRIPT FLUSH on every primary", load)


def test_resharding_the_slot_being_hit_is_invisible_to_hits(
    cluster: ValkeyClusterDevServer, kv: ValkeyClient
) -> None:
    slot = cluster.slot_of(SLOT_KEY)
    source = cluster.primary_of_slot(slot)
    target = next(node for node in cluster.primaries() if node.port != source.port)
    for i in range(300):  # something to move besides the counter
        kv.set(f"{{rl}}:data:{i}", str(i))
    with Load(kv, HITS) as load:
        load.wait_successes(20)
        moved_at = time.monotonic()
        moved = cluster.migrate_slot(slot, target)
        load.wait_successes(20, since=moved_at)
    assert moved >= 300
    assert cluster.primary_of_slot(slot).port == target.port
    assert load.errors == []
    assert [o.value for o in load.ok] == list(range(1, len(load.ok) + 1))
    assert _count(kv) == len(load.ok)
    assert all(kv.get(f"{{rl}}:data:{i}") == str(i) for i in range(300))
    report("cluster: resharding the slot being hit", load, note=f"{moved} keys moved")
    # Put the slot back, so the layout stays balanced for later tests.
    cluster.migrate_slot(slot, source)
