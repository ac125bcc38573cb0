"""What :class:`~crm_infra.adapters.valkey.ValkeyClient` and its asyncio twin share: the
constructor (checks, URL, budget, retry policy) and every port call as a
:class:`~crm_infra.adapters.valkey.protocol.Command`, built before any I/O.

The twins differ only in how they run a command (call, or await) and in the redis-py module
their transport comes from; each subclass names those in three small hooks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from crm_infra.adapters.valkey.errors import ValkeyInputError
from crm_infra.adapters.valkey.protocol import (
    DEFAULT_BACKOFF,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RETRIES,
    DEFAULT_SOCKET_TIMEOUT,
    DEFAULT_TIMEOUT,
    HIT_SCRIPT,
    HIT_SHA,
    Boundary,
    Command,
    RetryPolicy,
    bad_seconds,
    decode_json,
    encode_json,
    is_seconds,
    positive_seconds,
)
from crm_infra.adapters.valkey.telemetry import Queue, pool_stats
from crm_infra.adapters.valkey.topology import (
    EndpointFor,
    Topology,
    Transport,
    endpoint_of_client,
    parse_url,
)
from crm_infra.errors import ConfigError
from crm_infra.pool_stats import PoolStats
from crm_infra.ports import JSONValue
from crm_infra.redaction import raise_sanitized, redact_url
from crm_infra.telemetry import watch_pools

__all__ = ["ValkeyBase"]

_PRIMARIES = "primaries"  # RedisCluster's target_nodes flag


def _same(reply: Any) -> Any:
    return reply


def _true(reply: Any) -> bool:
    return True


class ValkeyBase:
    """The shared half of the Valkey clients (see the module docstring)."""

    _redis_class: ClassVar[Any] = redis.Redis
    """The redis-py class a one-server URL is opened with."""

    def __init__(
        self,
        connection_url: str | None = None,
        *,
        client: redis.Redis | Any | None = None,
        key_prefix: str = "",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        max_connections: int | None = None,
        check_connection: bool = True,
        close_client: bool = False,
        endpoint: str | None = None,
    ) -> None:
        """Connect to Valkey at ``connection_url``, or wrap a ready redis-py ``client``.

        Args:
            connection_url: one server (``redis://[[user]:password@]host:port/db``,
                ``rediss://...``, ``unix://...``), a Sentinel-managed primary
                (``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``)
                or a cluster (``redis+cluster://[[user]:password@]host:port[,host:port...]``).
                Give this or ``client``, not both.
            client: a ready ``redis.Redis`` (also one from ``Sentinel.master_for``) or
                ``redis.cluster.RedisCluster`` (``redis.asyncio``'s, for the asyncio client)
                built with ``decode_responses=True``. Its own timeouts apply (the budget below
                holds only when they are set), and its redis-py retries are switched off,
                because a retried INCR can count twice. It is not closed by ``close``: its
                owner closes it.
            key_prefix: prepended to every key (a namespace, e.g. ``"crm:"``).
            connect_timeout: seconds to establish a connection.
            socket_timeout: seconds to wait for any one reply.
            timeout: total seconds one call may take, retries included; must cover
                ``connect_timeout + socket_timeout``.
            retries: further attempts for idempotent commands after a connection error or
                timeout (for ``incr`` and ``hit`` only when the command cannot have run).
            backoff: seconds before the first retry; doubles per retry, capped at 0.5 s.
            max_connections: the pool's limit (per node on a cluster; None: redis-py's
                default for the sync client, 50 for the asyncio client, which waits for a
                free connection instead of failing).
            check_connection: ping once (every primary, on a cluster) so that a wrong URL
                fails at start-up: at construction for the sync client, on ``open()`` (or
                ``async with``) for the asyncio one.
            close_client: ``close`` closes the given ``client`` too (for a client built
                for this store alone).
            endpoint: what messages call the server of a given ``client`` (default: its
                host and port, the cluster node or the Sentinel-managed primary).

        Raises:
            ConfigError: the arguments cannot work (both or neither of URL and client, a bad
                URL, timeouts that do not fit the budget).
            ValkeyError: the sync client's ``check_connection`` ping failed (a
                ``ValkeyUnavailableError`` when the server is unreachable), or a cluster's
                slot map could not be read.
        """
        name = type(self).__name__
        if (connection_url is None) == (client is None):
            raise ConfigError(f"{name}: give exactly one of connection_url and client")
        if not isinstance(key_prefix, str):
            raise ConfigError(f"{name}: key_prefix must be a str, got {key_prefix!r}")
        timeout_s = positive_seconds("timeout", timeout)
        backoff_s = positive_seconds("backoff", backoff)
        if type(retries) is not int or retries < 0:
            raise ConfigError(f"{name}: retries must be an int >= 0, got {retries!r}")
        if max_connections is not None and (type(max_connections) is not int
                                            or max_connections < 1):
            raise ConfigError(
                f"{name}: max_connections must be an int >= 1 or None, got {max_connections!r}"
            )
        self._prefix = key_prefix
        self._endpoint_of: EndpointFor = lambda exc, name: "the server"
        if connection_url is not None:
            self._target = f"url={redact_url(connection_url)!r}"
            transport = self._transport_from_url(
                connection_url,
                positive_seconds("connect_timeout", connect_timeout),
                positive_seconds("socket_timeout", socket_timeout),
                self._pool_limit(max_connections),
            )
        else:
            self._target = f"client={type(client).__name__}"
            assert client is not None
            client.set_retry(self._no_retry())
            transport = Transport(
                client,
                endpoint_of_client(client, endpoint),
                self._closer(client) if close_client else self._nothing_to_close,
            )
        self._close_transport = transport.close
        self._endpoint_of = transport.endpoint_for
        if transport.client.get_encoder().decode_responses is not True:
            self._abandon(transport)
            raise ConfigError(
                f"{name}: the redis client must be built with decode_responses=True, "
                "so that values come back as str"
            )
        # The worst one attempt can take; without both timeouts it has no bound, and then
        # a retry could break the budget, so none is made.
        kwargs = _connection_kwargs(transport.client)
        connect_s = kwargs.get("socket_connect_timeout")
        reply_s = kwargs.get("socket_timeout")
        attempt_s = math.inf if connect_s is None or reply_s is None else connect_s + reply_s
        if connection_url is not None and attempt_s > timeout_s:
            self._abandon(transport)
            raise ConfigError(
                f"{name}: connect_timeout + socket_timeout ({attempt_s:g} s) exceed "
                f"the per-call budget timeout ({timeout_s:g} s)"
            )
        self._policy = RetryPolicy(retries, backoff_s, attempt_s, timeout_s)
        self._client: Any = transport.client
        self._limit = max_connections
        watch_pools(self)
        cluster = hasattr(transport.client, "nodes_manager")
        self._ping: Callable[[], Any] = (
            (lambda: self._client.ping(target_nodes=_PRIMARIES)) if cluster
            else (lambda: self._client.ping())  # noqa: PLW0108 - late-bound: close() swaps it
        )
        self._check_connection = check_connection
        self._constructed()

    # --- the hooks of each twin ----------------------------------------------------------------

    def _constructed(self) -> None:
        """Called last in ``__init__`` (the sync client pings here)."""

    def _pool_limit(self, max_connections: int | None) -> int | None:
        return max_connections

    def _no_retry(self) -> Any:
        return Retry(NoBackoff(), 0)

    def _nothing_to_close(self) -> Any:
        return None

    def _closer(self, client: Any) -> Callable[[], Any]:
        return cast(Callable[[], Any], client.close)

    def _abandon(self, transport: Transport) -> None:
        """Close a transport built by a constructor that then fails."""
        transport.close()

    def _connect(
        self, topology: Topology, connect_s: float, reply_s: float, limit: int | None
    ) -> Transport:
        raise NotImplementedError

    def _hit_once(self, name: str, window_seconds: int) -> Any:
        raise NotImplementedError

    def _queue(self) -> Queue | None:
        """The calls waiting for a connection, the seconds waited and the calls made (None:
        this client does not queue)."""
        return None

    # --- set-up ---------------------------------------------------------------------------------

    def _transport_from_url(
        self, url: str, connect_s: float, reply_s: float, limit: int | None
    ) -> Transport:
        shown = redact_url(url)
        topology = parse_url(url, shown)
        name = type(self).__name__
        if topology is not None:
            # A cluster reads its slot map now: name the start nodes if that fails.
            self._endpoint_of = lambda exc, name: (
                f"{topology.nodes_text} ({topology.kind} start nodes)"
            )
            with Boundary(self, "connect", None):
                return self._connect(topology, connect_s, reply_s, limit)
        try:
            client = self._redis_class.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=connect_s,
                socket_timeout=reply_s,
                retry=self._no_retry(),  # retries are ours: idempotent commands only
                max_connections=limit,
            )
        except ValueError as exc:
            # redis-py's message quotes pieces of the URL (the "port" of an unencoded
            # password with a '/' is the password itself), so it is shown only without one.
            detail = str(exc) if shown == url else (
                "check the scheme, host, port and database number, and percent-encode any "
                "'/', '?', '#' or '@' in the password"
            )
            raise_sanitized(
                ConfigError(f"{name}: invalid connection URL {shown!r}: {detail}"), None
            )
        return Transport(client, endpoint_of_client(client, None), self._closer(client))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._target}, key_prefix={self._prefix!r})"

    def pool_stats(self) -> dict[str, PoolStats]:
        """Return the state of the connection pools (one per node on a cluster), by name."""
        return pool_stats(self)

    # --- what every call shares -----------------------------------------------------------------

    def _endpoint_for(self, exc: BaseException, key: str | None) -> str:
        return self._endpoint_of(exc, None if key is None else self._prefix + key)

    def _method(self, name: str) -> Callable[..., Any]:
        if name == "hit":
            return self._hit_once
        if name == "ping":
            return self._ping
        return cast(Callable[..., Any], getattr(self._client, name))

    def _name(self, op: str, key: str) -> str:
        if type(key) is str:
            return self._prefix + key
        raise ValkeyInputError(f"Valkey {op}: key must be a str, got {type(key).__name__}")

    @staticmethod
    def _hit_commands(name: str, window_seconds: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """EVALSHA, then EVAL with the body when the server does not have the script (it
        did not run, so running it now cannot count twice).
        """
        return (
            ("EVALSHA", HIT_SHA, 1, name, window_seconds),
            ("EVAL", HIT_SCRIPT, 1, name, window_seconds),
        )

    # --- the port's calls, decided before any I/O -----------------------------------------------

    def _get(self, key: str) -> Command[str | None]:
        return Command("get", key, True, "get", (self._name("get", key),), _same)

    def _set(self, key: str, value: str, expire_seconds: int | None) -> Command[None]:
        if type(value) is not str:
            raise ValkeyInputError(
                f"Valkey set of key {key!r}: value must be a str, got {type(value).__name__} "
                "(use set_json for structured values); nothing was stored"
            )
        return self._store("set", key, value, expire_seconds)

    def _store(
        self, op: str, key: str, value: str, expire_seconds: int | None
    ) -> Command[None]:
        name = self._name(op, key)
        if expire_seconds is not None and not is_seconds(expire_seconds):
            raise bad_seconds(op, key, "expire_seconds", expire_seconds)
        return Command(op, key, True, "set", (name, value, expire_seconds), _none)

    def _delete(self, key: str) -> Command[bool]:
        return Command("delete", key, True, "delete", (self._name("delete", key),), bool)

    def _incr(self, key: str) -> Command[int]:
        return Command("incr", key, False, "incr", (self._name("incr", key),), _same)

    def _expire(self, key: str, seconds: int) -> Command[bool]:
        name = self._name("expire", key)
        if not is_seconds(seconds):
            raise bad_seconds("expire", key, "seconds", seconds)
        return Command("expire", key, True, "expire", (name, seconds), bool)

    def _ttl(self, key: str) -> Command[int]:
        return Command("ttl", key, True, "ttl", (self._name("ttl", key),), _same)

    def _exists(self, key: str) -> Command[bool]:
        return Command("exists", key, True, "exists", (self._name("exists", key),), bool)

    def _get_json(self, key: str) -> Command[Any]:
        name = self._name("get_json", key)
        return Command("get_json", key, True, "get", (name,), functools.partial(decode_json, key))

    def _set_json(
        self, key: str, value: JSONValue, expire_seconds: int | None
    ) -> Command[None]:
        return self._store("set_json", key, encode_json(key, value), expire_seconds)

    def _hit(self, key: str, window_seconds: int) -> Command[int]:
        name = self._name("hit", key)
        if not is_seconds(window_seconds):
            raise bad_seconds("hit", key, "window_seconds", window_seconds)
        return Command("hit", key, False, "hit", (name, window_seconds), _same)

    def _health(self) -> Command[bool]:
        return Command("health_check", None, True, "ping", (), _true)


def _none(reply: Any) -> None:
    return None


def _connection_kwargs(client: Any) -> dict[str, Any]:
    if hasattr(client, "get_connection_kwargs"):
        return cast(dict[str, Any], client.get_connection_kwargs())
    return cast(dict[str, Any], client.connection_pool.connection_kwargs)

