"""Which Valkey a URL names, and how each topology says where a failure happened.

One URL, three topologies (the ``crm/valkey`` secret's ``url`` picks one):

- ``redis://``, ``rediss://``, ``unix://``: one server (redis-py parses these itself);
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]``: the
  primary that the Sentinels at those addresses name for ``service_name``; the password is the
  data servers' (the Sentinels' own, if they ask for one, is the ``sentinel_password`` query
  option);
- ``redis+cluster://[[user]:password@]host:port[,host:port...]``: a Valkey Cluster, reached
  through any of those start nodes (database 0 only, as a cluster has no other).

Parsing (:func:`parse_url`) and naming endpoints are shared by the sync and async clients; the
``connect_*`` builders are the only part that differs (``redis`` vs ``redis.asyncio``), and they
share their options.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

import attrs
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from crm_infra.errors import ConfigError

__all__ = [
    "CLUSTER_SCHEME",
    "SENTINEL_SCHEME",
    "ClusterEndpoint",
    "EndpointFor",
    "SentinelEndpoint",
    "Topology",
    "Transport",
    "connect_async",
    "connect_sync",
    "endpoint_of_client",
    "parse_url",
]

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
_QUERY_OPTIONS = {SENTINEL_SCHEME: {"sentinel_password"}, CLUSTER_SCHEME: set[str]()}

EndpointFor = Callable[[BaseException, "str | None"], str]
"""``(exception, full key name or None) -> "host:port (what it is)"`` for error messages."""


@attrs.frozen
class Topology:
    """A parsed ``redis+sentinel://`` or ``redis+cluster://`` URL."""

    kind: Literal["sentinel", "cluster"]
    nodes: tuple[tuple[str, int], ...]
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    sentinel_password: str | None = attrs.field(default=None, repr=False)

    @property
    def nodes_text(self) -> str:
        """The addresses as written, e.g. ``10.0.0.1:26379,10.0.0.2:26379``."""
        return ",".join(_address(host, port) for host, port in self.nodes)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_url(url: str, shown: str) -> Topology | None:
    """Parse a Sentinel or cluster URL; return None for the one-server schemes.

    Args:
        url: the connection URL.
        shown: the same URL with its secrets replaced, for error messages.

    Raises:
        ConfigError: the URL is malformed; the message quotes ``shown`` only.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _QUERY_OPTIONS:
        return None

    def bad(why: str) -> ConfigError:
        return ConfigError(f"ValkeyClient: invalid connection URL {shown!r}: {why}")

    # The user info ends at the LAST '@' (an unencoded '@' or '/' in a password stays in it).
    userinfo, at, rest = rest.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    rest, _, _fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    hosts_text, _, path = rest.partition("/")
    nodes = tuple(_parse_node(part, bad) for part in hosts_text.split(","))
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in _QUERY_OPTIONS[scheme]:
            allowed = ", ".join(sorted(_QUERY_OPTIONS[scheme])) or "none"
            raise bad(f"unknown option {name!r} for {scheme}:// (allowed: {allowed})")
        options[name] = value
    if scheme == CLUSTER_SCHEME:
        if path not in ("", "0"):
            raise bad("a cluster has database 0 only; give no path (or /0)")
        return Topology("cluster", nodes, username=username, password=password)
    segments = path.split("/") if path else []
    if not segments or not segments[0]:
        raise bad("name the Sentinel service: redis+sentinel://host:port/service_name[/db]")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise bad("after the service name only a database number may follow")
    return Topology(
        "sentinel",
        nodes,
        service=unquote(segments[0]),
        db=int(segments[1]) if len(segments) == 2 else 0,
        username=username,
        password=password,
        sentinel_password=options.get("sentinel_password"),
    )


def _parse_node(text: str, bad: Callable[[str], ConfigError]) -> tuple[str, int]:
    if text.startswith("["):
        host, _, port_text = text[1:].partition("]:")
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad(f"every address needs a host and a port (host:port), got {text!r}")
    return host, int(port_text)


# --- naming the endpoint that failed ----------------------------------------------------------


def _connection_address(exc: BaseException) -> str | None:
    """The host:port a redis-py cluster error was raised on (it attaches ``.connection``)."""
    connection = getattr(exc, "connection", None)
    host, port = getattr(connection, "host", None), getattr(connection, "port", None)
    return _address(host, port) if isinstance(host, str) and isinstance(port, int) else None


class ClusterEndpoint:
    """Names the cluster node of a failure: the node redis-py was talking to, else the node
    the slot map gives for the key, else the start nodes (no I/O: the slot map is cached).
    """

    def __init__(self, client: Any, start_nodes: str) -> None:
        self._client = client
        self._start_nodes = start_nodes

    def __call__(self, exc: BaseException, name: str | None) -> str:
        where = _connection_address(exc)
        slot: int | None = None
        if name is not None:
            with contextlib.suppress(Exception):
                slot = int(self._client.keyslot(name))
            if where is None:
                with contextlib.suppress(Exception):
                    node = self._client.get_node_from_key(name)
                    where = _address(node.host, node.port)
        if where is None:
            return f"{self._start_nodes} (cluster start nodes)"
        return f"{where} (cluster node of slot {slot})" if slot is not None else (
            f"{where} (cluster node)"
        )


class SentinelEndpoint:
    """Names the primary a Sentinel-managed client last connected to, or the Sentinels when
    no primary is known (never redis-py's placeholder address of an unconnected client).
    """

    def __init__(self, pool: Any, service: str, sentinels: str) -> None:
        self._pool = pool
        self._service = service
        self._sentinels = sentinels

    def __call__(self, exc: BaseException, name: str | None) -> str:
        address = getattr(self._pool, "master_address", None)
        if address and not str(exc).startswith("No master found"):
            host, port = address
            where = _address(str(host), int(port))
            return f"{where} (primary of Sentinel service {self._service!r})"
        return f"{self._sentinels} (Sentinels of service {self._service!r}; no primary known)"


def endpoint_of_client(client: Any, given: str | None) -> EndpointFor:
    """Return how to name the endpoint of a ready redis-py client's failures.

    ``given`` (the ``endpoint=`` argument) wins; a ``RedisCluster`` and a Sentinel-managed
    client are recognised by what they hold; otherwise the client's host and port (or
    socket path).
    """
    if given is not None:
        return lambda exc, name: given
    if hasattr(client, "nodes_manager"):  # redis.cluster.RedisCluster
        starts = ",".join(sorted(client.nodes_manager.startup_nodes))
        return ClusterEndpoint(client, starts)
    pool = client.connection_pool
    service = getattr(pool, "service_name", None)
    if service is not None:  # Sentinel.master_for(...)
        sentinels = ",".join(
            _address(s.connection_pool.connection_kwargs.get("host", "?"),
                     s.connection_pool.connection_kwargs.get("port", 0))
            for s in pool.sentinel_manager.sentinels
        )
        return SentinelEndpoint(pool, str(service), sentinels)
    kwargs = pool.connection_kwargs
    fixed = str(kwargs["path"]) if "path" in kwargs else _address(
        str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379))
    )
    return lambda exc, name: fixed


# --- building the clients -------------------------------------------------------------------


@attrs.frozen
class Transport:
    """A redis-py client for one topology, how to name its endpoints, and how to close it
    (``close`` returns an awaitable for a ``redis.asyncio`` client).
    """

    client: Any
    endpoint_for: EndpointFor
    close: Callable[[], Any]


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)  # retries are ours: idempotent commands only


def _cluster_options(
    topology: Topology, connect_s: float, reply_s: float, max_connections: int | None
) -> dict[str, Any]:
    extra: dict[str, Any] = {"max_connections": max_connections} if max_connections else {}
    return {
        "decode_responses": True,
        "username": topology.username,
        "password": topology.password,
        "socket_connect_timeout": connect_s,
        "socket_timeout": reply_s,
        **extra,
    }


def _sentinel_options(connect_s: float, reply_s: float) -> dict[str, Any]:
    # The Sentinels answer one quick question (who is primary?): the same timeouts, no
    # retries of redis-py's own (a frozen Sentinel would otherwise cost several timeouts).
    return {"socket_connect_timeout": connect_s, "socket_timeout": reply_s}


def _primary_options(topology: Topology, max_connections: int | None) -> dict[str, Any]:
    return {
        "db": topology.db,
        "decode_responses": True,
        "max_connections": max_connections,
        "username": topology.username,
        "password": topology.password,
    }


def connect_sync(
    topology: Topology, *, connect_s: float, reply_s: float, max_connections: int | None
) -> Transport:
    """Build the redis-py client for ``topology`` (a cluster reads its slot map now).

    Raises:
        redis.RedisError: a cluster could not be reached to read its slot map.
    """
    if topology.kind == "cluster":
        from redis.cluster import ClusterNode, RedisCluster  # noqa: PLC0415 - only if used

        node: Any = ClusterNode  # untyped in redis-py
        cluster = RedisCluster(
            startup_nodes=[node(host, port) for host, port in topology.nodes],
            retry=_no_retry(),
            **_cluster_options(topology, connect_s, reply_s, max_connections),
        )
        return Transport(cluster, ClusterEndpoint(cluster, topology.nodes_text), cluster.close)

    from redis.sentinel import Sentinel  # noqa: PLC0415 - only if used

    timeouts = {**_sentinel_options(connect_s, reply_s), "retry": _no_retry()}
    sentinel = Sentinel(
        list(topology.nodes),
        sentinel_kwargs={**timeouts, "password": topology.sentinel_password},
        **timeouts,
    )
    assert topology.service is not None
    primary = sentinel.master_for(
        topology.service, redis_class=redis.Redis, **_primary_options(topology, max_connections)
    )

    def close() -> None:
        primary.close()
        for client in sentinel.sentinels:
            client.close()

    endpoint = SentinelEndpoint(primary.connection_pool, topology.service, topology.nodes_text)
    return Transport(primary, endpoint, close)


def connect_async(
    topology: Topology, *, connect_s: float, reply_s: float, max_connections: int
) -> Transport:
    """:func:`connect_sync` for ``redis.asyncio`` (a cluster reads its slot map on first use).

    ``max_connections`` is required: the asyncio client waits for a free connection instead of
    letting redis-py refuse one.
    """
    import redis.asyncio as aredis  # noqa: PLC0415 - only if used
    from redis.asyncio.retry import Retry as AsyncRetry  # noqa: PLC0415

    no_retry = AsyncRetry(NoBackoff(), 0)
    if topology.kind == "cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster  # noqa: PLC0415

        node: Any = ClusterNode  # untyped in redis-py
        cluster = RedisCluster(
            startup_nodes=[node(host, port) for host, port in topology.nodes],
            retry=no_retry,
            **_cluster_options(topology, connect_s, reply_s, max_connections),
        )
        return Transport(cluster, ClusterEndpoint(cluster, topology.nodes_text), cluster.aclose)

    from redis.asyncio.sentinel import Sentinel  # noqa: PLC0415 - only if used

    timeouts = {**_sentinel_options(connect_s, reply_s), "retry": no_retry}
    sentinel = Sentinel(
        list(topology.nodes),
        sentinel_kwargs={**timeouts, "password": topology.sentinel_password},
        **timeouts,
    )
    assert topology.service is not None
    primary = sentinel.master_for(
        topology.service, redis_class=aredis.Redis, **_primary_options(topology, max_connections)
    )

    async def close() -> None:
        await primary.aclose()
        for client in sentinel.sentinels:
            await client.aclose()

    endpoint = SentinelEndpoint(primary.connection_pool, topology.service, topology.nodes_text)
    return Transport(primary, endpoint, close)
