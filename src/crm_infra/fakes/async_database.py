"""The in-memory database for asyncio: :class:`AsyncInMemoryUserScopedDB`.

It *is* :class:`~crm_infra.fakes.InMemoryUserScopedDB` (the same SQL engine, schema, checks and
answers), awaited. The sync fake runs transactions one at a time and tells them apart by thread;
on one event loop every task shares a thread, so here an :class:`asyncio.Lock` takes turns
between tasks instead: a task's transaction holds it until the block ends, and another task's
call waits for its turn (up to ``lock_timeout``) without blocking the loop. A task that calls the
database outside its own open transaction gets the same error as in the sync fake (on
PostgreSQL that call would run on another connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from crm_infra.errors import TransactionUsageError
from crm_infra.fakes.database import InMemoryUserScopedDB
from crm_infra.ports import Params, Row, Transaction
from crm_infra.user_context import UserId

__all__ = ["AsyncInMemoryUserScopedDB"]

T = TypeVar("T")


class _AsyncHandle:
    """The :class:`~crm_infra.ports.AsyncTransaction` handle: the sync fake's, awaited."""

    def __init__(self, handle: Transaction) -> None:
        self._handle = handle

    async def execute(self, query: str, params: Params = ()) -> list[Row]:
        """Run ``query`` inside the transaction and return all rows."""
        return self._handle.execute(query, params)

    async def execute_one(self, query: str, params: Params = ()) -> Row | None:
        """Run ``query`` inside the transaction and return its first row, or None."""
        return self._handle.execute_one(query, params)

    async def execute_scalar(self, query: str, params: Params = ()) -> Any:
        """Run ``query`` inside the transaction; return the first column of the first row."""
        return self._handle.execute_scalar(query, params)


class AsyncInMemoryUserScopedDB:
    """:class:`~crm_infra.ports.AsyncUserScopedDB` and ``AsyncAdminDB`` in memory, for unit
    tests of asyncio code. The arguments are :class:`InMemoryUserScopedDB`'s; ``db`` wraps an
    existing sync fake instead (both then see the same data)."""

    def __init__(
        self,
        sql_dir: Path | str | None = None,
        *,
        app_role: str = "crm_app",
        clock: Callable[[], datetime] | None = None,
        lock_timeout: float = 10.0,
        db: InMemoryUserScopedDB | None = None,
    ) -> None:
        self._db = db or InMemoryUserScopedDB(
            sql_dir, app_role=app_role, clock=clock, lock_timeout=lock_timeout
        )
        self._turn = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._lock_timeout = lock_timeout

    @property
    def sync(self) -> InMemoryUserScopedDB:
        """The sync fake underneath (the same data)."""
        return self._db

    def __repr__(self) -> str:
        return f"Async{self._db!r}"

    # --- taking turns --------------------------------------------------------------------------

    @asynccontextmanager
    async def _my_turn(self) -> AsyncIterator[bool]:
        """Wait for this task's turn; yield True when it already has it (its own transaction
        is open: the sync fake then answers as for a call inside it)."""
        if self._owner is not None and self._owner is asyncio.current_task():
            yield True
            return
        try:
            async with asyncio.timeout(self._lock_timeout):
                await self._turn.acquire()
        except TimeoutError:
            raise TransactionUsageError(
                f"waited {self._lock_timeout:g} s for the in-memory database: another task's "
                "transaction holds it (the fake runs transactions one at a time; a task "
                "waiting for another one's database work inside a transaction deadlocks)"
            ) from None
        try:
            yield False
        finally:
            self._turn.release()

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        async with self._my_turn():
            return method(*args)

    @asynccontextmanager
    async def _block(
        self, open_block: Callable[[], AbstractContextManager[Transaction]]
    ) -> AsyncIterator[_AsyncHandle]:
        async with self._my_turn() as nested:
            if nested:  # a savepoint of this task's own transaction
                with open_block() as handle:
                    yield _AsyncHandle(handle)
                return
            self._owner = asyncio.current_task()
            try:
                with open_block() as handle:
                    yield _AsyncHandle(handle)
            finally:
                self._owner = None

    # --- AsyncUserScopedDB -----------------------------------------------------------------

    async def execute(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> list[Row]:
        """Run ``query`` for one user in its own transaction; see the sync fake."""
        return await self._call(self._db.execute, query, params, user_id)

    async def execute_one(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> Row | None:
        """Run ``query`` for one user; return the first row or None."""
        return await self._call(self._db.execute_one, query, params, user_id)

    async def execute_scalar(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> Any:
        """Run ``query`` for one user; return the first column of the first row."""
        return await self._call(self._db.execute_scalar, query, params, user_id)

    def transaction(
        self, user_id: UserId | None = None
    ) -> AbstractAsyncContextManager[_AsyncHandle]:
        """One transaction for one user (``async with``); nested in the same task, a
        savepoint."""
        return self._block(lambda: self._db.transaction(user_id))

    async def health_check(self) -> bool:
        """Return True unless closed."""
        return await self._call(self._db.health_check)

    # --- AsyncAdminDB ---------------------------------------------------------------------------

    async def execute_admin(self, query: str, params: Params = ()) -> list[Row]:
        """Run ``query`` with row-level security bypassed; see the sync fake."""
        return await self._call(self._db.execute_admin, query, params)

    def admin_transaction(self) -> AbstractAsyncContextManager[_AsyncHandle]:
        """One admin transaction (``async with``)."""
        return self._block(self._db.admin_transaction)

    # --- lifecycle ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the database; later calls raise. Idempotent."""
        self._db.close()

    async def __aenter__(self) -> AsyncInMemoryUserScopedDB:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
