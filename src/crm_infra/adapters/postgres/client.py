"""PostgreSQL behind row-level security: :class:`PostgresClient`, for UserScopedDB and AdminDB.

User-facing work runs as an application role that RLS binds (checked at start-up), from one
pool; admin work (migrations, cross-user batches) runs as a BYPASSRLS role from a second pool
opened on first use. Each user-scoped ``execute`` is ONE round trip: the transaction-local user
setting (and statement timeout) travels with the statement in one libpq pipeline up to one
Sync (:mod:`crm_infra.adapters.postgres.pipeline`), so it cannot outlive the statement or leak
through the pool. The SQL of every user-scoped call is checked first, once per distinct text,
by PostgreSQL's own grammar (:mod:`crm_infra._sql_guard`): exactly one data statement, nothing
that acts on the session. No startup ``options`` are sent and nothing relies on session state,
so the client is correct behind PgBouncer in transaction mode as well as directly.

Errors are translated in one place (:func:`translate_errors`); see ``_pg_errors`` for the tree.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow
from psycopg_pool import ConnectionPool, PoolTimeout

from crm_infra._twins import same_arguments_as
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
from crm_infra.adapters.postgres.deadline import Watchdog
from crm_infra.adapters.postgres.errors import (
    PostgresConfigError,
    PostgresError,
    PostgresInputError,
    PostgresIntegrityError,
    PostgresNoRowsError,
    PostgresParamsError,
    PostgresRowSecurityError,
    PostgresTimeoutError,
    PostgresTransactionUsageError,
    PostgresUnavailableError,
    PostgresUnsafeQueryError,
    PostgresUnsafeRoleError,
    raise_translated,
    scrub,
    translate_errors,
    translate_input_errors,
)
from crm_infra.adapters.postgres.pipeline import drive
from crm_infra.adapters.postgres.roles import check_user_facing_role
from crm_infra.adapters.postgres.statements import (
    fetch_last,
)
from crm_infra.adapters.postgres.transactions import (
    AdminTransaction,
    UserTransaction,
    UserTxState,
    aborted_error,
    describe,
    first_value,
)
from crm_infra.ports import Params, Row
from crm_infra.redaction import raise_sanitized
from crm_infra.telemetry import traced, traced_block
from crm_infra.user_context import UserId, resolve_user_id

__all__ = [
    "PostgresClient",
    "PostgresConfigError",
    "PostgresError",
    "PostgresInputError",
    "PostgresIntegrityError",
    "PostgresNoRowsError",
    "PostgresParamsError",
    "PostgresRowSecurityError",
    "PostgresTimeoutError",
    "PostgresTransactionUsageError",
    "PostgresUnavailableError",
    "PostgresUnsafeQueryError",
    "PostgresUnsafeRoleError",
]

logger = logging.getLogger(__name__)

PgConnection = psycopg.Connection[DictRow]

class PostgresClient(PostgresBase):
    """PostgreSQL for user-scoped work under row-level security, plus an explicit admin path.

    Args:
        connection_url: the application role's URL (``postgresql://...``); the role must not
            be superuser, have BYPASSRLS, or own a user-scoped table (checked at start-up).
        pool_size: the most connections the application pool opens.
        admin_connection_url: the admin (BYPASSRLS) role's URL; its pool opens on first use.
            Without it, admin calls raise :class:`PostgresConfigError`.
        min_pool_size: connections kept open (default ``min(2, pool_size)``).
        connect_timeout: seconds to give up connecting (libpq counts whole seconds, at least 2).
        statement_timeout: seconds a user-scoped statement may run (None: no limit). The
            client's own deadline ends a call 2 s later even when the server cannot (a
            frozen server), with :class:`PostgresTimeoutError`.
        admin_statement_timeout: the same for admin work (default None: migrations may be long),
            with the client's deadline 2 s later for ``execute_admin`` and the statements of
            ``admin_transaction()``.
        pool_timeout: seconds to wait for a free pooled connection, including the pool's
            attempts to open a new one (default 5: "connecting gives up within 5 s"
            also holds when the server goes away after start-up).
        health_check_interval: a pooled connection idle for longer is pinged before use, and
            replaced when dead.
        admin_pool_size: the most connections the admin pool opens.
        application_name: shown in ``pg_stat_activity``.
        credentials: the application role's login from Vault's database secrets engine
            (:class:`DynamicCredentials`), kept valid in the background; ``connection_url``
            then names no user or password. The client opens and closes it.
        admin_credentials: the same for the admin pool (opened with it, on first use).

    Raises:
        PostgresUnsafeRoleError: the application role could bypass row-level security.
        PostgresUnavailableError: the server cannot be reached within ``connect_timeout``.
        PostgresError: any other failure to connect (bad credentials, malformed URL...).
        PostgresConfigError: an argument out of range.
    """

    @same_arguments_as(PostgresBase.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admin_lock = threading.Lock()
        self._admin_pool: ConnectionPool[PgConnection] | None = None
        self._watchdog = Watchdog(self._deadline)
        self._admin_watchdog = Watchdog(self._admin_deadline)
        self._short_watchdog = Watchdog(
            self._short_deadline,
            reason="the connect timeout, which the client's own short statements get",
        )
        self._watchdogs = (self._watchdog, self._admin_watchdog, self._short_watchdog)
        self._pools: dict[str, ConnectionPool[PgConnection]] = {}
        try:
            credentials = self._credentials[_APP_POOL]
            if credentials is not None:
                credentials.open()
            with (
                translate_errors(f"connect to {self._url_shown}", self._secrets),
                psycopg.connect(
                    self._app_conninfo, autocommit=True, **self._login_kwargs(_APP_POOL)
                ) as probe,
                self._short_watchdog.guard(probe, "check the application role"),
            ):
                check_user_facing_role(probe)
            with translate_errors(f"connect to {self._url_shown}", self._secrets):
                self._pool: ConnectionPool[PgConnection] = self._make_pool(
                    self._app_conninfo, _APP_POOL, self._min_size, self._pool_size
                )
        except BaseException:
            for watchdog in self._watchdogs:
                watchdog.close()
            self._close_credentials()
            raise

    # --- set-up ----------------------------------------------------------------------------

    def _make_pool(
        self, conninfo: str, name: str, min_size: int, max_size: int
    ) -> ConnectionPool[PgConnection]:
        pool: ConnectionPool[PgConnection] = ConnectionPool(
            conninfo,
            connection_class=psycopg.Connection[DictRow],
            kwargs=self._pool_kwargs(name),
            min_size=min_size,
            max_size=max_size,
            open=False,
            configure=functools.partial(self._opened, name),
            check=functools.partial(self._check, name),
            timeout=self._pool_timeout,
            name=name,
        )
        self._pools[name] = pool
        source = self._credentials[name]
        if source is not None:
            source.on_replaced(pool.drain)  # retire the connections of the old credentials
        pool.open(wait=False)
        return pool

    def _check(self, pool_name: str, conn: PgConnection) -> None:
        if not self._idle_long(conn):
            return
        self._statements.unnamed_lost(conn)
        try:
            with self._short_watchdog.guard(conn, "health check of a pooled connection"):
                ConnectionPool.check_connection(conn)
        except Exception:
            # Found dead while idle (a restart the pool has not seen yet): the others too.
            if self._broken_by_server(conn):
                self._replace_idle_connections(self._pools[pool_name], conn)
            raise

    def _broken_by_server(self, conn: PgConnection) -> bool:
        # ``broken`` is False after the client's own close(); a deadline closes only after
        # libpq saw the socket end, so it is told apart by the watchdog that fired.
        return conn.broken and not any(w.ended(conn) for w in self._watchdogs)

    def _rollback_or_close(self, conn: PgConnection) -> None:
        """Roll back with psycopg's own rollback() (it refuses when psycopg's state is off, a
        transaction() block left open say), under the short deadline; close ``conn`` if that
        fails."""
        what = "rollback before returning a connection"
        self._statements.unnamed_lost(conn)
        try:
            with self._short_watchdog.guard(conn, what):
                conn.rollback()
        except (psycopg.Error, PostgresError) as exc:
            logger.warning(
                "%s failed, closing the connection: %s", what, scrub(str(exc), self._secrets)
            )
            conn.close()

    def _ensure_admin_pool(self, operation: str) -> ConnectionPool[PgConnection]:
        pool = self._admin_pool
        if pool is not None:
            return pool
        if self._admin_conninfo is None:
            raise self._no_admin_url(operation)
        with self._admin_lock:
            if self._admin_pool is None:
                source = self._credentials[_ADMIN_POOL]
                if source is not None:
                    source.open()
                self._probe_admin(self._admin_conninfo)
                self._admin_pool = self._make_pool(
                    self._admin_conninfo, _ADMIN_POOL, 0, self._admin_pool_size
                )
            return self._admin_pool

    def _probe_admin(self, conninfo: str) -> None:
        """Connect once before the admin pool exists, so that a wrong admin URL (a role
        that does not exist, a bad password) fails this call with the server's own reason,
        once, instead of as a pool timeout beside the pool's log lines."""
        with (
            translate_errors(f"connect to the admin role {role_shown(conninfo)}", self._secrets),
            psycopg.connect(conninfo, autocommit=True, **self._login_kwargs(_ADMIN_POOL)) as probe,
            self._short_watchdog.guard(probe, "connect to the admin role"),
        ):
            probe.execute("SELECT 1")

    # --- borrowing ---------------------------------------------------------------------------

    def _lend(self, pool: ConnectionPool[PgConnection], lease: Lease, operation: str) -> None:
        """Take a connection from ``pool`` into ``lease`` (the caller gives it back in a
        ``finally``), checked to be idle in autocommit."""
        try:
            lease.conn = pool.getconn()  # taken and owned in one statement
        except psycopg.Error as exc:
            if isinstance(exc, PoolTimeout):
                expired = self._credentials_expired(pool.name, operation)
                if expired is not None:
                    raise_sanitized(expired, None)
                operation += self._held_by_open_block(pool)
            raise_translated(exc, operation, self._secrets)
        error = not_idle_error(lease.conn, operation)
        if error is not None:
            lease.conn.close()
            raise error

    @contextmanager
    def _borrow(
        self, pool: ConnectionPool[PgConnection], operation: str, *, raw: bool = False
    ) -> Iterator[PgConnection]:
        lease = Lease()
        try:
            self._lend(pool, lease, operation)
            assert lease.conn is not None
            yield lease.conn
        finally:
            try:
                self._release(pool, lease, raw=raw)
            except BaseException:
                self._release(pool, lease, raw=raw)  # interrupted before it could start
                raise

    def _release(
        self, pool: ConnectionPool[PgConnection], lease: Lease, *, raw: bool = False
    ) -> None:
        """Give the leased connection back, once, whatever interrupts the giving."""
        if lease.conn is None:
            return
        try:
            self._give_back(pool, lease, raw=raw)
        except BaseException:
            if lease.conn is not None:  # interrupted before the pool had it: no slot is lost
                conn, lease.conn = lease.conn, None
                conn.close()
                pool.putconn(conn)
            raise

    def _give_back(
        self, pool: ConnectionPool[PgConnection], lease: Lease, *, raw: bool = False
    ) -> None:
        # Done here rather than in a pool ``reset`` callback: with one, psycopg_pool hands
        # every return to a worker thread, which costs more than the query.
        conn = lease.conn
        assert conn is not None
        try:
            if raw or not left_clean(conn):  # else as every call that ended well leaves it
                self._tidy(pool, conn, raw=raw)
        except BaseException:
            conn.close()  # interrupted while tidying: not known to be clean
            raise
        finally:
            self._handed_back(conn)
            pool.putconn(conn)  # always: a slot is never lost, a closed one is replaced
            lease.conn = None

    def _tidy(self, pool: ConnectionPool[PgConnection], conn: PgConnection, *, raw: bool) -> None:
        if self._broken_by_server(conn):
            self._replace_idle_connections(pool, conn)
        action = tidy_action(conn, raw=raw)
        if action == "close":
            if raw:
                closed_on_purpose.connections.add(conn)
            conn.close()
        elif action == "rollback":
            self._rollback_or_close(conn)

    def _replace_idle_connections(
        self, pool: ConnectionPool[PgConnection], conn: PgConnection
    ) -> None:
        if self._first_to_replace(pool.name, conn):
            pool.drain()

    # --- UserScopedDB ------------------------------------------------------------------------

    @traced(pg.EXECUTE)
    def execute(self, query: str, params: Params = (), user_id: UserId | None = None) -> list[Row]:
        """Run ``query`` for one user in its own transaction, in one round trip.

        Args:
            query: ONE data statement (SELECT, INSERT, UPDATE, DELETE or MERGE) with ``%s`` or
                ``%(name)s`` placeholders (without params it is sent as written).
            params: the values for the placeholders; they travel as protocol parameters,
                never inside SQL text (a list becomes an array: ``= ANY(%s)``).
            user_id: the user whose rows are visible; default the current ``user_context``.

        Returns:
            All rows as dicts with psycopg's types; ``[]`` for a statement without a result.

        Inside an open ``transaction()`` block this is NOT part of that transaction: it runs
        in a transaction of its own on another pooled connection (so it waits for a free one,
        up to ``pool_timeout``, when the block holds the last). Use the block's handle
        (``tx.execute``) for work that belongs to the transaction.

        Raises:
            InvalidUserIdError: ``user_id`` is not a UUID (before any I/O).
            MissingUserContextError: no ``user_id`` and no current user (before any I/O).
            PostgresUnsafeQueryError: not one data statement, or one that would act on the
                session or on other sessions (before any I/O; an ``UnsafeQueryError``).
            PostgresRowSecurityError: row-level security refused a write.
            PostgresIntegrityError: a constraint refused a write.
            PostgresError: any other failure (see the subclasses).
        """
        uid = resolve_user_id(user_id)
        checked = check_user_sql("execute", query, params)
        # The hot path, written out: no context managers, the operation named only on error.
        pool = self._pool
        lease = Lease()
        watchdog = self._watchdog
        try:
            self._lend(pool, lease, "execute")
            conn = lease.conn
            assert conn is not None
            call = self._prepare(conn, checked, "execute", query)
            key = watchdog.arm(conn)
            try:
                return self._statements.run(conn, call, set_user=self._set_user(uid))
            except psycopg.Error as exc:
                if watchdog.disarm(key, conn):
                    raise watchdog.timeout_error(describe("execute", query)) from exc
                raise_translated(exc, describe("execute", query), self._secrets)
            finally:
                watchdog.disarm(key, conn)
        finally:
            try:
                self._release(pool, lease)
            except BaseException:
                self._release(pool, lease)  # interrupted before it could start
                raise

    def execute_one(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> Row | None:
        """Run ``query`` like :meth:`execute`; return the first row or None."""
        rows = self.execute(query, params, user_id)
        return rows[0] if rows else None

    def execute_scalar(self, query: str, params: Params = (), user_id: UserId | None = None) -> Any:
        """Run ``query`` like :meth:`execute`; return the first column of the first row.

        Raises:
            PostgresNoRowsError: no row (a ``NoRowsError``, also a ``ValueError``).
        """
        return first_value(self.execute(query, params, user_id), "execute_scalar", query)

    @traced_block(pg.TRANSACTION)
    @contextmanager
    def transaction(self, user_id: UserId | None = None) -> Iterator[UserTransaction]:
        """Open one transaction for one user; commit on normal exit, roll back on an exception.

        BEGIN and the user setting travel with the first statement; a block that runs none
        does no I/O. Nested for the same user it is a savepoint. Each statement is checked
        as :meth:`execute`'s is: one data statement (transaction control is the block's).

        A failed statement aborts the transaction (or the savepoint it is in), also one
        refused before it was sent; leaving a nested block with the exception recovers.

        Raises:
            PostgresTransactionUsageError: nested inside a transaction of another user; the
                block swallowed an error that aborted the transaction (it was rolled back); a
                statement after any of these.
        """
        uid = resolve_user_id(user_id)
        outer = self._outer_transaction(uid)
        if outer is not None:
            with self._savepoint(outer) as handle:
                yield handle
            return
        with self._borrow(self._pool, "transaction") as conn:
            state = UserTxState(conn, uid, self._set_user(uid))
            handle = UserTransaction(state, self._run_in_transaction)
            try:
                self._user_tx.set(state)
                yield handle
            except BaseException:
                handle.close()
                raise  # _give_back rolls back
            finally:
                # Not reset(token): an interrupt could come between set() and keeping the
                # token. No block is open around this one (checked above).
                self._user_tx.set(None)
            handle.close()
            self._commit(state)

    @traced(pg.TRANSACTION_EXECUTE)
    def _run_in_transaction(
        self, state: UserTxState, query: str, params: Params, operation: str
    ) -> list[Row]:
        call = self._transaction_call(state, query, params)
        with (
            translate_errors(operation, self._secrets),
            self._watchdog.guard(state.conn, operation),
        ):
            return drive(state.conn, state.run(self._statements, call))

    def _commit(self, state: UserTxState) -> None:
        op = "transaction commit"
        conn = state.conn
        pending = state.to_commit(op)
        if pending is None:
            return
        self._statements.unnamed_lost(conn)  # what follows goes as simple queries
        with translate_errors(op, self._secrets):
            if pending and conn.info.transaction_status == TransactionStatus.INERROR:
                # A savepoint rolled back last: its ROLLBACK TO is what recovers the
                # transaction, so it goes before the check.
                with (
                    suppress(psycopg.Error),  # still aborted: the check below says so
                    self._short_watchdog.guard(conn, op),
                ):
                    conn.execute(pending)
                pending = b""
            if conn.info.transaction_status != TransactionStatus.INTRANS:
                raise aborted_error(op)  # _give_back rolls back
            with self._watchdog.guard(conn, op):
                conn.execute(pending + b"COMMIT")

    @contextmanager
    def _savepoint(self, state: UserTxState) -> Iterator[UserTransaction]:
        depth, name = state.open_savepoint()
        handle = UserTransaction(state, self._run_in_transaction)
        try:
            yield handle
        except BaseException:
            handle.close()
            state.leave_savepoint(depth, name, failed=True)
            raise
        handle.close()
        state.leave_savepoint(depth, name, failed=False)

    @traced(pg.HEALTH_CHECK)
    def health_check(self) -> bool:
        """Return True when the application pool's server answers.

        Raises:
            PostgresUnavailableError: the server cannot be reached or no connection came free.
            PostgresError: any other failure.
        """
        with (
            translate_errors("health_check", self._secrets),
            self._borrow(self._pool, "health_check") as conn,
            self._short_watchdog.guard(conn, "health_check"),
        ):
            self._statements.unnamed_lost(conn)
            conn.execute("SELECT 1")
        return True

    # --- AdminDB -------------------------------------------------------------------------------

    @traced(pg.EXECUTE_ADMIN)
    def execute_admin(self, query: str, params: Params = ()) -> list[Row]:
        """Run ``query`` as the admin role, bypassing row-level security; return all rows.

        Without params the text goes as written (several statements allowed). With
        ``admin_statement_timeout`` set, the call runs in one transaction that carries the
        timeout, so a statement that cannot run in a transaction block (``CREATE INDEX
        CONCURRENTLY``, ``VACUUM``) needs ``admin_statement_timeout=None``.

        Raises:
            PostgresConfigError: no ``admin_connection_url`` was given.
            PostgresError: the statement failed (see the subclasses).
        """
        refuse_untextable_sql("execute_admin", query)
        op = describe("execute_admin", query)
        pool = self._ensure_admin_pool(op)
        with (
            translate_errors(op, self._secrets),
            self._borrow(pool, op) as conn,
            translate_input_errors(op),
            self._admin_watchdog.guard(conn, op),
        ):
            timeout = self._admin_timeout_value
            if timeout is None:
                return _run_admin(conn, query, params)
            with conn.transaction():
                conn.execute(_SET_TIMEOUT, [timeout])
                return _run_admin(conn, query, params)

    @traced(pg.ADMIN_TRANSACTION_EXECUTE)
    def _run_admin_in(
        self, conn: PgConnection, query: str, params: Params, operation: str
    ) -> list[Row]:
        refuse_untextable_sql("admin_transaction.execute", query)
        with (
            translate_errors(operation, self._secrets),
            translate_input_errors(operation),
            self._admin_watchdog.guard(conn, operation),
        ):
            return _run_admin(conn, query, params)

    @traced_block(pg.ADMIN_TRANSACTION)
    @contextmanager
    def admin_transaction(self) -> Iterator[AdminTransaction]:
        """Open one admin transaction; commit on normal exit, roll back on an exception.

        Nested, it is a savepoint of the enclosing admin transaction.

        Raises:
            PostgresConfigError: no ``admin_connection_url`` was given.
            PostgresTransactionUsageError: the block swallowed an error that aborted the
                transaction (it was rolled back).
        """
        op = "admin_transaction"
        outer = self._admin_tx.get()
        if outer is not None:
            with self._admin_block(outer) as handle:
                yield handle
            return
        pool = self._ensure_admin_pool(op)
        with self._borrow(pool, op) as conn:
            try:
                self._admin_tx.set(conn)
                with self._admin_block(conn, outermost=True) as handle:
                    yield handle
            finally:
                self._admin_tx.set(None)  # as in transaction(): no token to lose

    @contextmanager
    def _admin_block(
        self, conn: PgConnection, *, outermost: bool = False
    ) -> Iterator[AdminTransaction]:
        handle = AdminTransaction(functools.partial(self._run_admin_in, conn))
        with (
            translate_errors("admin_transaction", self._secrets),
            self._admin_watchdog.guard_edges(conn.transaction(), conn, "admin_transaction"),
        ):
            timeout = self._admin_timeout_value
            if outermost and timeout is not None:
                with self._admin_watchdog.guard(conn, "admin_transaction"):
                    conn.execute(_SET_TIMEOUT, [timeout])
            try:
                yield handle
            finally:
                handle.close()
            if conn.info.transaction_status == TransactionStatus.INERROR:
                raise aborted_error("admin_transaction")

    # --- raw access --------------------------------------------------------------------------

    @traced_block(pg.CONNECTION)
    @contextmanager
    def connection(self, user_id: UserId | None = None) -> Iterator[PgConnection]:
        """Yield a raw psycopg connection inside a transaction set up for one user.

        The user setting (and the statement timeout) are transaction-local; the transaction
        commits on normal exit and rolls back on an exception. Afterwards the connection is
        closed, not pooled (the pool opens a fresh one), so nothing the block did to its
        session or to psycopg's connection (a ``set_config(..., false)``, ``SET ROLE``,
        adapters, held cursors, LISTEN, advisory locks) reaches the next borrower. The SQL
        of a raw block is NOT checked: it is trusted code. Behind PgBouncer in transaction
        mode, only the block's transaction is guaranteed one server connection: anything
        that relies on session state beyond it does not work there.

        Raises:
            InvalidUserIdError, MissingUserContextError: before any I/O.
            PostgresTransactionUsageError: the block caught an error that aborted the
                transaction (everything in it was rolled back).
        """
        uid = resolve_user_id(user_id)
        op = "connection"
        with self._borrow(self._pool, op, raw=True) as conn:
            self._statements.unnamed_lost(conn)  # closed afterwards anyway
            with translate_errors(op, self._secrets), self._short_watchdog.guard(conn, op):
                conn.execute("BEGIN")
                timeout = self._timeout_value
                if timeout is None:
                    conn.execute(_SET_USER, [str(uid)])
                else:
                    conn.execute(_SET_USER_AND_TIMEOUT, [str(uid), timeout])
            try:
                yield conn
            except BaseException:
                raise  # _give_back rolls back
            # Not under the client's deadline: the block may have set its own statement_timeout,
            # and a COMMIT cut short by the client may still have committed.
            if conn.info.transaction_status == TransactionStatus.INERROR:
                # PostgreSQL would answer COMMIT with a rollback, and say nothing.
                raise aborted_error(f"{op} commit")
            with translate_errors(f"{op} commit", self._secrets):
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    conn.commit()

    @traced_block(pg.ADMIN_CONNECTION)
    @contextmanager
    def admin_connection(self) -> Iterator[PgConnection]:
        """Yield a raw psycopg connection of the admin role (BYPASSRLS), in autocommit.

        Use only for migrations and cross-user batch work, never for one user's request. The
        connection is closed afterwards, as after :meth:`connection`.

        Raises:
            PostgresConfigError: no ``admin_connection_url`` was given.
        """
        pool = self._ensure_admin_pool("admin_connection")
        with self._borrow(pool, "admin_connection", raw=True) as conn:
            yield conn

    @property
    def pool(self) -> ConnectionPool[PgConnection]:
        """The application role's pool (for inspection; prefer the methods above)."""
        return self._pool

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close both pools; later calls raise :class:`PostgresError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_credentials()  # no more draining of pools that are closing
        for watchdog in self._watchdogs:
            watchdog.close()
        self._pool.close()
        if self._admin_pool is not None:
            self._admin_pool.close()
        self._statements.clear()
        self._close_credentials()

    def __enter__(self) -> PostgresClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()



def _run_admin(conn: PgConnection, query: str, params: Params) -> list[Row]:
    # No params: the text goes as written (simple protocol, several statements allowed, no
    # placeholder processing), as with psycopg's own ``execute(query)``.
    with conn.cursor() as cur:
        cur.execute(query, params if params else None)
        return fetch_last(cur)
