"""The handles ``transaction()`` and ``admin_transaction()`` yield, and the user
transaction's state machine.

A user transaction sends nothing until its first statement: ``BEGIN``, the user setting and the
statement travel in one pipeline (:meth:`StatementCache.run`), and each savepoint goes with the
statement after it. What the server's transaction looks like is known from libpq's transaction
status after every message, never assumed: a statement that ended the transaction leaves it
idle, and one refused before it was sent leaves the server where it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from uuid import UUID

import psycopg
from psycopg.abc import PQGen
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow

from crm_infra.adapters.postgres.errors import (
    PostgresNoRowsError,
    PostgresTransactionUsageError,
)
from crm_infra.adapters.postgres.statements import Call, StatementCache
from crm_infra.ports import Params, Row

__all__ = [
    "AdminTransaction",
    "AsyncAdminTransaction",
    "AsyncUserTransaction",
    "UserTransaction",
    "UserTxState",
    "aborted_error",
    "describe",
    "first_value",
]

PgConnection = psycopg.Connection[DictRow]


def describe(operation: str, query: str) -> str:
    """Name an operation with the start of its SQL, for messages."""
    first = " ".join(query.split())
    return f"{operation}: {first[:70]}{'...' if len(first) > 70 else ''}"


def aborted_error(operation: str) -> PostgresTransactionUsageError:
    """The error for a block that swallowed an error which aborted its transaction."""
    return PostgresTransactionUsageError(
        f"{operation} failed: an error inside the block aborted the transaction and was caught; "
        "everything in it was rolled back",
        operation=operation,
    )


def first_value(rows: list[Row], operation: str, query: str) -> Any:
    """Return the first column of the first row, or raise :class:`PostgresNoRowsError`."""
    if not rows:
        op = describe(operation, query)
        raise PostgresNoRowsError(f"{op} failed: the query returned no rows", operation=op)
    return next(iter(rows[0].values()))


class _Queries(Protocol):
    def execute(self, query: str, params: Params = ()) -> list[Row]: ...


class _RowHelpers:
    """``execute_one`` and ``execute_scalar``, written once over a handle's ``execute``."""

    _scalar_operation = "execute_scalar"

    def execute_one(self: _Queries, query: str, params: Params = ()) -> Row | None:
        """Run ``query`` like ``execute``; return the first row or None."""
        rows = self.execute(query, params)
        return rows[0] if rows else None

    def execute_scalar(self: _Queries, query: str, params: Params = ()) -> Any:
        """Run ``query`` like ``execute``; return the first column of the first row.

        Raises:
            PostgresNoRowsError: no row (a ``NoRowsError``, also a ``ValueError``).
        """
        operation = getattr(self, "_scalar_operation", "execute_scalar")
        return first_value(self.execute(query, params), operation, query)


class UserTxState:
    """One open user transaction: its connection, user, and statements not yet sent."""

    def __init__(self, conn: Any, user_id: UUID, set_user: list[bytes]) -> None:
        self.conn = conn  # the twin's own kind of connection
        self.user_id = user_id
        self.set_user = set_user
        self.pending: list[bytes] = []  # savepoint statements not sent yet
        self.begun = False
        self.savepoints = 0  # names issued
        self.depth = 0  # savepoints open
        # Statements this transaction's server connection is known to have (behind a pooler
        # the client's cache is only a hint; within one transaction the connection is fixed).
        self.confirmed: set[bytes] = set()
        # The savepoint depth at which a statement failed that the server never saw; as on the
        # server, the transaction (or that savepoint) is aborted until the savepoint is left.
        self.failed_at: int | None = None
        # Why the server's transaction is not the one this handle stands for (unusable).
        self.broken: str | None = None

    def check_usable(self, operation: str) -> None:
        """Raise unless a statement may run now (the transaction is known and not aborted)."""
        if self.broken is not None:
            raise PostgresTransactionUsageError(
                f"{operation} failed: {self.broken}", operation=operation
            )
        if self.failed_at is not None:
            raise PostgresTransactionUsageError(
                f"{operation} failed: an earlier statement of this transaction failed, so it "
                "is aborted; only leaving the nested transaction() block it failed in recovers",
                operation=operation,
            )

    def open_savepoint(self) -> tuple[int, bytes]:
        """Begin a nested block: a savepoint, deferred like BEGIN (sent with the next
        statement, dropped if none comes). Return what :meth:`leave_savepoint` needs."""
        self.savepoints += 1
        self.depth += 1
        name = f"_crm_sp{self.savepoints}".encode()
        self.pending.append(b"SAVEPOINT " + name)
        return self.depth, name

    def leave_savepoint(self, depth: int, name: bytes, *, failed: bool) -> None:
        """End the nested block opened at ``depth``: rolled back to its savepoint when it
        ``failed`` (as the server would), released otherwise; nothing sent for a savepoint
        that was never sent either."""
        opening = b"SAVEPOINT " + name
        self.depth -= 1
        if self.failed_at is not None and self.failed_at >= depth:
            # Rolled back to the savepoint: recovered, as on the server; released while
            # aborted: the enclosing level is aborted too.
            self.failed_at = None if failed else depth - 1
        if opening in self.pending:
            self.pending.remove(opening)
        elif failed:
            self.pending += [b"ROLLBACK TO SAVEPOINT " + name, b"RELEASE SAVEPOINT " + name]
        else:
            self.pending.append(b"RELEASE SAVEPOINT " + name)

    def to_commit(self, operation: str) -> bytes | None:
        """What the commit sends before ``COMMIT`` (savepoint statements still pending), or
        None when the block ran nothing (no transaction to commit).

        Raises:
            PostgresTransactionUsageError: the transaction is broken or aborted (the caller's
                give-back rolls back whatever is open).
        """
        if self.broken is not None:
            raise PostgresTransactionUsageError(
                f"{operation} failed: {self.broken}", operation=operation
            )
        if self.failed_at is not None:
            raise aborted_error(operation)
        if not self.begun:
            return None
        pending, self.pending = b"".join(s + b"; " for s in self.pending), []
        return pending

    def refused(self) -> None:
        """A statement was refused before it was sent: as on the server, it aborts the
        transaction (or the savepoint it is in)."""
        self.failed_at = self.depth

    def run(self, statements: StatementCache, call: Call) -> PQGen[list[Row]]:
        """Send ``call`` with whatever is pending; return its rows. A generator for the
        connection's ``wait`` (the sync and async clients drive the same one)."""
        pending, self.pending = self.pending, []
        state = statements.state(self.conn)
        pgconn = self.conn.pgconn
        try:
            if self.begun:
                rows = yield from statements.run_in_transaction_gen(
                    pgconn, state, call, head=pending, confirmed=self.confirmed
                )
            else:
                rows = yield from statements.run_gen(
                    pgconn,
                    state,
                    call,
                    set_user=self.set_user,
                    head=(b"BEGIN",),
                    after=pending,
                    confirmed=self.confirmed,
                )
        except psycopg.Error:
            self._after_error()
            raise
        self.begun = True
        if pgconn.transaction_status != TransactionStatus.INTRANS:
            self.broken = (
                "a statement ended the transaction; what followed would run outside it, so "
                "nothing more runs"
            )
            raise PostgresTransactionUsageError(
                f"transaction.execute failed: {self.broken}", operation="transaction.execute"
            )
        return rows

    def _after_error(self) -> None:
        status = self.conn.pgconn.transaction_status
        if status == TransactionStatus.INERROR:
            self.begun = True  # the server aborted it; a savepoint's ROLLBACK TO recovers
        elif status != TransactionStatus.INTRANS or not self.begun:
            self.broken = (
                "the connection is no longer in this transaction "
                f"({TransactionStatus(status).name}); nothing more runs in it"
            )


class _Handle:
    """What every transaction handle has: it ends with its block."""

    _operation = "transaction.execute"

    def __init__(self) -> None:
        self._open = True

    def close(self) -> None:
        """End the handle: later calls raise (the block has ended)."""
        self._open = False

    def _begin(self, query: str) -> str:
        """Name the call; raise when the block has ended."""
        op = describe(self._operation, query)
        if not self._open:
            raise PostgresTransactionUsageError(
                f"{op} failed: the transaction block has ended", operation=op
            )
        return op


class UserTransaction(_Handle, _RowHelpers):
    """The handle ``transaction()`` yields: every call runs in its one transaction and user."""

    _scalar_operation = "transaction.execute_scalar"

    def __init__(
        self, state: UserTxState, run: Callable[[UserTxState, str, Params, str], list[Row]]
    ) -> None:
        super().__init__()
        self._state = state
        self._run = run

    def execute(self, query: str, params: Params = ()) -> list[Row]:
        """Run ``query`` inside the transaction; return all rows (``[]`` without a result)."""
        op = self._begin(query)
        self._state.check_usable(op)
        return self._run(self._state, query, params, op)


class AdminTransaction(_Handle, _RowHelpers):
    """The handle ``admin_transaction()`` yields; runs as the admin role, bypassing RLS."""

    _operation = "admin_transaction.execute"
    _scalar_operation = "admin_transaction.execute_scalar"

    def __init__(self, run: Callable[[str, Params, str], list[Row]]) -> None:
        super().__init__()
        self._run = run

    def execute(self, query: str, params: Params = ()) -> list[Row]:
        """Run ``query`` in the admin transaction; return all rows (``[]`` without a result)."""
        return self._run(query, params, self._begin(query))


class _AsyncQueries(Protocol):
    async def execute(self, query: str, params: Params = ()) -> list[Row]: ...


class _AsyncRowHelpers:
    """``execute_one`` and ``execute_scalar`` of the asyncio handles."""

    _scalar_operation = "execute_scalar"

    async def execute_one(self: _AsyncQueries, query: str, params: Params = ()) -> Row | None:
        """Run ``query`` like ``execute``; return the first row or None."""
        rows = await self.execute(query, params)
        return rows[0] if rows else None

    async def execute_scalar(self: _AsyncQueries, query: str, params: Params = ()) -> Any:
        """Run ``query`` like ``execute``; return the first column of the first row.

        Raises:
            PostgresNoRowsError: no row (a ``NoRowsError``, also a ``ValueError``).
        """
        operation = getattr(self, "_scalar_operation", "execute_scalar")
        return first_value(await self.execute(query, params), operation, query)


class AsyncUserTransaction(_Handle, _AsyncRowHelpers):
    """:class:`UserTransaction` for asyncio."""

    _scalar_operation = "transaction.execute_scalar"

    def __init__(
        self,
        state: UserTxState,
        run: Callable[[UserTxState, str, Params, str], Awaitable[list[Row]]],
    ) -> None:
        super().__init__()
        self._state = state
        self._run = run

    async def execute(self, query: str, params: Params = ()) -> list[Row]:
        """Run ``query`` inside the transaction; return all rows (``[]`` without a result)."""
        op = self._begin(query)
        self._state.check_usable(op)
        return await self._run(self._state, query, params, op)


class AsyncAdminTransaction(_Handle, _AsyncRowHelpers):
    """:class:`AdminTransaction` for asyncio."""

    _operation = "admin_transaction.execute"
    _scalar_operation = "admin_transaction.execute_scalar"

    def __init__(self, run: Callable[[str, Params, str], Awaitable[list[Row]]]) -> None:
        super().__init__()
        self._run = run

    async def execute(self, query: str, params: Params = ()) -> list[Row]:
        """Run ``query`` in the admin transaction; return all rows (``[]`` without a result)."""
        return await self._run(query, params, self._begin(query))
