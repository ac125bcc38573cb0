"""The client's own deadline for a statement, for when the server cannot enforce one.

``statement_timeout`` is enforced by the server. A server that is frozen (SIGSTOP, a hung VM, a
storage stall) enforces nothing, and its kernel still acknowledges every packet, so neither TCP
keepalives nor ``tcp_user_timeout`` notice: psycopg would wait forever. A :class:`Watchdog`
thread breaks the socket of a statement that outlives its deadline; psycopg then fails at once,
and the call raises :class:`PostgresTimeoutError`. The broken connection is discarded by the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from typing import Any

import psycopg

from crm_infra.adapters.postgres.errors import PostgresTimeoutError

__all__ = ["AsyncDeadline", "Watchdog", "deadline_error"]

GRACE_S = 2.0
"""How long past ``statement_timeout`` the client waits before giving up on the server."""


class Watchdog:
    """Break the connection of any guarded statement that runs past ``seconds``.

    Args:
        seconds: the deadline per statement; None guards nothing (and starts no thread).
    """

    def __init__(
        self,
        seconds: float | None,
        *,
        reason: str = "statement_timeout plus a grace period",
    ) -> None:
        self.seconds = seconds
        self._reason = reason
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, Any]] = {}
        self._fired: set[int] = set()
        self._ended: weakref.WeakSet[Any] = weakref.WeakSet()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if seconds is not None:
            self._interval = max(0.05, min(0.5, seconds / 10))
            self._thread = threading.Thread(target=self._watch, name="crm-pg-deadline", daemon=True)
            self._thread.start()

    def arm(self, conn: Any) -> int:
        """Start the deadline of a statement about to run on ``conn``; return its key."""
        key = id(conn)
        if self.seconds is not None:
            with self._lock:
                self._armed[key] = (time.monotonic() + self.seconds, conn)
        return key

    def disarm(self, key: int, conn: Any) -> bool:
        """End the deadline; return True (and close ``conn``) when it had fired."""
        if self.seconds is None:
            return False
        with self._lock:
            self._armed.pop(key, None)
            fired = key in self._fired
            self._fired.discard(key)
        if fired:
            self._ended.add(conn)
            conn.close()  # its socket is broken, whether or not the call noticed
        return fired

    def ended(self, conn: Any) -> bool:
        """Return True when the deadline is what broke ``conn`` (not the server)."""
        return conn in self._ended

    def timeout_error(self, operation: str) -> PostgresTimeoutError:
        """Return the error for a statement the deadline ended."""
        return deadline_error(operation, self.seconds or 0.0, self._reason)

    @contextmanager
    def guard(self, conn: Any, operation: str) -> Iterator[None]:
        """Guard the statements run in the block; raise the timeout error if the deadline fired.

        Raises:
            PostgresTimeoutError: the deadline ran out and the connection was broken.
        """
        key = self.arm(conn)
        try:
            yield
        except psycopg.Error as exc:
            if self.disarm(key, conn):
                raise self.timeout_error(operation) from exc
            raise
        finally:
            # Whatever ended the block (also an error before any I/O, an interrupt): a
            # deadline left armed would later break the connection under its next user.
            self.disarm(key, conn)

    @contextmanager
    def guard_edges(
        self, block: AbstractContextManager[Any], conn: Any, operation: str
    ) -> Iterator[None]:
        """Enter and leave ``block`` (e.g. ``conn.transaction()``: its BEGIN and its COMMIT or
        ROLLBACK) under the deadline, but not the caller's code in between.

        Raises:
            PostgresTimeoutError: entering or leaving outlived the deadline.
        """
        with self.guard(conn, operation):
            block.__enter__()
        try:
            yield
        except BaseException:
            with self.guard(conn, operation):
                if block.__exit__(*sys.exc_info()):
                    return  # the block handled it (psycopg's Rollback)
            raise
        with self.guard(conn, operation):
            block.__exit__(None, None, None)

    def close(self) -> None:
        """Stop the watchdog thread."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            with self._lock:
                for key, (deadline, conn) in list(self._armed.items()):
                    if now > deadline and key not in self._fired:
                        self._fired.add(key)
                        _break(conn)


def deadline_error(operation: str, seconds: float, reason: str) -> PostgresTimeoutError:
    """The error for a call the client's own deadline ended."""
    return PostgresTimeoutError(
        f"{operation} failed: no answer from the server within {seconds:g} s (the client's "
        f"own deadline: {reason}; the server may be frozen or overloaded)",
        operation=operation,
    )


class AsyncDeadline:
    """The asyncio twin of :class:`Watchdog`: ``asyncio.timeout`` around the call. A call
    it ends is cancelled, which closes its connection (see ``pipeline.drive_async``).

    Args:
        seconds: the deadline per call; None guards nothing.
    """

    def __init__(
        self, seconds: float | None, *, reason: str = "statement_timeout plus a grace period"
    ) -> None:
        self.seconds = seconds
        self._reason = reason

    @asynccontextmanager
    async def guard(self, operation: str) -> AsyncIterator[None]:
        """Run the block under the deadline.

        Raises:
            PostgresTimeoutError: the deadline ran out (the block was cancelled).
        """
        if self.seconds is None:
            yield
            return
        try:
            async with asyncio.timeout(self.seconds):
                yield
        except TimeoutError as exc:
            raise deadline_error(operation, self.seconds, self._reason) from exc


def _break(conn: Any) -> None:
    """Shut the connection's socket down: a wait on it returns, and libpq sees the end."""
    with contextlib.suppress(Exception):
        fd = os.dup(conn.pgconn.socket)
        sock = socket.socket(fileno=fd)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
