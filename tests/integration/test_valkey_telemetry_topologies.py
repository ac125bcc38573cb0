"""Spans and ``crm.call.duration`` points of the Valkey clients on a Sentinel-managed primary
and on a cluster, sync and asyncio, on real servers: the port, the operation, the command, the
key prefix, and the server the call went to (the primary the Sentinels named; the node of the
key's slot). A cluster's ``health_check`` pings every primary, so its span names none."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from crm_infra.adapters import AsyncValkeyClient, ValkeyClient
from crm_infra.devservers.valkey_cluster import ValkeyClusterDevServer
from crm_infra.devservers.valkey_sentinel import ValkeySentinelDevServer
from tests.fixtures.telemetry import Telemetry

# (operation, command, key prefix shown) of the calls `calls` makes, in order.
EXPECTED = [
    ("set", "SET", "crm:session:"),
    ("get", "GET", "crm:session:"),
    ("hit", "EVALSHA", "crm:rate:"),
    ("health_check", "PING", None),
]
KEYS = {"set": "session:s1", "get": "session:s1", "hit": "rate:r1"}


def sync_calls(kv: ValkeyClient) -> None:
    kv.set("session:s1", "v")
    assert kv.get("session:s1") == "v"
    assert kv.hit("rate:r1", 60) == 1
    assert kv.health_check()


async def async_calls(kv: AsyncValkeyClient) -> None:
    await kv.set("session:s1", "v")
    assert await kv.get("session:s1") == "v"
    assert await kv.hit("rate:r1", 60) == 1
    assert await kv.health_check()


def check(
    telemetry: Telemetry, server_of: Mapping[str, tuple[str, int] | None], *, pinged: int = 0
) -> None:
    """The spans and duration points of ``*_calls``; ``server_of`` gives each operation's
    (address, port), None where the span can name none; ``pinged``: the health checks made
    before (their spans cleared, their points not)."""
    spans = telemetry.ours()
    assert len(spans) == len(EXPECTED)
    for span, (operation, command, prefix) in zip(spans, EXPECTED, strict=True):
        attributes: dict[str, Any] = dict(span.attributes or {})
        assert span.name == command
        assert attributes["crm.port"] == "KeyValueStore"
        assert attributes["crm.operation"] == operation
        assert attributes["db.system.name"] == "redis"
        assert attributes["db.operation.name"] == command
        assert attributes.get("crm.kv.key_prefix") == prefix
        server = server_of[operation]
        if server is None:
            assert "server.address" not in attributes
            assert "server.port" not in attributes
        else:
            assert (attributes["server.address"], attributes["server.port"]) == server
        assert "error.type" not in attributes
    points = {
        (p.attributes["crm.operation"], p.attributes.get("crm.kv.key_prefix")): p.count
        for p in telemetry.points("crm.call.duration")
    }
    expected = {(operation, prefix): 1 for operation, _, prefix in EXPECTED}
    expected["health_check", None] += pinged
    assert points == expected
    for point in telemetry.points("crm.call.duration"):
        assert point.attributes["crm.port"] == "KeyValueStore"
        assert "server.address" not in point.attributes  # metrics keep to few values


def sentinel_servers(sentinel: ValkeySentinelDevServer) -> dict[str, tuple[str, int] | None]:
    primary = ("127.0.0.1", sentinel.primary().port)
    return {operation: primary for operation, _, _ in EXPECTED}


def cluster_servers(cluster: ValkeyClusterDevServer) -> dict[str, tuple[str, int] | None]:
    found: dict[str, tuple[str, int] | None] = {"health_check": None}  # every primary
    for operation, key in KEYS.items():
        node = cluster.primary_of_slot(cluster.slot_of("crm:" + key))
        found[operation] = ("127.0.0.1", node.port)
    return found


def test_sentinel_spans_name_the_primary(
    telemetry: Telemetry, valkey_sentinel_url: str, valkey_sentinel: ValkeySentinelDevServer
) -> None:
    with ValkeyClient(valkey_sentinel_url, key_prefix="crm:") as kv:
        telemetry.clear()  # the constructor's ping
        sync_calls(kv)
    check(telemetry, sentinel_servers(valkey_sentinel), pinged=1)
    assert {(s.attributes or {})["db.namespace"] for s in telemetry.ours()} == {"0"}


def test_cluster_spans_name_the_node_of_the_keys_slot(
    telemetry: Telemetry, valkey_cluster_url: str, valkey_cluster: ValkeyClusterDevServer
) -> None:
    with ValkeyClient(valkey_cluster_url, key_prefix="crm:", check_connection=False) as kv:
        sync_calls(kv)
    check(telemetry, cluster_servers(valkey_cluster))


@pytest.mark.asyncio
async def test_asyncio_sentinel_spans_name_the_primary(
    telemetry: Telemetry, valkey_sentinel_url: str, valkey_sentinel: ValkeySentinelDevServer
) -> None:
    async with AsyncValkeyClient(valkey_sentinel_url, key_prefix="crm:") as kv:
        # The ping of `async with` connected: the primary is known from the first call on.
        telemetry.clear()
        await async_calls(kv)
    check(telemetry, sentinel_servers(valkey_sentinel), pinged=1)


@pytest.mark.asyncio
async def test_asyncio_cluster_spans_name_the_node_of_the_keys_slot(
    telemetry: Telemetry, valkey_cluster_url: str, valkey_cluster: ValkeyClusterDevServer
) -> None:
    async with AsyncValkeyClient(valkey_cluster_url, key_prefix="crm:") as kv:
        # The ping of `async with` read the slot map: each key's node is known.
        telemetry.clear()
        await async_calls(kv)
    check(telemetry, cluster_servers(valkey_cluster), pinged=1)
