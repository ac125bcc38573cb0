"""ValkeyClient against raw redis-py on the same local Valkey, in one run, on each topology:
one server (``redis.Redis``), a cluster (``redis.cluster.RedisCluster``) and a Sentinel-managed
primary (``Sentinel(...).master_for(...)``).

Targets: ``get`` and ``set`` within 1.15x of redis-py's own on the same topology; ``hit``
(INCR plus EXPIRE NX in one script call) within 1.3x of a single raw ``INCR``, i.e. one
round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from benchmarks.harness import Comparison, compare, print_comparisons
from crm_infra.adapters import ValkeyClient
from crm_infra.devservers.valkey import ValkeyDevServer
from crm_infra.devservers.valkey_cluster import ValkeyClusterDevServer
from crm_infra.devservers.valkey_sentinel import ValkeySentinelDevServer

CALLS = 1000
ROUNDS = 15


@contextmanager
def _single() -> Iterator[tuple[str, Any]]:
    with ValkeyDevServer() as server:
        raw = redis.Redis.from_url(server.url, decode_responses=True)
        with raw:
            yield server.url, raw


@contextmanager
def _cluster() -> Iterator[tuple[str, Any]]:
    with ValkeyClusterDevServer() as cluster:
        raw = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port, decode_responses=True)
        try:
            yield cluster.url, raw
        finally:
            raw.close()


@contextmanager
def _sentinel() -> Iterator[tuple[str, Any]]:
    with ValkeySentinelDevServer() as topology:
        sentinel = Sentinel([("127.0.0.1", s.port) for s in topology.sentinels])
        raw = sentinel.master_for(topology.service, decode_responses=True)
        try:
            yield topology.url, raw
        finally:
            raw.close()
            for client in sentinel.sentinels:
                client.close()


TOPOLOGIES: dict[str, Callable[[], Any]] = {
    "one server": _single,
    "cluster": _cluster,
    "sentinel": _sentinel,
}
RAW_NAMES = {"one server": "redis-py", "cluster": "RedisCluster", "sentinel": "Sentinel client"}


def _compare(topology: str, url: str, raw: Any) -> list[Comparison]:
    base = RAW_NAMES[topology]
    with ValkeyClient(url, key_prefix="bench:") as kv:
        kv.set("get", "x" * 100)
        raw.set("get", "x" * 100)
        value = "y" * 100
        return [
            compare(
                "ValkeyClient.get", lambda: kv.get("get"),
                f"{base} get", lambda: raw.get("get"),
                calls=CALLS, rounds=ROUNDS, target=1.15,
            ),
            compare(
                "ValkeyClient.set", lambda: kv.set("set", value),
                f"{base} set", lambda: raw.set("set", value),
                calls=CALLS, rounds=ROUNDS, target=1.15,
            ),
            compare(
                "ValkeyClient.set (expire_seconds)",
                lambda: kv.set("setex", value, expire_seconds=60),
                f"{base} set ex=", lambda: raw.set("setex", value, ex=60),
                calls=CALLS, rounds=ROUNDS, target=1.15,
            ),
            compare(
                "ValkeyClient.hit", lambda: kv.hit("hit", 3600),
                f"{base} incr", lambda: raw.incr("incr"),
                calls=CALLS, rounds=ROUNDS, target=1.3,
            ),
        ]


def main() -> bool:
    """Run the comparisons on private topologies; return True when every target is met."""
    ok = True
    for topology, start in TOPOLOGIES.items():
        with start() as (url, raw):
            comparisons = _compare(topology, url, raw)
        print_comparisons(
            f"key-value, {topology}: ValkeyClient vs {RAW_NAMES[topology]} (same servers, one run)",
            comparisons,
        )
        ok = all(c.met for c in comparisons) and ok
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
