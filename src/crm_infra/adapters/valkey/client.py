"""The Valkey adapter: :class:`ValkeyClient`, the :class:`~crm_infra.ports.KeyValueStore` port
on redis-py, for one server, a Sentinel-managed primary or a Valkey Cluster (the URL says which:
see :mod:`crm_infra.adapters.valkey.topology`).

Errors (every redis-py exception is translated in one place,
:class:`~crm_infra.adapters.valkey.protocol.Boundary`)::

    KeyValueStoreError
    └── ValkeyError                      also: authentication refused, client closed, other
        ├── ValkeyInputError             (KeyValueStoreInputError, ValueError) bad arguments
        ├── ValkeyDataError              (KeyValueStoreDataError) stored value of the wrong shape
        └── ValkeyUnavailableError       (KeyValueStoreUnavailableError) unreachable, timed out

Each message names the operation, the key and the endpoint that failed: the server, the
cluster node of the key's slot, or the Sentinel-managed primary (or the Sentinels, when none is
known).

Time: each call has a total budget (``timeout``, 5 s by default). A connection that cannot be
made gives up after ``connect_timeout`` (1 s), a server that stops answering after
``socket_timeout`` (2 s). Idempotent commands are retried with exponential backoff on connection
errors and timeouts, but only while a whole further attempt still fits in the budget. ``incr``
and ``hit`` are retried only after a failure that proves they never ran (NOSCRIPT, READONLY,
CLUSTERDOWN, a connection that could not be made): once the command may have reached the
server, sending it again can count twice. redis-py's own retry layer is switched off for the
same reason (redis-py 8 retries every command, INCR included, by default).

The decisions (checks, script, retry rules, translation) live in
:mod:`crm_infra.adapters.valkey.protocol`, shared with the async twin; this module only calls.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, cast

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from crm_infra.adapters.valkey.errors import (
    ValkeyDataError,
    ValkeyError,
    ValkeyInputError,
    ValkeyUnavailableError,
)
from crm_infra.adapters.valkey.protocol import (
    DEFAULT_BACKOFF,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RETRIES,
    DEFAULT_SOCKET_TIMEOUT,
    DEFAULT_TIMEOUT,
    HIT_SCRIPT,
    HIT_SHA,
    MAX_EXPIRE_SECONDS,
    VENDOR_ERRORS,
    Boundary,
    ClosedClient,
    RetryPolicy,
    bad_seconds,
    call_sync,
    decode_json,
    encode_json,
    is_seconds,
    positive_seconds,
)
from crm_infra.adapters.valkey.telemetry import CALL, pool_stats
from crm_infra.adapters.valkey.topology import (
    EndpointFor,
    SyncTransport,
    connect_sync,
    endpoint_of_client,
    parse_url,
)
from crm_infra.errors import ConfigError
from crm_infra.pool_stats import PoolStats
from crm_infra.ports import JSONValue
from crm_infra.redaction import raise_sanitized, redact_url
from crm_infra.telemetry import traced, watch_pools

__all__ = [
    "MAX_EXPIRE_SECONDS",
    "ValkeyClient",
    "ValkeyDataError",
    "ValkeyError",
    "ValkeyInputError",
    "ValkeyUnavailableError",
    "redact_url",
]

_PRIMARIES: Final = "primaries"  # RedisCluster's target_nodes flag


class ValkeyClient:
    """The :class:`~crm_infra.ports.KeyValueStore` port on Valkey (or Redis), via redis-py.

    Thread-safe (redis-py's connection pools). A context manager: ``with ValkeyClient(url) as
    kv:`` closes it on exit. Every key is stored as ``key_prefix + key``; messages and return
    values use the caller's key. Each call touches one key, so on a cluster each call goes to
    the one node of that key's slot.
    """

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
                ``redis.cluster.RedisCluster`` built with ``decode_responses=True``. Its own
                timeouts apply (the budget below holds only when they are set), and its
                redis-py retries are switched off, because a retried INCR can count twice.
                It is not closed by :meth:`close`: its owner closes it.
            key_prefix: prepended to every key (a namespace, e.g. ``"crm:"``).
            connect_timeout: seconds to establish a connection.
            socket_timeout: seconds to wait for any one reply.
            timeout: total seconds one call may take, retries included; must cover
                ``connect_timeout + socket_timeout``.
            retries: further attempts for idempotent commands after a connection error or
                timeout (for ``incr`` and ``hit`` only when the command cannot have run).
            backoff: seconds before the first retry; doubles per retry, capped at 0.5 s.
            max_connections: the pool's limit (per node on a cluster; None: redis-py's
                default).
            check_connection: ping once now (every primary, on a cluster), so a wrong URL
                fails at start-up. A cluster client reads the slot map at construction
                whatever this says.
            close_client: :meth:`close` closes the given ``client`` too (for a client built
                for this store alone).
            endpoint: what messages call the server of a given ``client`` (default: its
                host and port, the cluster node or the Sentinel-managed primary).

        Raises:
            ConfigError: the arguments cannot work (both or neither of URL and client, a bad
                URL, timeouts that do not fit the budget).
            ValkeyError: ``check_connection`` is set and the ping failed (a
                ``ValkeyUnavailableError`` when the server is unreachable), or the cluster's
                slot map could not be read.
        """
        if (connection_url is None) == (client is None):
            raise ConfigError("ValkeyClient: give exactly one of connection_url and client")
        if not isinstance(key_prefix, str):
            raise ConfigError(f"ValkeyClient: key_prefix must be a str, got {key_prefix!r}")
        timeout_s = positive_seconds("timeout", timeout)
        backoff_s = positive_seconds("backoff", backoff)
        if type(retries) is not int or retries < 0:
            raise ConfigError(f"ValkeyClient: retries must be an int >= 0, got {retries!r}")
        self._prefix = key_prefix
        self._endpoint_of: EndpointFor = lambda exc, name: "the server"
        if connection_url is not None:
            self._target = f"url={redact_url(connection_url)!r}"
            transport = self._transport_from_url(
                connection_url,
                positive_seconds("connect_timeout", connect_timeout),
                positive_seconds("socket_timeout", socket_timeout),
                max_connections,
            )
        else:
            self._target = f"client={type(client).__name__}"
            assert client is not None
            client.set_retry(Retry(NoBackoff(), 0))
            transport = SyncTransport(
                client,
                endpoint_of_client(client, endpoint),
                client.close if close_client else (lambda: None),
            )
        self._close_transport = transport.close
        self._endpoint_of = transport.endpoint_for
        if transport.client.get_encoder().decode_responses is not True:
            transport.close()
            raise ConfigError(
                "ValkeyClient: the redis client must be built with decode_responses=True, "
                "so that values come back as str"
            )
        # The worst one attempt can take; without both timeouts it has no bound, and then
        # a retry could break the budget, so none is made.
        kwargs = _connection_kwargs(transport.client)
        connect_s = kwargs.get("socket_connect_timeout")
        reply_s = kwargs.get("socket_timeout")
        attempt_s = math.inf if connect_s is None or reply_s is None else connect_s + reply_s
        if connection_url is not None and attempt_s > timeout_s:
            transport.close()
            raise ConfigError(
                f"ValkeyClient: connect_timeout + socket_timeout ({attempt_s:g} s) exceed "
                f"the per-call budget timeout ({timeout_s:g} s)"
            )
        self._policy = RetryPolicy(retries, backoff_s, attempt_s, timeout_s)
        self._client: Any = transport.client
        watch_pools(self)
        cluster = hasattr(transport.client, "nodes_manager")
        self._ping: Callable[[], Any] = (
            (lambda: self._client.ping(target_nodes=_PRIMARIES)) if cluster
            else (lambda: self._client.ping())  # noqa: PLW0108 - late-bound: close() swaps it
        )
        if check_connection:
            try:
                self.health_check()
            except ValkeyError:
                self.close()
                raise

    def _transport_from_url(
        self, url: str, connect_s: float, reply_s: float, max_connections: int | None
    ) -> SyncTransport:
        shown = redact_url(url)
        topology = parse_url(url, shown)
        if topology is not None:
            # A cluster reads its slot map now: name the start nodes if that fails.
            self._endpoint_of = lambda exc, name: (
                f"{topology.nodes_text} ({topology.kind} start nodes)"
            )
            with Boundary(self, "connect", None):
                return connect_sync(
                    topology, connect_s=connect_s, reply_s=reply_s,
                    max_connections=max_connections,
                )
        try:
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=connect_s,
                socket_timeout=reply_s,
                retry=Retry(NoBackoff(), 0),  # retries are ours: idempotent commands only
                max_connections=max_connections,
            )
        except ValueError as exc:
            # redis-py's message quotes pieces of the URL (the "port" of an unencoded
            # password with a '/' is the password itself), so it is shown only without one.
            detail = str(exc) if shown == url else (
                "check the scheme, host, port and database number, and percent-encode any "
                "'/', '?', '#' or '@' in the password"
            )
            raise_sanitized(
                ConfigError(f"ValkeyClient: invalid connection URL {shown!r}: {detail}"), None
            )
        return SyncTransport(client, endpoint_of_client(client, None), client.close)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._target}, key_prefix={self._prefix!r})"

    def __enter__(self) -> ValkeyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (of a client this adapter built); later calls raise."""
        if isinstance(self._client, ClosedClient):
            return
        self._client = ClosedClient()
        self._close_transport()

    def pool_stats(self) -> dict[str, PoolStats]:
        """Return the state of the connection pools (one per node on a cluster), by name."""
        return pool_stats(self)

    # --- internals -------------------------------------------------------------------------

    def _endpoint_for(self, exc: BaseException, key: str | None) -> str:
        return self._endpoint_of(exc, None if key is None else self._prefix + key)

    def _name(self, op: str, key: str) -> str:
        if type(key) is str:
            return self._prefix + key
        raise ValkeyInputError(f"Valkey {op}: key must be a str, got {type(key).__name__}")

    @traced(CALL)
    def _call(
        self, op: str, key: str | None, idempotent: bool, method: Callable[..., Any], *args: Any
    ) -> Any:
        """Call ``method(*args)``; retry what :func:`~.protocol.retryable` allows, in budget."""
        with Boundary(self, op, key):
            started = _monotonic()
            try:
                return method(*args)
            except VENDOR_ERRORS as exc:
                return call_sync(
                    self._policy, idempotent, method, args, started=started, error=exc
                )

    def _hit_once(self, name: str, window_seconds: int) -> int:
        run = self._client.execute_command
        try:
            return cast(int, run("EVALSHA", HIT_SHA, 1, name, window_seconds))
        except NoScriptError:
            # The script did not run (a new, restarted or promoted server, or SCRIPT FLUSH):
            # EVAL sends the body, loads it on the node of this key, and runs it once.
            return cast(int, run("EVAL", HIT_SCRIPT, 1, name, window_seconds))

    # --- the port --------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """Return the value at ``key``, or None when the key does not exist.

        Raises:
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
        """
        name = self._name("get", key)
        return cast(str | None, self._call("get", key, True, self._client.get, name))

    def set(self, key: str, value: str, expire_seconds: int | None = None) -> None:
        """Store ``value`` at ``key``, expiring after ``expire_seconds`` (None: never).

        Raises:
            ValkeyInputError: ``value`` is not a str, or ``expire_seconds`` is not a positive
                int (0, negative and bool included); nothing is stored.
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
        """
        if type(value) is not str:
            raise ValkeyInputError(
                f"Valkey set of key {key!r}: value must be a str, got {type(value).__name__} "
                "(use set_json for structured values); nothing was stored"
            )
        self._set("set", key, value, expire_seconds)

    def _set(self, op: str, key: str, value: str, expire_seconds: int | None) -> None:
        name = self._name(op, key)
        if expire_seconds is not None and not is_seconds(expire_seconds):
            raise bad_seconds(op, key, "expire_seconds", expire_seconds)
        self._call(op, key, True, self._client.set, name, value, expire_seconds)

    def delete(self, key: str) -> bool:
        """Delete ``key``; return True when it existed.

        After a retried attempt the answer may be False for a key the lost attempt deleted.
        """
        name = self._name("delete", key)
        return bool(self._call("delete", key, True, self._client.delete, name))

    def incr(self, key: str) -> int:
        """Add one to the integer at ``key`` (missing counts as 0); return the new value.

        Retried only after a failure that proves the INCR never ran: after a timeout it may
        have run, and another would count twice.

        Raises:
            ValkeyDataError: the value at ``key`` is not an integer (or would overflow).
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
        """
        name = self._name("incr", key)
        return cast(int, self._call("incr", key, False, self._client.incr, name))

    def expire(self, key: str, seconds: int) -> bool:
        """Set ``key`` to expire in ``seconds``; return False when the key does not exist.

        Raises:
            ValkeyInputError: ``seconds`` is not a positive int up to ``MAX_EXPIRE_SECONDS``;
                nothing is changed.
        """
        name = self._name("expire", key)
        if not is_seconds(seconds):
            raise bad_seconds("expire", key, "seconds", seconds)
        return bool(self._call("expire", key, True, self._client.expire, name, seconds))

    def ttl(self, key: str) -> int:
        """Return the seconds left: -2 when the key does not exist, -1 when it never expires."""
        name = self._name("ttl", key)
        return cast(int, self._call("ttl", key, True, self._client.ttl, name))

    def exists(self, key: str) -> bool:
        """Return True when ``key`` exists."""
        name = self._name("exists", key)
        return bool(self._call("exists", key, True, self._client.exists, name))

    def get_json(self, key: str) -> Any:
        """Return the JSON value at ``key`` decoded, or None when the key does not exist.

        Raises:
            ValkeyDataError: the stored value is not JSON; the message names the key and the
                position of the problem, never the value.
        """
        name = self._name("get_json", key)
        raw = self._call("get_json", key, True, self._client.get, name)
        return decode_json(key, raw)

    def set_json(self, key: str, value: JSONValue, expire_seconds: int | None = None) -> None:
        """Store ``value`` as JSON at ``key``, expiring after ``expire_seconds`` (None: never).

        Tuples come back as lists and non-str dict keys as strings, as :func:`json.dumps`
        does; NaN and infinities are refused, since JSON has no such numbers.

        Raises:
            ValkeyInputError: JSON cannot hold ``value`` (a set, an object, NaN, a cycle), or
                ``expire_seconds`` is not a positive int; nothing is stored.
        """
        self._set("set_json", key, encode_json(key, value), expire_seconds)

    def hit(self, key: str, window_seconds: int) -> int:
        """Count one hit in the fixed window at ``key``; return the count in this window.

        One round trip and atomic (a server-side script, on the node of the key's slot): the
        first hit creates the counter with its expiry, so a crash cannot leave a counter that
        never expires. A counter that ``incr`` created without expiry gets one too. Retried
        only after a failure that proves the script never ran: otherwise it could count
        twice.

        Raises:
            ValkeyInputError: ``window_seconds`` is not a positive int; nothing is counted.
            ValkeyDataError: ``key`` holds something other than an integer.
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
        """
        name = self._name("hit", key)
        if not is_seconds(window_seconds):
            raise bad_seconds("hit", key, "window_seconds", window_seconds)
        return cast(int, self._call("hit", key, False, self._hit_once, name, window_seconds))

    def health_check(self) -> bool:
        """Return True when Valkey answers PING (every primary, on a cluster).

        Raises:
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
            ValkeyError: any other failure (e.g. the credentials were refused).
        """
        self._call("health_check", None, True, self._ping)
        return True


def _connection_kwargs(client: Any) -> dict[str, Any]:
    if hasattr(client, "get_connection_kwargs"):
        return cast(dict[str, Any], client.get_connection_kwargs())
    return cast(dict[str, Any], client.connection_pool.connection_kwargs)


_monotonic = time.monotonic
