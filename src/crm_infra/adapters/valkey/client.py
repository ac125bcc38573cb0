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
:mod:`crm_infra.adapters.valkey.protocol`, and the constructor and every call's
:class:`~crm_infra.adapters.valkey.protocol.Command` in :mod:`crm_infra.adapters.valkey.base`,
shared with the asyncio twin; this module only calls.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, TypeVar

from redis.exceptions import NoScriptError

from crm_infra.adapters.valkey.base import ValkeyBase
from crm_infra.adapters.valkey.errors import (
    ValkeyDataError,
    ValkeyError,
    ValkeyInputError,
    ValkeyUnavailableError,
)
from crm_infra.adapters.valkey.protocol import (
    MAX_EXPIRE_SECONDS,
    VENDOR_ERRORS,
    Boundary,
    ClosedClient,
    Command,
    call_sync,
)
from crm_infra.adapters.valkey.telemetry import CALLS
from crm_infra.adapters.valkey.topology import Topology, Transport, connect_sync
from crm_infra.ports import JSONValue
from crm_infra.redaction import redact_url
from crm_infra.telemetry import traced

__all__ = [
    "MAX_EXPIRE_SECONDS",
    "ValkeyClient",
    "ValkeyDataError",
    "ValkeyError",
    "ValkeyInputError",
    "ValkeyUnavailableError",
    "redact_url",
]

T = TypeVar("T")


class ValkeyClient(ValkeyBase):
    """The :class:`~crm_infra.ports.KeyValueStore` port on Valkey (or Redis), via redis-py.

    Thread-safe (redis-py's connection pools). A context manager: ``with ValkeyClient(url) as
    kv:`` closes it on exit. Every key is stored as ``key_prefix + key``; messages and return
    values use the caller's key. Each call touches one key, so on a cluster each call goes to
    the one node of that key's slot. The arguments are :class:`ValkeyBase`'s.
    """

    def _constructed(self) -> None:
        if self._check_connection:
            try:
                self.health_check()
            except ValkeyError:
                self.close()
                raise

    def _connect(
        self, topology: Topology, connect_s: float, reply_s: float, limit: int | None
    ) -> Transport:
        return connect_sync(
            topology, connect_s=connect_s, reply_s=reply_s, max_connections=limit
        )

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

    # --- internals -------------------------------------------------------------------------

    def _call(self, command: Command[Any]) -> Any:
        """Send ``command``; retry what :func:`~.protocol.retryable` allows, in budget."""
        with Boundary(self, command.op, command.key):
            started = _monotonic()
            method = self._method(command.method)
            try:
                return method(*command.args)
            except VENDOR_ERRORS as exc:
                return call_sync(
                    self._policy, command.idempotent, method, command.args,
                    started=started, error=exc,
                )

    def _run(self, command: Command[T]) -> T:
        return command.finish(self._call(command))

    def _hit_once(self, name: str, window_seconds: int) -> Any:
        first, fallback = self._hit_commands(name, window_seconds)
        try:
            return self._client.execute_command(*first)
        except NoScriptError:
            # The script did not run (a new, restarted or promoted server, or SCRIPT FLUSH).
            return self._client.execute_command(*fallback)

    # --- the port --------------------------------------------------------------------------

    @traced(CALLS["get"])
    def get(self, key: str) -> str | None:
        """Return the value at ``key``, or None when the key does not exist.

        Raises:
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
        """
        return self._run(self._get(key))

    @traced(CALLS["set"])
    def set(self, key: str, value: str, expire_seconds: int | None = None) -> None:
        """Store ``value`` at ``key``, expiring after ``expire_seconds`` (None: never).

        Raises:
            ValkeyInputError: ``value`` is not a str, or ``expire_seconds`` is not a positive
                int (0, negative and bool included); nothing is stored.
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
        """
        self._run(self._set(key, value, expire_seconds))

    @traced(CALLS["delete"])
    def delete(self, key: str) -> bool:
        """Delete ``key``; return True when it existed.

        After a retried attempt the answer may be False for a key the lost attempt deleted.
        """
        return self._run(self._delete(key))

    @traced(CALLS["incr"])
    def incr(self, key: str) -> int:
        """Add one to the integer at ``key`` (missing counts as 0); return the new value.

        Retried only after a failure that proves the INCR never ran: after a timeout it may
        have run, and another would count twice.

        Raises:
            ValkeyDataError: the value at ``key`` is not an integer (or would overflow).
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
        """
        return self._run(self._incr(key))

    @traced(CALLS["expire"])
    def expire(self, key: str, seconds: int) -> bool:
        """Set ``key`` to expire in ``seconds``; return False when the key does not exist.

        Raises:
            ValkeyInputError: ``seconds`` is not a positive int up to ``MAX_EXPIRE_SECONDS``;
                nothing is changed.
        """
        return self._run(self._expire(key, seconds))

    @traced(CALLS["ttl"])
    def ttl(self, key: str) -> int:
        """Return the seconds left: -2 when the key does not exist, -1 when it never expires."""
        return self._run(self._ttl(key))

    @traced(CALLS["exists"])
    def exists(self, key: str) -> bool:
        """Return True when ``key`` exists."""
        return self._run(self._exists(key))

    @traced(CALLS["get_json"])
    def get_json(self, key: str) -> Any:
        """Return the JSON value at ``key`` decoded, or None when the key does not exist.

        Raises:
            ValkeyDataError: the stored value is not JSON; the message names the key and the
                position of the problem, never the value.
        """
        return self._run(self._get_json(key))

    @traced(CALLS["set_json"])
    def set_json(self, key: str, value: JSONValue, expire_seconds: int | None = None) -> None:
        """Store ``value`` as JSON at ``key``, expiring after ``expire_seconds`` (None: never).

        Tuples come back as lists and non-str dict keys as strings, as :func:`json.dumps`
        does; NaN and infinities are refused, since JSON has no such numbers.

        Raises:
            ValkeyInputError: JSON cannot hold ``value`` (a set, an object, NaN, a cycle), or
                ``expire_seconds`` is not a positive int; nothing is stored.
        """
        self._run(self._set_json(key, value, expire_seconds))

    @traced(CALLS["hit"])
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
        return self._run(self._hit(key, window_seconds))

    @traced(CALLS["health_check"])
    def health_check(self) -> bool:
        """Return True when Valkey answers PING (every primary, on a cluster).

        Raises:
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
            ValkeyError: any other failure (e.g. the credentials were refused).
        """
        return self._run(self._health())


_monotonic = time.monotonic
