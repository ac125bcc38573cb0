"""The Valkey adapter: :class:`ValkeyClient`, the :class:`~crm_infra.ports.KeyValueStore` port
on redis-py.

Errors (every redis-py exception is translated in one place, :class:`_Boundary`)::

    KeyValueStoreError
    └── ValkeyError                      also: authentication refused, client closed, other
        ├── ValkeyInputError             (KeyValueStoreInputError, ValueError) bad arguments
        ├── ValkeyDataError              (KeyValueStoreDataError) stored value of the wrong shape
        └── ValkeyUnavailableError       (KeyValueStoreUnavailableError) unreachable, timed out

Time: each call has a total budget (``timeout``, 5 s by default). A connection that cannot be
made gives up after ``connect_timeout`` (1 s), a server that stops answering after
``socket_timeout`` (2 s). Idempotent commands are retried with exponential backoff on connection
errors and timeouts, but only while a whole further attempt still fits in the budget. ``incr``
and ``hit`` are never retried: once the command may have reached the server, sending it again
can count twice. redis-py's own retry layer is switched off for the same reason (redis-py 8
retries every command, INCR included, up to 10 times by default).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, cast

import redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.retry import Retry

from crm_infra.errors import (
    ConfigError,
    KeyValueStoreDataError,
    KeyValueStoreError,
    KeyValueStoreInputError,
    KeyValueStoreUnavailableError,
)
from crm_infra.ports import JSONValue
from crm_infra.redaction import raise_sanitized, redact_url, sanitized_copy

__all__ = [
    "ValkeyClient",
    "ValkeyDataError",
    "ValkeyError",
    "ValkeyInputError",
    "ValkeyUnavailableError",
    "redact_url",
]


class ValkeyError(KeyValueStoreError):
    """A Valkey operation failed; the message names the operation and the key."""


class ValkeyInputError(ValkeyError, KeyValueStoreInputError):
    """Bad arguments, or a value JSON or UTF-8 cannot hold; nothing was sent or stored."""


class ValkeyDataError(ValkeyError, KeyValueStoreDataError):
    """The stored value has the wrong shape (not an integer, not JSON, not UTF-8 text)."""


class ValkeyUnavailableError(ValkeyError, KeyValueStoreUnavailableError):
    """Valkey could not be reached, or did not answer within the time budget."""


# One round trip, atomic: the first hit of a window creates the counter and its expiry together.
# EXPIRE ... NX also gives a TTL to a counter that a plain INCR created without one, so after
# hit() the key always expires; it never extends a window that is already running.
_HIT_SCRIPT: Final = """\
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1], 'NX')
return count
"""
_HIT_SHA: Final = hashlib.sha1(_HIT_SCRIPT.encode(), usedforsecurity=False).hexdigest()

DEFAULT_CONNECT_TIMEOUT: Final = 1.0
DEFAULT_SOCKET_TIMEOUT: Final = 2.0
DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_RETRIES: Final = 2
DEFAULT_BACKOFF: Final = 0.05
_BACKOFF_CAP: Final = 0.5
MAX_EXPIRE_SECONDS: Final = 2**31 - 1
"""The longest expiry or window accepted (about 68 years)."""

# Errors that say "the transport failed": worth another attempt for idempotent commands.
_TRANSIENT: Final = (redis.ConnectionError, redis.TimeoutError)
# ConnectionError subclasses that another attempt cannot fix.
_PERMANENT: Final = (AuthenticationError, AuthorizationError, NoPermissionError)
_monotonic = time.monotonic


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"ValkeyClient: {name} must be a number of seconds, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"ValkeyClient: {name} must be positive and finite, got {value!r}")
    return float(value)


def _is_seconds(value: object) -> bool:
    # Bounded: Valkey refuses expiries past its clock's range only after hit's INCR has run,
    # which would leave a counter without expiry.
    return type(value) is int and 0 < value <= MAX_EXPIRE_SECONDS


def _bad_seconds(op: str, key: str, arg: str, value: object) -> ValkeyInputError:
    return ValkeyInputError(
        f"Valkey {op} of key {key!r}: {arg} must be a positive int of seconds up to "
        f"{MAX_EXPIRE_SECONDS}, got {value!r}; nothing was changed"
    )


class _ClientClosed(RedisError):
    """Raised by the stand-in client after close()."""


class _ClosedClient:
    """Takes the redis client's place after close(), so the hot path needs no extra check."""

    def __getattr__(self, name: str) -> Any:
        def closed(*args: Any, **kwargs: Any) -> Any:
            raise _ClientClosed(name)

        return closed


class _Boundary:
    """The one place where redis-py (and codec) exceptions become ValkeyErrors."""

    __slots__ = ("_client", "_key", "_op")

    def __init__(self, client: ValkeyClient, op: str, key: str | None) -> None:
        self._client = client
        self._op = op
        self._key = key

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, RedisError):
            raise_sanitized(self._translate(exc), sanitized_copy(exc))
        if isinstance(exc, UnicodeError):
            # The codec error holds the whole value (.object); do not chain it.
            where = self._where()
            if isinstance(exc, UnicodeDecodeError):
                raise_sanitized(
                    ValkeyDataError(f"{where} failed: the stored value is not UTF-8 text"), None
                )
            raise_sanitized(
                ValkeyInputError(
                    f"{where} failed: the value cannot be encoded as UTF-8 (lone surrogate?)"
                ),
                None,
            )

    def _where(self) -> str:
        if self._key is None:
            return f"Valkey {self._op}"
        return f"Valkey {self._op} of key {self._key!r}"

    def _translate(self, exc: RedisError) -> ValkeyError:
        endpoint = self._client._endpoint
        cls: type[ValkeyError] = ValkeyError
        why = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, _ClientClosed):
            why = "the client is closed"
        elif isinstance(exc, _PERMANENT):
            why = (
                f"Valkey at {endpoint} refused the credentials; check the user and password "
                f"in the connection URL ({type(exc).__name__})"
            )
        elif isinstance(exc, redis.TimeoutError):
            cls = ValkeyUnavailableError
            why = f"Valkey at {endpoint} did not answer in time ({why})"
        elif isinstance(exc, redis.ConnectionError | ReadOnlyError):
            cls, why = ValkeyUnavailableError, f"Valkey at {endpoint} is unavailable ({why})"
        elif isinstance(exc, ResponseError):
            message = str(exc)
            if "not an integer" in message or "overflow" in message:
                cls, why = ValkeyDataError, "the stored value is not an integer in range"
            elif message.startswith("WRONGTYPE"):
                cls, why = ValkeyDataError, "the key holds a non-string type"
        elif isinstance(exc, redis.DataError):
            cls = ValkeyInputError
        return cls(f"{self._where()} failed: {why}")


class ValkeyClient:
    """The :class:`~crm_infra.ports.KeyValueStore` port on Valkey (or Redis), via redis-py.

    Thread-safe (redis-py's connection pool). A context manager: ``with ValkeyClient(url) as kv:``
    closes it on exit. Every key is stored as ``key_prefix + key``; messages and return values
    use the caller's key.
    """

    def __init__(
        self,
        connection_url: str | None = None,
        *,
        client: redis.Redis | None = None,
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
            connection_url: ``redis://[[user]:password@]host:port/db``, ``rediss://...`` or
                ``unix://...``. Give this or ``client``, not both.
            client: a ready ``redis.Redis`` built with ``decode_responses=True``. Its own
                timeouts apply (the budget below holds only when they are set), and its
                redis-py retries are switched off, because a retried INCR can count twice.
                It is not closed by :meth:`close`: its owner closes it.
            key_prefix: prepended to every key (a namespace, e.g. ``"crm:"``).
            connect_timeout: seconds to establish a connection.
            socket_timeout: seconds to wait for any one reply.
            timeout: total seconds one call may take, retries included; must cover
                ``connect_timeout + socket_timeout``.
            retries: further attempts for idempotent commands after a connection error or
                timeout (never for ``incr`` and ``hit``).
            backoff: seconds before the first retry; doubles per retry, capped at 0.5 s.
            max_connections: the pool's limit (None: redis-py's default).
            check_connection: ping once now, so a wrong URL fails at start-up.
            close_client: :meth:`close` closes the given ``client`` too (for a client built
                for this store alone).
            endpoint: what messages call the server of a given ``client`` (default its
                host and port, or its socket path).

        Raises:
            ConfigError: the arguments cannot work (both or neither of URL and client, a bad
                URL, timeouts that do not fit the budget).
            ValkeyError: ``check_connection`` is set and the ping failed (a
                ``ValkeyUnavailableError`` when the server is unreachable).
        """
        if (connection_url is None) == (client is None):
            raise ConfigError("ValkeyClient: give exactly one of connection_url and client")
        if not isinstance(key_prefix, str):
            raise ConfigError(f"ValkeyClient: key_prefix must be a str, got {key_prefix!r}")
        self._timeout = _positive_seconds("timeout", timeout)
        self._backoff = _positive_seconds("backoff", backoff)
        if type(retries) is not int or retries < 0:
            raise ConfigError(f"ValkeyClient: retries must be an int >= 0, got {retries!r}")
        self._retries = retries
        self._prefix = key_prefix
        self._owns_client = client is None or close_client
        if connection_url is not None:
            self._target = f"url={redact_url(connection_url)!r}"
            client = self._client_from_url(
                connection_url,
                _positive_seconds("connect_timeout", connect_timeout),
                _positive_seconds("socket_timeout", socket_timeout),
                max_connections,
            )
        else:
            assert client is not None
            self._target = f"client={type(client).__name__}"
            client.set_retry(Retry(NoBackoff(), 0))
        kwargs = client.connection_pool.connection_kwargs
        if kwargs.get("decode_responses") is not True:
            if self._owns_client:
                client.close()
            raise ConfigError(
                "ValkeyClient: the redis client must be built with decode_responses=True, "
                "so that values come back as str"
            )
        self._endpoint = endpoint or (
            kwargs["path"] if "path" in kwargs
            else f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        )
        # The worst one attempt can take; without both timeouts it has no bound, and then
        # a retry could break the budget, so none is made.
        connect_s = kwargs.get("socket_connect_timeout")
        reply_s = kwargs.get("socket_timeout")
        self._attempt_s = math.inf if connect_s is None or reply_s is None else connect_s + reply_s
        if connection_url is not None and self._attempt_s > self._timeout:
            client.close()
            raise ConfigError(
                f"ValkeyClient: connect_timeout + socket_timeout ({self._attempt_s:g} s) exceed "
                f"the per-call budget timeout ({self._timeout:g} s)"
            )
        self._client: redis.Redis = client
        if check_connection:
            try:
                self.health_check()
            except ValkeyError:
                self.close()
                raise

    @staticmethod
    def _client_from_url(
        url: str, connect_s: float, reply_s: float, max_connections: int | None
    ) -> redis.Redis:
        try:
            return redis.Redis.from_url(
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
            detail = str(exc) if redact_url(url) == url else (
                "check the scheme, host, port and database number, and percent-encode any "
                "'/', '?', '#' or '@' in the password"
            )
            raise_sanitized(
                ConfigError(f"ValkeyClient: invalid connection URL {redact_url(url)!r}: {detail}"),
                None,
            )

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
        client = self._client
        if isinstance(client, _ClosedClient):
            return
        self._client = cast(redis.Redis, _ClosedClient())
        if self._owns_client:
            client.close()

    # --- internals -------------------------------------------------------------------------

    def _name(self, op: str, key: str) -> str:
        if type(key) is str:
            return self._prefix + key
        raise ValkeyInputError(f"Valkey {op}: key must be a str, got {type(key).__name__}")

    def _idempotent(self, op: str, key: str | None, method: Any, *args: Any) -> Any:
        """Call ``method(*args)``; retry transport failures while the budget allows."""
        with _Boundary(self, op, key):
            started = _monotonic()
            try:
                return method(*args)
            except _TRANSIENT as exc:
                return self._retry(started, exc, method, args)

    def _retry(
        self, started: float, error: RedisError, method: Any, args: tuple[Any, ...]
    ) -> Any:
        delay = self._backoff
        for _ in range(self._retries):
            if isinstance(error, _PERMANENT):
                break
            # Jittered so that many clients do not reconnect in lockstep (not security).
            pause = delay * (0.5 + random.random() / 2)  # noqa: S311
            if _monotonic() - started + pause + self._attempt_s > self._timeout:
                break  # another attempt could overrun the budget
            time.sleep(pause)
            try:
                return method(*args)
            except _TRANSIENT as exc:
                error = exc
            delay = min(delay * 2, _BACKOFF_CAP)
        raise error

    # --- the port --------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """Return the value at ``key``, or None when the key does not exist.

        Raises:
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
        """
        return self._get("get", key)

    def _get(self, op: str, key: str) -> str | None:
        name = self._name(op, key)
        return cast(str | None, self._idempotent(op, key, self._client.get, name))

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
        if expire_seconds is not None and not _is_seconds(expire_seconds):
            raise _bad_seconds(op, key, "expire_seconds", expire_seconds)
        self._idempotent(op, key, self._client.set, name, value, expire_seconds)

    def delete(self, key: str) -> bool:
        """Delete ``key``; return True when it existed.

        After a retried attempt the answer may be False for a key the lost attempt deleted.
        """
        name = self._name("delete", key)
        return bool(self._idempotent("delete", key, self._client.delete, name))

    def incr(self, key: str) -> int:
        """Add one to the integer at ``key`` (missing counts as 0); return the new value.

        Never retried: after a timeout the INCR may have run, and another would count twice.

        Raises:
            ValkeyDataError: the value at ``key`` is not an integer (or would overflow).
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
        """
        name = self._name("incr", key)
        with _Boundary(self, "incr", key):
            return self._client.incr(name)

    def expire(self, key: str, seconds: int) -> bool:
        """Set ``key`` to expire in ``seconds``; return False when the key does not exist.

        Raises:
            ValkeyInputError: ``seconds`` is not a positive int up to ``MAX_EXPIRE_SECONDS``;
                nothing is changed.
        """
        name = self._name("expire", key)
        if not _is_seconds(seconds):
            raise _bad_seconds("expire", key, "seconds", seconds)
        return bool(self._idempotent("expire", key, self._client.expire, name, seconds))

    def ttl(self, key: str) -> int:
        """Return the seconds left: -2 when the key does not exist, -1 when it never expires."""
        name = self._name("ttl", key)
        return cast(int, self._idempotent("ttl", key, self._client.ttl, name))

    def exists(self, key: str) -> bool:
        """Return True when ``key`` exists."""
        name = self._name("exists", key)
        return bool(self._idempotent("exists", key, self._client.exists, name))

    def get_json(self, key: str) -> Any:
        """Return the JSON value at ``key`` decoded, or None when the key does not exist.

        Raises:
            ValkeyDataError: the stored value is not JSON; the message names the key and the
                position of the problem, never the value.
        """
        raw = self._get("get_json", key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            # Not chained: the decode error carries the whole stored document (.doc).
            raise_sanitized(
                ValkeyDataError(
                    f"Valkey get_json of key {key!r} failed: the stored value is not JSON "
                    f"({exc.msg} at line {exc.lineno} column {exc.colno})"
                ),
                None,
            )

    def set_json(self, key: str, value: JSONValue, expire_seconds: int | None = None) -> None:
        """Store ``value`` as JSON at ``key``, expiring after ``expire_seconds`` (None: never).

        Tuples come back as lists and non-str dict keys as strings, as :func:`json.dumps`
        does; NaN and infinities are refused, since JSON has no such numbers.

        Raises:
            ValkeyInputError: JSON cannot hold ``value`` (a set, an object, NaN, a cycle), or
                ``expire_seconds`` is not a positive int; nothing is stored.
        """
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise_sanitized(
                ValkeyInputError(
                    f"Valkey set_json of key {key!r}: JSON cannot hold the value "
                    f"({type(exc).__name__}: {exc}); nothing was stored"
                ),
                None,
            )
        self._set("set_json", key, text, expire_seconds)

    def hit(self, key: str, window_seconds: int) -> int:
        """Count one hit in the fixed window at ``key``; return the count in this window.

        One round trip and atomic (a server-side script): the first hit creates the counter
        with its expiry, so a crash cannot leave a counter that never expires. A counter that
        ``incr`` created without expiry gets one too. Never retried after a failure that may
        have reached the server: that could count twice.

        Raises:
            ValkeyInputError: ``window_seconds`` is not a positive int; nothing is counted.
            ValkeyDataError: ``key`` holds something other than an integer.
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
        """
        name = self._name("hit", key)
        if not _is_seconds(window_seconds):
            raise _bad_seconds("hit", key, "window_seconds", window_seconds)
        # execute_command directly: evalsha() only adds two calls on the hot path.
        run: Callable[..., int] = self._client.execute_command
        with _Boundary(self, "hit", key):
            try:
                count = run("EVALSHA", _HIT_SHA, 1, name, window_seconds)
            except NoScriptError:
                # The script did not run (new or restarted server): loading it and
                # running it now cannot count twice.
                self._client.script_load(_HIT_SCRIPT)
                count = run("EVALSHA", _HIT_SHA, 1, name, window_seconds)
            return count

    def health_check(self) -> bool:
        """Return True when Valkey answers PING.

        Raises:
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
            ValkeyError: any other failure (e.g. the credentials were refused).
        """
        self._idempotent("health_check", None, self._client.ping)
        return True
