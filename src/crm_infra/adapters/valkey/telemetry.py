"""What the Valkey clients' spans say: the command and the key's prefix, never the rest of the
key nor a value.

Each method of the port is one span and one ``crm.call.duration`` point, around the whole call:
the argument checks, the wait for a free connection (asyncio client), the round trips and the
decoding of the reply. A call refused for its arguments, or whose reply cannot be decoded
(``get_json`` of a value that is not JSON), is a failed call like any other.

The key prefix (``crm.kv.key_prefix``, on spans and on the ``crm.call.duration`` and
``crm.kv.hits`` points) is the client's ``key_prefix`` and the caller's key up to its first
``:``, but only when that first segment reads as a namespace name: 1 to 32 lowercase ASCII
letters, ``_`` or ``-``, starting with a letter (``session``, ``rate_limit``, ``feature-flags``).
``session:3f2a...`` shows as ``crm:`` + ``session:``; ``3f2a...:cart``, ``user42:cart``,
``Session:x`` or ``bob@example.com:x`` show as ``crm:`` alone, and so does a key without a
``:``. Identifiers (user ids, emails, tokens, numbers) belong after the first ``:``: the first
segment names a kind of key, so that what is shown says nothing of whose key it is and the
metrics keep a handful of attribute values, not one per user.

Valkey speaks the Redis protocol, and OpenTelemetry's conventions name it ``redis``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.exceptions import ResponseError

from crm_infra.adapters.valkey.protocol import ClosedClient
from crm_infra.pool_stats import PoolStats
from crm_infra.telemetry import Call, CallSpec
from crm_infra.telemetry.calls import Attributes, is_name
from crm_infra.telemetry.pools import client_number

__all__ = ["CALLS", "KEY_VALUE_STORE", "Queue", "key_prefix", "pool_stats"]

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
Queue = tuple[int, float, int]
"""The asyncio client's queue: calls waiting now, seconds waited in all, calls made."""


def key_prefix(prefix: str, key: object) -> str:
    """The part of a key that may be shown: ``prefix``, and ``key`` up to its first ``:`` when
    that segment is a namespace name (see the module docstring); else ``prefix`` alone."""
    if not isinstance(key, str):
        return prefix
    head, colon, _ = key.partition(":")
    if colon and is_name(head):
        return prefix + head + colon
    return prefix


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
    """One method of the port, on both Valkey clients (``@traced(CALLS["get"])`` on
    ``get``...): the span covers the whole call, from the argument checks to the decoded
    reply.

    ``server.address`` and ``server.port`` are read without I/O (:func:`_server`): the one
    server, the Sentinel-managed primary last connected to (none before the first connection),
    or the cluster node of the key's slot (none before the slot map is read). ``health_check``
    on a cluster pings every primary, several servers at once, so its span names none of them;
    the error of a failed ping names the node that failed.

    ``crm.kv.found`` is whether the call returned a value: for ``get_json`` a stored JSON
    ``null`` comes back as None, as for a missing key, and counts as not found.
    """

    def __init__(self, op: str, command: str) -> None:
        self._op = op
        self._command = command
        self._keyed = op != "health_check"
        self._found = op in _FOUND
        self._counter = HITS if op == "hit" else None

    def describe(self, owner: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Call:
        metric: dict[str, str | int | bool | float] = {
            "crm.port": KEY_VALUE_STORE,
            "crm.operation": self._op,
            "db.system.name": "redis",
        }
        full = None
        if self._keyed:
            # The method's own arguments: the key may be a keyword, or (refused) not a str.
            key = args[0] if args else kwargs.get("key")
            metric["crm.kv.key_prefix"] = key_prefix(owner._prefix, key)
            if isinstance(key, str):
                full = owner._prefix + key
        attributes = {
            **metric, "db.operation.name": self._command, **_server(owner._client, full)
        }
        return Call(self._command, attributes, metric, counter=self._counter)

    def outcome(self, call: Call, result: Any) -> Attributes:
        if self._counter is not None and isinstance(result, int):
            return {"crm.kv.hit.count": result}
        if self._found:
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


CALLS: Mapping[str, CallSpec] = {op: _Call(op, command) for op, command in _COMMANDS.items()}
"""The hook of each method of the port, by name, for both clients."""


def pool_stats(owner: Any) -> dict[str, PoolStats]:
    """The state of the redis-py pools under ``owner``'s client (one per cluster node).

    The asyncio client's queue (calls waiting for one of its ``max_connections`` slots) is
    reported as the ``waiting``, ``wait_seconds`` and ``requests`` of its one pool, on one
    server or Sentinel. On a cluster those slots are shared by every node, so no node's pool
    can claim the queue: the node pools report no such figures. The sync client has no queue
    (redis-py's pool refuses a connection beyond ``max_connections``) and reports none either.
    """
    client = owner._client
    if isinstance(client, ClosedClient) or _is_fake(client):
        return {}
    number = client_number(owner)
    found: dict[str, PoolStats] = {}
    if hasattr(client, "nodes_manager"):
        for node in client.get_nodes():
            redis = getattr(node, "redis_connection", None)
            if redis is not None:  # redis.cluster's node: a client with a pool of its own
                stats = _one_pool(redis.connection_pool, number, None)
            else:  # redis.asyncio.cluster's node is its own pool
                stats = _async_node(node, number)
            if stats is not None:
                found[stats.name] = stats
    elif getattr(client, "connection_pool", None) is not None:
        stats = _one_pool(client.connection_pool, number, owner._queue())
        if stats is not None:
            found[stats.name] = stats
    return found


def _limit(value: object) -> int | None:
    return value if isinstance(value, int) and value < 2**31 else None


def _async_node(node: Any, number: int) -> PoolStats | None:
    """A ``redis.asyncio`` cluster node's connections: ``_connections`` (all it made) and
    ``_free`` (the idle ones); a redis-py without them shows none."""
    made = getattr(node, "_connections", None)
    free = getattr(node, "_free", None)
    if made is None or free is None:
        return None
    kwargs = getattr(node, "connection_kwargs", {})
    size = len(made)
    return PoolStats(
        name=f"valkey {node.host}:{node.port}/{kwargs.get('db', 0)} #{number}",
        system="redis",
        size=size,
        idle=len(free),
        in_use=max(0, size - len(free)),
        max=_limit(getattr(node, "max_connections", None)),
    )


def _one_pool(pool: Any, number: int, queue: Queue | None) -> PoolStats | None:
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
    name = f"valkey {where}/{kwargs.get('db', 0)} #{number}"
    waiting, wait_seconds, requests = (None, None, None) if queue is None else queue
    return PoolStats(
        name=name,
        system="redis",
        size=created,
        idle=len(idle),
        in_use=max(0, created - len(idle)),
        max=_limit(getattr(pool, "max_connections", None)),
        waiting=waiting,
        wait_seconds=wait_seconds,
        requests=requests,
    )
