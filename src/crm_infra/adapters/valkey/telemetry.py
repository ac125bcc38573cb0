"""What the Valkey clients' spans say: the command and the key's prefix, never the rest of the
key nor a value.

The key prefix is the client's ``key_prefix`` and the caller's key up to its first ``:``
(``crm:`` + ``session:`` of ``session:3f2a...``); a key without a ``:`` shows none of itself.
Valkey speaks the Redis protocol, and OpenTelemetry's conventions name it ``redis``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from redis.exceptions import ResponseError

from crm_infra.adapters.valkey.protocol import ClosedClient
from crm_infra.pool_stats import PoolStats
from crm_infra.telemetry import Call, CallSpec
from crm_infra.telemetry.calls import Attributes
from crm_infra.telemetry.pools import client_number

__all__ = ["CALL", "KEY_VALUE_STORE", "key_prefix", "pool_stats"]

KEY_VALUE_STORE = "KeyValueStore"
_COMMANDS = {
    "get": "GET",
    "get_json": "GET",
    "set": "SET",
    "set_json": "SET",
    "delete": "DEL",
    "incr": "INCR",
    "expire": "EXPIRE",
    "ttl": "TTL",
    "exists": "EXISTS",
    "hit": "EVALSHA",
    "health_check": "PING",
}
_FOUND = frozenset({"get", "get_json"})
HITS = "crm.kv.hits"

_fixed: weakref.WeakKeyDictionary[Any, Attributes] = weakref.WeakKeyDictionary()


def key_prefix(prefix: str, key: object) -> str:
    """The part of a key that may be shown: ``prefix`` and ``key`` up to its first ``:``."""
    if not isinstance(key, str):
        return prefix
    head, colon, _ = key.partition(":")
    return prefix + head + colon if colon else prefix


def _is_fake(client: Any) -> bool:
    pool = getattr(client, "connection_pool", None)
    server = getattr(pool, "connection_kwargs", {}).get("server")
    return type(server).__module__.startswith("fakeredis")


def _address(host: object, port: object) -> Attributes:
    found: dict[str, str | int] = {}
    if isinstance(host, str) and host:
        found["server.address"] = host
    if isinstance(port, int):
        found["server.port"] = port
    return found


def _server(client: Any, name: str | None) -> Attributes:
    """Where the call goes, read without I/O: the one server, the Sentinel-managed primary
    last connected to, or the cluster node of the key's slot."""
    if isinstance(client, ClosedClient) or _is_fake(client):
        return {}
    if hasattr(client, "nodes_manager"):
        return _cluster_node(client, name)
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, dict):
        return {}
    found = {"db.namespace": str(kwargs.get("db", 0))}
    master = getattr(pool, "master_address", None)
    if master:
        return {**found, **_address(str(master[0]), int(master[1]))}
    if "path" in kwargs:
        return {**found, "server.address": str(kwargs["path"])}
    return {**found, **_address(kwargs.get("host"), kwargs.get("port"))}


def _cluster_node(client: Any, name: str | None) -> Attributes:
    if name is None:
        return {}
    try:
        node = client.get_node_from_key(name)
    except Exception:  # noqa: BLE001 - no slot map yet: the span goes without an address
        return {}
    return _address(node.host, node.port)


class _Call(CallSpec):
    """``_call(command)`` of both Valkey clients: every operation of the port goes through
    it."""

    def describe(self, owner: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Call:
        op, key = args[0].op, args[0].key
        prefix = key_prefix(owner._prefix, key)
        metric: dict[str, str | int | bool | float] = {
            "crm.port": KEY_VALUE_STORE,
            "crm.operation": op,
            "db.system.name": "redis",
        }
        if key is not None:
            metric["crm.kv.key_prefix"] = prefix
        command = _COMMANDS.get(op, op.upper())
        client = owner._client
        full = None if key is None else owner._prefix + key
        attributes = {**metric, "db.operation.name": command, **_server(client, full)}
        return Call(command, attributes, metric, counter=HITS if op == "hit" else None)

    def outcome(self, call: Call, result: Any) -> Attributes:
        op = call.metric_attributes["crm.operation"]
        if op == "hit" and isinstance(result, int):
            return {"crm.kv.hit.count": result}
        if op in _FOUND:
            return {"crm.kv.found": result is not None}
        return {}

    def failure(self, call: Call, exc: BaseException) -> Attributes:
        # The server's error prefix (WRONGTYPE, NOSCRIPT...) is in the cause redis-py raised.
        # redis-py drops the generic ERR from its ResponseError's message.
        cause = exc.__cause__
        said = str(cause).split(" ", 1)[0] if cause is not None else ""
        if said.isupper() and said.isalpha():
            return {"db.response.status_code": said}
        return {"db.response.status_code": "ERR"} if isinstance(cause, ResponseError) else {}


CALL = _Call()
"""The hook of ``ValkeyClient._call`` and ``AsyncValkeyClient._call``."""


def pool_stats(owner: Any) -> dict[str, PoolStats]:
    """The state of the redis-py pools under ``owner``'s client (one per cluster node)."""
    client = owner._client
    if isinstance(client, ClosedClient) or _is_fake(client):
        return {}
    pools: list[Any] = []
    if hasattr(client, "nodes_manager"):
        for node in client.get_nodes():
            redis = getattr(node, "redis_connection", None)
            if redis is not None:
                pools.append(redis.connection_pool)
    elif getattr(client, "connection_pool", None) is not None:
        pools.append(client.connection_pool)
    found: dict[str, PoolStats] = {}
    for pool in pools:
        stats = _one_pool(pool, client_number(owner))
        if stats is not None:
            found[stats.name] = stats
    return found


def _one_pool(pool: Any, number: int) -> PoolStats | None:
    kwargs = getattr(pool, "connection_kwargs", {})
    master = getattr(pool, "master_address", None)
    if master:
        where = f"{master[0]}:{master[1]}"
    elif "path" in kwargs:
        where = str(kwargs["path"])
    else:
        where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    # redis-py keeps these counts in attributes of its own (redis.asyncio's pools count no
    # created connections: idle and in use add up); a version without them shows none.
    idle = getattr(pool, "_available_connections", None)
    in_use = getattr(pool, "_in_use_connections", None)
    created = getattr(pool, "_created_connections", None)
    if idle is None:
        return None
    if not isinstance(created, int):
        if in_use is None:
            return None
        created = len(idle) + len(in_use)
    limit = getattr(pool, "max_connections", None)
    name = f"valkey {where}/{kwargs.get('db', 0)} #{number}"
    return PoolStats(
        name=name,
        system="redis",
        size=created,
        idle=len(idle),
        in_use=max(0, created - len(idle)),
        max=limit if isinstance(limit, int) and limit < 2**31 else None,
    )
