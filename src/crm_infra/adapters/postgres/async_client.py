"""PostgreSQL behind row-level security for asyncio: :class:`AsyncPostgresClient`.

The asyncio twin of :class:`~crm_infra.adapters.postgres.client.PostgresClient`, with the same
constructor arguments, errors and guarantees: one round trip per user-scoped call (the same
pipeline generator, driven by ``await``), the same SQL checks and statement cache, the same
start-up role check, correct behind PgBouncer. Everything the two decide without I/O lives in
:mod:`crm_infra.adapters.postgres.base`; this module only waits differently (psycopg's
``AsyncConnectionPool``, ``asyncio.timeout`` for the client's own deadlines).

A cancelled call (``asyncio.CancelledError``, ``asyncio.timeout`` around it) leaves nothing
behind: a connection cancelled mid-protocol is closed and the pool replaces it; one that was
idle goes back as it was. The constructor does no I/O: ``async with AsyncPostgresClient(...)``
(or ``await client.open()``; the first call opens it too) connects and checks the role.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from crm_infra._twins import OpenedByAsyncWith, same_arguments_as
from crm_infra.adapters.postgres import telemetry as pg
from crm_infra.adapters.postgres.base import (
    _ADMIN_POOL,
    _APP_POOL,
    _SET_TIMEOUT,
    _SET_USER,
    _SET_USER_AND_TIMEOUT,
    Lease,
    PostgresBase,
    check_user_sql,
    closed_on_purpose,
    left_clean,
    not_idle_error,
    refuse_untextable_sql,
    role_shown,
    tidy_action,
)
from crm_infra.adapters.postgres.deadline import AsyncDeadline
from crm_infra.adapters.postgres.errors import (
    PostgresError,
    raise_translated,
    scrub,
    translate_errors,
    translate_input_errors,
)
from crm_infra.adapters.postgres.pipeline import drive_async
from crm_infra.adapters.postgres.roles import check_user_facing_role_async
from crm_infra.adapters.postgres.statements import fetch_last_async
from crm_infra.adapters.postgres.transactions import (
    AsyncAdminTransaction,
    AsyncUserTransaction,
    UserTxState,
    aborted_error,
    describe,
    first_value,
)
from crm_infra.ports import Params, Row
from crm_infra.redaction import raise_sanitized
from crm_infra.telemetry import traced, traced_block
from crm_infra.user_context import UserId, resolve_user_id

__all__ = ["AsyncPostgresClient"]

logger = logging.getLogger(__name__)

AsyncPgConnection = psycopg.AsyncConnection[DictRow]
_Pool = AsyncConnectionPool[AsyncPgConnection]


class AsyncPostgresClient(OpenedByAsyncWith, PostgresBase):
    """PostgreSQL for user-scoped work under row-level security, and an admin path, for
    asyncio. The arguments, errors and guarantees are :class:`PostgresClient`'s.

    Raises:
        PostgresConfigError: an argument out of range (at construction, before any I/O).
        PostgresUnsafeRoleError: on opening, the application role could bypass RLS.
        PostgresUnavailableError: on opening, the server cannot be reached in time.
    """

    @same_arguments_as(PostgresBase.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: _Pool | None = None
        self._drains: set[asyncio.Task[None]] = set()
        self._admin_pool: _Pool | None = None
        self._open_lock = asyncio.Lock()
        self._admin_lock = asyncio.Lock()
        self._deadlines = AsyncDeadline(self._deadline)
        self._admin_deadlines = AsyncDeadline(self._admin_deadline)
        self._short_deadlines = AsyncDeadline(
            self._short_deadline,
            reason="the connect timeout, which the client's own short statements get",
        )

    # --- set-up ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check the application role and open the pool (once; idempotent).

        Raises:
            PostgresUnsafeRoleError, PostgresUnavailableError, PostgresError: see the class.
        """
        await self._ready()

    async def _ready(self) -> _Pool:
        pool = self._pool
        if pool is not None:
            return pool
        async with self._open_lock:
            if self._pool is None:
                if self._closed:
                    raise PostgresError(
                        "the client is closed", operation=f"connect to {self._url_shown}"
                    )
                await self._open_credentials(_APP_POOL)
                await self._probe(self._app_conninfo, "check the application role", role=True)
                with translate_errors(f"connect to {self._url_shown}", self._secrets):
                    self._pool = await self._make_pool(
                        self._app_conninfo, _APP_POOL, self._min_size, self._pool_size
                    )
            return self._pool

    async def _probe(self, conninfo: str, what: str, *, role: bool) -> None:
        """Connect once: check the application role (``role``), or that an admin URL works,
        with the server's own reason when it does not."""
        where = self._url_shown if role else f"the admin role {role_shown(conninfo)}"
        login = self._login_kwargs(_APP_POOL if role else _ADMIN_POOL)
        with translate_errors(f"connect to {where}", self._secrets):
            async with (
                self._short_deadlines.guard(what),
                await psycopg.AsyncConnection.connect(conninfo, autocommit=True, **login) as probe,
            ):
                if role:
                    await check_user_facing_role_async(probe)
                else:
                    await probe.execute("SELECT 1")

    async def _make_pool(self, conninfo: str, name: str, min_size: int, max_size: int) -> _Pool:
        pool: _Pool = AsyncConnectionPool(
            conninfo,
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs=self._pool_kwargs(name),
            min_size=min_size,
            max_size=max_size,
            open=False,
            configure=functools.partial(self._configure, name),
            check=functools.partial(self._check, name),
            timeout=self._pool_timeout,
            name=name,
        )
        source = self._credentials[name]
        if source is not None:
            source.on_replaced(self._drain_from_elsewhere(pool))
        await pool.open(wait=False)
        return pool

    async def _configure(self, pool_name: str, conn: AsyncPgConnection) -> None:
        self._opened(pool_name, conn)

    async def _open_credentials(self, pool_name: str) -> None:
        source = self._credentials[pool_name]
        if source is not None:
            # Its first Vault request blocks: not on the event loop.
            await asyncio.to_thread(source.open)

    def _drain_from_elsewhere(self, pool: _Pool) -> Callable[[], None]:
        """Return a hook that drains ``pool`` on this loop, callable from the credentials'
        keeper thread (it retires the connections of replaced or ended credentials)."""
        loop = asyncio.get_running_loop()

        def start() -> None:
            task = loop.create_task(pool.drain())
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)

        def drain() -> None:
            with suppress(RuntimeError):  # the loop is closed: so is the pool
                loop.call_soon_threadsafe(start)

        return drain

    async def _check(self, pool_name: str, conn: AsyncPgConnection) -> None:
        if not self._idle_long(conn):
            return
        self._statements.unnamed_lost(conn)
        try:
            async with self._short_deadlines.guard("health check of a pooled connection"):
                await AsyncConnectionPool.check_connection(conn)
        except Exception:
            # Found dead while idle (a restart the pool has not seen yet): the others too.
            if conn.broken:
                await self._replace_idle_connections(pool_name)
            raise

    async def _rollback_or_close(self, conn: AsyncPgConnection) -> None:
        what = "rollback before returning a connection"
        self._statements.unnamed_lost(conn)
        try:
            async with self._short_deadlines.guard(what):
                await conn.rollback()
        except (psycopg.Error, PostgresError) as exc:
            logger.warning(
                "%s failed, closing the connection: %s", what, scrub(str(exc), self._secrets)
            )
            await conn.close()

    async def _ensure_admin_pool(self, operation: str) -> _Pool:
        pool = self._admin_pool
        if pool is not None:
            return pool
        if self._admin_conninfo is None:
            raise self._no_admin_url(operation)
        async with self._admin_lock:
            if self._admin_pool is None:
                await self._open_credentials(_ADMIN_POOL)
                await self._probe(self._admin_conninfo, "connect to the admin role", role=False)
                with translate_errors(operation, self._secrets):
                    self._admin_pool = await self._make_pool(
                        self._admin_conninfo, _ADMIN_POOL, 0, self._admin_pool_size
                    )
            return self._admin_pool

    async def _replace_idle_connections(self, pool_name: str) -> None:
        pool = self._pool if pool_name == _APP_POOL else self._admin_pool
        if pool is not None:
            await pool.drain()

    # --- borrowing ---------------------------------------------------------------------------

    async def _lend(self, pool: _Pool, lease: Lease, operation: str) -> None:
        try:
            lease.conn = await pool.getconn()  # taken and owned in one statement
        except psycopg.Error as exc:
            if isinstance(exc, PoolTimeout):
                expired = self._credentials_expired(pool.name, operation)
                if expired is not None:
                    raise_sanitized(expired, None)
                operation += self._held_by_open_block(pool)
            raise_translated(exc, operation, self._secrets)
        error = not_idle_error(lease.conn, operation)
        if error is not None:
            await lease.conn.close()
            raise error

    @asynccontextmanager
    async def _borrow(
        self, pool: _Pool, operation: str, *, raw: bool = False
    ) -> AsyncIterator[AsyncPgConnection]:
        lease = Lease()
        try:
            await self._lend(pool, lease, operation)
            yield lease.conn
        finally:
            try:
                await self._release(pool, lease, raw=raw)
            except BaseException:
                await self._release(pool, lease, raw=raw)  # cancelled before it could start
                raise

    async def _release(self, pool: _Pool, lease: Lease, *, raw: bool = False) -> None:
        """Give the leased connection back, once, whatever cancels the giving."""
        conn: AsyncPgConnection | None = lease.conn
        if conn is None:
            return
        try:
            if raw or not left_clean(conn):  # else as every call that ended well leaves it
                await self._tidy(pool, conn, raw=raw)
        except BaseException:
            await conn.close()  # cancelled while tidying: not known to be clean
            raise
        finally:
            self._handed_back(conn)
            lease.conn = None
            await pool.putconn(conn)  # always: a slot is never lost, a closed one replaced

    async def _tidy(self, pool: _Pool, conn: AsyncPgConnection, *, raw: bool) -> None:
        if conn.broken and self._first_to_replace(pool.name, conn):
            await pool.drain()
        action = tidy_action(conn, raw=raw)
        if action == "close":
            if raw:
                closed_on_purpose.connections.add(conn)
            await conn.close()
        elif action == "rollback":
            await self._rollback_or_close(conn)

    # --- AsyncUserScopedDB -------------------------------------------------------------------

    @traced(pg.EXECUTE)
    async def execute(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> list[Row]:
        """Run ``query`` for one user in its own transaction, in one round trip.

        As :meth:`PostgresClient.execute`.
        """
        uid = resolve_user_id(user_id)
        checked = check_user_sql("execute", query, params)
        pool = self._pool or await self._ready()
        lease = Lease()
        try:
            await self._lend(pool, lease, "execute")
            conn: AsyncPgConnection = lease.conn
            call = self._prepare(conn, checked, "execute", query)
            statements = self._statements
            run = statements.run_gen(
                conn.pgconn, statements.state(conn), call, set_user=self._set_user(uid)
            )
            try:
                async with self._deadlines.guard(describe("execute", query)):
                    return await drive_async(conn, run)
            except psycopg.Error as exc:
                raise_translated(exc, describe("execute", query), self._secrets)
        finally:
            try:
                await self._release(pool, lease)
            except BaseException:
                await self._release(pool, lease)  # cancelled before it could start
                raise

    async def execute_one(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> Row | None:
        """Run ``query`` like :meth:`execute`; return the first row or None."""
        rows = await self.execute(query, params, user_id)
        return rows[0] if rows else None

    async def execute_scalar(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> Any:
        """Run ``query`` like :meth:`execute`; return the first column of the first row.

        Raises:
            PostgresNoRowsError: no row (a ``NoRowsError``, also a ``ValueError``).
        """
        return first_value(await self.execute(query, params, user_id), "execute_scalar", query)

    @traced_block(pg.TRANSACTION)
    @asynccontextmanager
    async def transaction(
        self, user_id: UserId | None = None
    ) -> AsyncIterator[AsyncUserTransaction]:
        """Open one transaction for one user (``async with``); as
        :meth:`PostgresClient.transaction`."""
        uid = resolve_user_id(user_id)
        outer = self._outer_transaction(uid)
        if outer is not None:
            async with self._savepoint(outer) as handle:
                yield handle
            return
        pool = self._pool or await self._ready()
        async with self._borrow(pool, "transaction") as conn:
            state = UserTxState(conn, uid, self._set_user(uid))
            handle = AsyncUserTransaction(state, self._run_in_transaction)
            try:
                self._user_tx.set(state)
                yield handle
            except BaseException:
                handle.close()
                raise  # _release rolls back
            finally:
                self._user_tx.set(None)  # no token to lose to a cancellation
            handle.close()
            await self._commit(state)

    @traced(pg.TRANSACTION_EXECUTE)
    async def _run_in_transaction(
        self, state: UserTxState, query: str, params: Params, operation: str
    ) -> list[Row]:
        call = self._transaction_call(state, query, params)
        with translate_errors(operation, self._secrets):
            async with self._deadlines.guard(operation):
                return await drive_async(state.conn, state.run(self._statements, call))

    async def _commit(self, state: UserTxState) -> None:
        op = "transaction commit"
        conn: AsyncPgConnection = state.conn
        pending = state.to_commit(op)
        if pending is None:
            return
        self._statements.unnamed_lost(conn)  # what follows goes as simple queries
        with translate_errors(op, self._secrets):
            if pending and conn.info.transaction_status == TransactionStatus.INERROR:
                # A savepoint rolled back last: its ROLLBACK TO is what recovers it.
                with suppress(psycopg.Error):  # still aborted: the check below says so
                    async with self._short_deadlines.guard(op):
                        await conn.execute(pending)
                pending = b""
            if conn.info.transaction_status != TransactionStatus.INTRANS:
                raise aborted_error(op)  # _release rolls back
            async with self._deadlines.guard(op):
                await conn.execute(pending + b"COMMIT")

    @asynccontextmanager
    async def _savepoint(self, state: UserTxState) -> AsyncIterator[AsyncUserTransaction]:
        depth, name = state.open_savepoint()
        handle = AsyncUserTransaction(state, self._run_in_transaction)
        try:
            yield handle
        except BaseException:
            handle.close()
            state.leave_savepoint(depth, name, failed=True)
            raise
        handle.close()
        state.leave_savepoint(depth, name, failed=False)

    @traced(pg.HEALTH_CHECK)
    async def health_check(self) -> bool:
        """Return True when the application pool's server answers; as
        :meth:`PostgresClient.health_check`."""
        pool = self._pool or await self._ready()
        with translate_errors("health_check", self._secrets):
            async with (
                self._borrow(pool, "health_check") as conn,
                self._short_deadlines.guard("health_check"),
            ):
                self._statements.unnamed_lost(conn)
                await conn.execute("SELECT 1")
        return True

    # --- AsyncAdminDB --------------------------------------------------------------------------

    @traced(pg.EXECUTE_ADMIN)
    async def execute_admin(self, query: str, params: Params = ()) -> list[Row]:
        """Run ``query`` as the admin role; as :meth:`PostgresClient.execute_admin`."""
        refuse_untextable_sql("execute_admin", query)
        op = describe("execute_admin", query)
        pool = await self._ensure_admin_pool(op)
        with translate_errors(op, self._secrets), translate_input_errors(op):
            async with self._borrow(pool, op) as conn, self._admin_deadlines.guard(op):
                timeout = self._admin_timeout_value
                if timeout is None:
                    return await _run_admin(conn, query, params)
                async with conn.transaction():
                    await conn.execute(_SET_TIMEOUT, [timeout])
                    return await _run_admin(conn, query, params)

    @traced(pg.ADMIN_TRANSACTION_EXECUTE)
    async def _run_admin_in(
        self, conn: AsyncPgConnection, query: str, params: Params, operation: str
    ) -> list[Row]:
        refuse_untextable_sql("admin_transaction.execute", query)
        with translate_errors(operation, self._secrets), translate_input_errors(operation):
            async with self._admin_deadlines.guard(operation):
                return await _run_admin(conn, query, params)

    @traced_block(pg.ADMIN_TRANSACTION)
    @asynccontextmanager
    async def admin_transaction(self) -> AsyncIterator[AsyncAdminTransaction]:
        """Open one admin transaction (``async with``); as
        :meth:`PostgresClient.admin_transaction`."""
        op = "admin_transaction"
        outer = self._admin_tx.get()
        if outer is not None:
            async with self._admin_block(outer) as handle:
                yield handle
            return
        pool = await self._ensure_admin_pool(op)
        async with self._borrow(pool, op) as conn:
            try:
                self._admin_tx.set(conn)
                async with self._admin_block(conn, outermost=True) as handle:
                    yield handle
            finally:
                self._admin_tx.set(None)

    @asynccontextmanager
    async def _admin_block(
        self, conn: AsyncPgConnection, *, outermost: bool = False
    ) -> AsyncIterator[AsyncAdminTransaction]:
        handle = AsyncAdminTransaction(functools.partial(self._run_admin_in, conn))
        with translate_errors("admin_transaction", self._secrets):
            async with self._admin_deadlines.guard("admin_transaction"):
                transaction = conn.transaction()
                await transaction.__aenter__()
            try:
                timeout = self._admin_timeout_value
                if outermost and timeout is not None:
                    async with self._admin_deadlines.guard("admin_transaction"):
                        await conn.execute(_SET_TIMEOUT, [timeout])
                try:
                    yield handle
                finally:
                    handle.close()
                if conn.info.transaction_status == TransactionStatus.INERROR:
                    raise aborted_error("admin_transaction")
            except BaseException as exc:
                async with self._admin_deadlines.guard("admin_transaction"):
                    if await transaction.__aexit__(type(exc), exc, exc.__traceback__):
                        return  # psycopg's Rollback, handled
                raise
            async with self._admin_deadlines.guard("admin_transaction"):
                await transaction.__aexit__(None, None, None)

    # --- raw access --------------------------------------------------------------------------

    @traced_block(pg.CONNECTION)
    @asynccontextmanager
    async def connection(self, user_id: UserId | None = None) -> AsyncIterator[AsyncPgConnection]:
        """Yield a raw asyncio psycopg connection in a transaction set up for one user; as
        :meth:`PostgresClient.connection` (closed afterwards, never pooled)."""
        uid = resolve_user_id(user_id)
        op = "connection"
        pool = self._pool or await self._ready()
        async with self._borrow(pool, op, raw=True) as conn:
            self._statements.unnamed_lost(conn)  # closed afterwards anyway
            with translate_errors(op, self._secrets):
                async with self._short_deadlines.guard(op):
                    await conn.execute("BEGIN")
                    timeout = self._timeout_value
                    if timeout is None:
                        await conn.execute(_SET_USER, [str(uid)])
                    else:
                        await conn.execute(_SET_USER_AND_TIMEOUT, [str(uid), timeout])
            yield conn  # an exception in the block: _release rolls back (and closes)
            # Not under the client's deadline: the block may have set its own timeout, and a
            # COMMIT cut short by the client may still have committed.
            if conn.info.transaction_status == TransactionStatus.INERROR:
                raise aborted_error(f"{op} commit")
            with translate_errors(f"{op} commit", self._secrets):
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.commit()

    @traced_block(pg.ADMIN_CONNECTION)
    @asynccontextmanager
    async def admin_connection(self) -> AsyncIterator[AsyncPgConnection]:
        """Yield a raw asyncio connection of the admin role; as
        :meth:`PostgresClient.admin_connection`."""
        pool = await self._ensure_admin_pool("admin_connection")
        async with self._borrow(pool, "admin_connection", raw=True) as conn:
            yield conn

    @property
    def pool(self) -> _Pool | None:
        """The application role's pool once open (for inspection)."""
        return self._pool

    # --- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Close both pools; later calls raise :class:`PostgresError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        sources = self._credential_sources()
        if sources:
            # No more draining of pools that are closing; stopping may wait for a Vault
            # request in flight, so not on the loop.
            await asyncio.to_thread(self._stop_credentials)
        for pool in (self._pool, self._admin_pool):
            if pool is not None:
                await pool.close()
        self._statements.clear()
        if sources:
            await asyncio.to_thread(self._close_credentials)  # revoking waits for Vault



async def _run_admin(conn: AsyncPgConnection, query: str, params: Params) -> list[Row]:
    # No params: the text goes as written (simple protocol, several statements allowed).
    async with conn.cursor() as cur:
        await cur.execute(query, params if params else None)
        return await fetch_last_async(cur)
