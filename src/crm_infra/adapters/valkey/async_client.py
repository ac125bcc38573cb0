"""The asyncio Valkey adapter: :class:`AsyncValkeyClient`, the
:class:`~crm_infra.ports.AsyncKeyValueStore` port on ``redis.asyncio``.

The twin of :class:`~crm_infra.adapters.valkey.ValkeyClient`: the same constructor arguments,
checks, rate-limit script, retry rules, budget and errors (all in
:mod:`~crm_infra.adapters.valkey.base` and :mod:`~crm_infra.adapters.valkey.protocol`); it only
awaits where the sync client calls.

Two things are the asyncio client's own:

- The pool is bounded and waits: at most ``max_connections`` calls (50 by default) are on the
  wire at once, and further calls wait for a free connection instead of failing with redis-py's
  "too many connections". The wait is not part of a call's budget; wrap the call in
  ``asyncio.timeout`` to bound it. ``pool_stats()`` counts the queue (calls waiting now, the
  seconds waited in all, the calls made) on the one pool of a server or a Sentinel-managed
  primary; on a cluster the slots are shared by every node and no node's pool counts them.
- Cancellation (``task.cancel()``, ``asyncio.timeout``) at any await point leaves nothing behind:
  redis-py closes a connection whose reply was not read before it goes back to the pool, the
  slot is released, and a cancelled ``incr`` or ``hit`` is never sent again (it counted once
  or not at all).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar, Final, TypeVar

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from crm_infra._twins import OpenedByAsyncWith
from crm_infra.adapters.valkey.base import ValkeyBase
from crm_infra.adapters.valkey.protocol import (
    VENDOR_ERRORS,
    Boundary,
    ClosedClient,
    Command,
    call_async,
)
from crm_infra.adapters.valkey.telemetry import CALLS, Queue
from crm_infra.adapters.valkey.topology import Topology, Transport, connect_async
from crm_infra.ports import JSONValue
from crm_infra.telemetry import traced

__all__ = ["DEFAULT_ASYNC_MAX_CONNECTIONS", "AsyncValkeyClient"]

DEFAULT_ASYNC_MAX_CONNECTIONS: Final = 50
"""How many calls of one :class:`AsyncValkeyClient` are on the wire at once by default."""

T = TypeVar("T")


class AsyncValkeyClient(OpenedByAsyncWith, ValkeyBase):
    """The :class:`~crm_infra.ports.AsyncKeyValueStore` port on Valkey, via ``redis.asyncio``.

    The arguments, errors and guarantees are :class:`~crm_infra.adapters.valkey.ValkeyClient`'s;
    ``client`` is a ``redis.asyncio`` client. ``async with AsyncValkeyClient(url) as kv:`` pings
    (when ``check_connection``) and closes on exit; without it, calls connect on first use and
    :meth:`close` closes. One client serves one event loop.
    """

    _redis_class: ClassVar[Any] = aredis.Redis

    # The queue in front of the slots, for pool_stats(): calls waiting now, seconds waited in
    # all, calls made. A few additions per call; the clock is read only by a call that has to
    # wait.
    _waiting: int = 0
    _wait_seconds: float = 0.0
    _requests: int = 0

    # --- the hooks --------------------------------------------------------------------------

    def _constructed(self) -> None:
        self._slots = asyncio.Semaphore(self._pool_limit(self._limit))

    def _queue(self) -> Queue:
        return (self._waiting, self._wait_seconds, self._requests)

    def _pool_limit(self, max_connections: int | None) -> int:
        return DEFAULT_ASYNC_MAX_CONNECTIONS if max_connections is None else max_connections

    def _no_retry(self) -> Any:
        return Retry(NoBackoff(), 0)

    async def _nothing_to_close(self) -> None:
        return None

    def _closer(self, client: Any) -> Any:
        return client.aclose

    def _abandon(self, transport: Transport) -> None:
        # Built a moment ago: no connection was made yet, so there is nothing to await.
        return None

    def _connect(
        self, topology: Topology, connect_s: float, reply_s: float, limit: int | None
    ) -> Transport:
        assert limit is not None  # _pool_limit always gives one
        return connect_async(topology, connect_s=connect_s, reply_s=reply_s, max_connections=limit)

    # --- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Ping once when ``check_connection`` was set (every primary, on a cluster).

        Raises:
            ValkeyUnavailableError: Valkey is unreachable or did not answer in time.
            ValkeyError: any other failure (e.g. the credentials were refused).
        """
        if self._check_connection:
            await self.health_check()

    async def close(self) -> None:
        """Close the connections (of a client this adapter built); later calls raise."""
        if isinstance(self._client, ClosedClient):
            return
        self._client = ClosedClient()
        await self._close_transport()

    # --- internals --------------------------------------------------------------------------

    async def _call(self, command: Command[Any]) -> Any:
        """Take a slot (waiting for one when all are taken); send ``command``; retry what
        :func:`~.protocol.retryable` allows, in budget."""
        slots = self._slots
        self._requests += 1
        if slots.locked():
            await self._wait_for(slots)
        else:
            await slots.acquire()  # a free slot: taken at once, without suspending
        try:
            with Boundary(self, command.op, command.key):
                started = _monotonic()
                method = self._method(command.method)
                try:
                    return await method(*command.args)
                except VENDOR_ERRORS as exc:
                    return await call_async(
                        self._policy, command.idempotent, method, command.args,
                        started=started, error=exc,
                    )
        finally:
            slots.release()

    async def _wait_for(self, slots: asyncio.Semaphore) -> None:
        """Wait for a slot, counted as waiting (a cancelled wait counts its time too)."""
        self._waiting += 1
        began = _monotonic()
        try:
            await slots.acquire()
        finally:
            self._waiting -= 1
            self._wait_seconds += _monotonic() - began

    async def _run(self, command: Command[T]) -> T:
        return command.finish(await self._call(command))

    async def _hit_once(self, name: str, window_seconds: int) -> Any:
        first, fallback = self._hit_commands(name, window_seconds)
        try:
            return await self._client.execute_command(*first)
        except NoScriptError:
            # The script did not run (a new, restarted or promoted server, or SCRIPT FLUSH).
            return await self._client.execute_command(*fallback)

    # --- the port (documented on ValkeyClient) ----------------------------------------------

    @traced(CALLS["get"])
    async def get(self, key: str) -> str | None:
        """As :meth:`ValkeyClient.get`."""
        return await self._run(self._get(key))

    @traced(CALLS["set"])
    async def set(self, key: str, value: str, expire_seconds: int | None = None) -> None:
        """As :meth:`ValkeyClient.set`."""
        await self._run(self._set(key, value, expire_seconds))

    @traced(CALLS["delete"])
    async def delete(self, key: str) -> bool:
        """As :meth:`ValkeyClient.delete`."""
        return await self._run(self._delete(key))

    @traced(CALLS["incr"])
    async def incr(self, key: str) -> int:
        """As :meth:`ValkeyClient.incr`."""
        return await self._run(self._incr(key))

    @traced(CALLS["expire"])
    async def expire(self, key: str, seconds: int) -> bool:
        """As :meth:`ValkeyClient.expire`."""
        return await self._run(self._expire(key, seconds))

    @traced(CALLS["ttl"])
    async def ttl(self, key: str) -> int:
        """As :meth:`ValkeyClient.ttl`."""
        return await self._run(self._ttl(key))

    @traced(CALLS["exists"])
    async def exists(self, key: str) -> bool:
        """As :meth:`ValkeyClient.exists`."""
        return await self._run(self._exists(key))

    @traced(CALLS["get_json"])
    async def get_json(self, key: str) -> Any:
        """As :meth:`ValkeyClient.get_json`."""
        return await self._run(self._get_json(key))

    @traced(CALLS["set_json"])
    async def set_json(
        self, key: str, value: JSONValue, expire_seconds: int | None = None
    ) -> None:
        """As :meth:`ValkeyClient.set_json`."""
        await self._run(self._set_json(key, value, expire_seconds))

    @traced(CALLS["hit"])
    async def hit(self, key: str, window_seconds: int) -> int:
        """As :meth:`ValkeyClient.hit`."""
        return await self._run(self._hit(key, window_seconds))

    @traced(CALLS["health_check"])
    async def health_check(self) -> bool:
        """As :meth:`ValkeyClient.health_check`."""
        return await self._run(self._health())


_monotonic = time.monotonic
