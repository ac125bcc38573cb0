"""What the PostgreSQL client and its asyncio twin share: configuration, the checks made
before any I/O, what a call sends, the open-block bookkeeping. No I/O here: the twins differ
only in how they wait (see :mod:`crm_infra.adapters.postgres.client` and ``async_client``)."""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any
from uuid import UUID

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import PipelineStatus, TransactionStatus
from psycopg.rows import dict_row

from crm_infra._sql_params import ClientSideError, ParamsShapeError
from crm_infra._sql_text import shown, untextable_reason
from crm_infra.adapters.postgres.credentials import DynamicCredentials, LiveSecrets
from crm_infra.adapters.postgres.deadline import GRACE_S
from crm_infra.adapters.postgres.errors import (
    PostgresConfigError,
    PostgresError,
    PostgresInputError,
    PostgresParamsError,
    PostgresTransactionUsageError,
    PostgresUnsafeQueryError,
    input_error,
    password_of,
    raise_translated,
    scrub,
    translate_errors,
    unsendable_error,
)
from crm_infra.adapters.postgres.statements import (
    Call,
    Checked,
    StatementCache,
    SyntaxRefusal,
    UnsafeSql,
    UntextableSql,
    check_call,
    prepare_call,
)
from crm_infra.adapters.postgres.telemetry import pool_stats
from crm_infra.adapters.postgres.transactions import UserTxState, describe
from crm_infra.pool_stats import PoolStats
from crm_infra.ports import Params
from crm_infra.redaction import raise_sanitized
from crm_infra.telemetry import watch_pools

__all__ = [
    "POOL_KWARGS",
    "Lease",
    "PostgresBase",
    "check_user_sql",
    "closed_on_purpose",
    "left_clean",
    "not_idle_error",
    "refuse_untextable_sql",
    "role_shown",
    "tidy_action",
]

logger = logging.getLogger("crm_infra.adapters.postgres")

# The raw connection() block's user setting: the same statement as the pipeline's, sent with
# its values as parameters.
_SET_USER = "SELECT set_config('app.current_user_id', %s, true)"
_SET_USER_AND_TIMEOUT = (
    "SELECT set_config('app.current_user_id', %s, true), "
    "set_config('statement_timeout', %s, true)"
)
_SET_TIMEOUT = "SELECT set_config('statement_timeout', %s, true)"


class Lease:
    """The connection one call holds. It is stored here in the same statement that takes it
    from the pool, so an interrupt cannot come between taking it and owning it."""

    __slots__ = ("conn",)

    def __init__(self) -> None:
        self.conn: Any = None


class _ClosedOnPurpose(logging.Filter):
    """Drop psycopg_pool's "discarding closed connection" warning for connections the client
    closed on purpose (after raw access): the pool replaces them, as it should, quietly."""

    def __init__(self) -> None:
        super().__init__("psycopg.pool")
        self.connections: weakref.WeakSet[object] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "discarding closed connection: %s" or not record.args:
            return True
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        return args[0] not in self.connections


closed_on_purpose = _ClosedOnPurpose()
logging.getLogger("psycopg.pool").addFilter(closed_on_purpose)


def refuse_untextable_sql(operation: str, query: str) -> None:
    """Refuse SQL text the server cannot receive whole (see ``untextable_reason``), before
    any I/O."""
    why = untextable_reason(query)
    if why is not None:
        op = describe(operation, shown(query))
        raise PostgresInputError(f"{op} failed: {why}; nothing was sent", operation=op)


def check_user_sql(operation: str, query: str, params: Params) -> Checked:
    """Check user-scoped ``query`` and fit ``params`` to it, before any I/O.

    Raises:
        PostgresInputError: text the server cannot receive whole.
        PostgresUnsafeQueryError: not one data statement, or one that acts on the session.
        PostgresError: a syntax error, or placeholders that do not fit the params.
        PostgresParamsError: params of the wrong kind (also a TypeError).
    """
    try:
        return check_call(query, params)
    except UntextableSql as exc:
        op = describe(operation, shown(query))
        raise_sanitized(
            PostgresInputError(f"{op} failed: {exc}; nothing was sent", operation=op), None
        )
    except UnsafeSql as exc:
        op = describe(operation, shown(query))
        raise_sanitized(
            PostgresUnsafeQueryError(
                f"{op} refused: {exc.refusal.message()}; nothing was sent", operation=op
            ),
            None,
        )
    except SyntaxRefusal as exc:
        op = describe(operation, shown(query))
        raise_sanitized(
            PostgresError(
                f"{op} failed: {exc} (SQLSTATE 42601); nothing was sent",
                sqlstate="42601",
                operation=op,
            ),
            None,
        )
    except ParamsShapeError as exc:
        op = describe(operation, shown(query))
        raise_sanitized(
            PostgresParamsError(f"{op} failed: {exc}; nothing was sent", operation=op), None
        )
    except ClientSideError as exc:
        op = describe(operation, shown(query))
        raise_sanitized(
            PostgresError(f"{op} failed: {exc}; nothing was sent", operation=op), None
        )


def _milliseconds(seconds: float | None) -> str | None:
    return None if seconds is None else str(max(1, round(seconds * 1000)))


def _setting_problems(
    *,
    pool_size: int,
    min_size: int,
    admin_pool_size: int,
    timeouts: dict[str, float],
    limits: dict[str, float | None],
) -> list[str]:
    """Return what is wrong with the client's settings, one phrase each."""
    problems = []
    if pool_size < 1:
        problems.append(f"pool_size must be at least 1 (got {pool_size})")
    if not 0 <= min_size <= pool_size:
        problems.append(f"min_pool_size must be between 0 and pool_size (got {min_size})")
    if admin_pool_size < 1:
        problems.append(f"admin_pool_size must be at least 1 (got {admin_pool_size})")
    for name, value in timeouts.items():
        if not (value > 0 and math.isfinite(value)):
            problems.append(f"{name} must be a positive number of seconds (got {value})")
    for name, limit in limits.items():
        # Under a millisecond the server's setting would round to 0: no limit at all.
        if limit is not None and not (limit >= 0.001 and math.isfinite(limit)):
            problems.append(f"{name} must be None or at least 0.001 seconds (got {limit})")
    return problems


# psycopg's own automatic prepared statements stay off: their names (_pg3_0...) mean different
# statements on different connections, which breaks behind PgBouncer, and on a rollback psycopg
# answers with DEALLOCATE ALL. The client prepares its own.
POOL_KWARGS: dict[str, Any] = {
    "autocommit": True,
    "row_factory": dict_row,
    "prepare_threshold": None,
}


# Plain ints: the hot path compares libpq's status codes without an enum lookup per call.
_IDLE = int(TransactionStatus.IDLE)
_PIPELINE_OFF = int(PipelineStatus.OFF)


# The text of recent user ids (str() of a UUID costs about six dictionary lookups): kept only
# for exact UUIDs, whose hash and equality are UUID's own.
_USER_TEXT: dict[UUID, bytes] = {}
_USERS_KEPT = 4096


def left_clean(conn: Any) -> bool:
    """Whether ``conn`` is open, idle and out of pipeline mode: how every call that ended well
    leaves it (nothing to tidy, and not broken)."""
    pgconn = conn.pgconn
    return bool(pgconn.transaction_status == _IDLE and pgconn.pipeline_status == _PIPELINE_OFF)


def not_idle_error(conn: Any, operation: str) -> PostgresTransactionUsageError | None:
    """The error for a borrowed connection that is not idle in autocommit (the one-round-trip
    protocol relies on it: otherwise the user setting would join someone's open
    transaction), or None when it is."""
    pgconn = conn.pgconn
    if (  # written out: this runs on every borrow
        pgconn.transaction_status == _IDLE
        and pgconn.pipeline_status == _PIPELINE_OFF
        and conn.autocommit
    ):
        return None
    status = TransactionStatus(pgconn.transaction_status).name
    if pgconn.pipeline_status != PipelineStatus.OFF:
        status += ", in pipeline mode"
    return PostgresTransactionUsageError(
        f"{operation} failed: a pooled connection was not idle in autocommit ({status}); it "
        "has been discarded",
        operation=operation,
    )


def tidy_action(conn: Any, *, raw: bool) -> str:
    """What a connection needs before it goes back to the pool: ``"close"`` (a raw block's,
    or one interrupted mid-protocol), ``"rollback"`` (left in a transaction) or ``""``. The
    clients ask only for a raw block's or one not :func:`left_clean`."""
    if raw:
        # A raw block can change more than any reset undoes (psycopg adapters and notice
        # handlers, a transaction() block left open, two-phase state, held cursors, LISTEN,
        # session advisory locks...): its connection is never handed on. Its transaction has
        # ended (committed or rolled back); the server ends the rest.
        return "close"
    pgconn = conn.pgconn
    if not conn.closed and pgconn.pipeline_status != PipelineStatus.OFF:
        return "close"  # interrupted between entering pipeline mode and the Sync
    status = pgconn.transaction_status
    if status == TransactionStatus.ACTIVE:
        return "close"  # interrupted mid-call: its protocol state is unknown
    if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        return "rollback"
    return ""


def role_shown(conninfo: str) -> str:
    """``user@host:port/dbname`` of a connection string, for messages (no password; no user
    either when it comes from Vault)."""
    parts = conninfo_to_dict(conninfo)
    where = f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}"
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"{user}{where}/{parts.get('dbname')!s}"


_APP_POOL = "crm-app"
_ADMIN_POOL = "crm-admin"


def _credential_problems(
    url: str,
    credentials: DynamicCredentials | None,
    admin_url: str | None,
    admin_credentials: DynamicCredentials | None,
) -> list[str]:
    """What is wrong with URLs given beside credentials from Vault (which bring their own)."""
    problems = []
    for which, one_url, source in (
        ("connection_url", url, credentials),
        ("admin_connection_url", admin_url, admin_credentials),
    ):
        if source is None or one_url is None:
            continue
        try:
            parts = conninfo_to_dict(one_url)
        except psycopg.Error:
            continue  # reported when it is used, with psycopg's own reason
        if parts.get("user") or parts.get("password"):
            problems.append(
                f"{which} must name no user or password when the credentials come from "
                f"Vault ({source.path})"
            )
    if admin_credentials is not None and admin_url is None:
        problems.append("admin_credentials need an admin_connection_url (host and database)")
    return problems


class PostgresBase:
    """The configuration and the I/O-free part of :class:`PostgresClient` and
    :class:`AsyncPostgresClient`; see :class:`PostgresClient` for the arguments.

    Raises:
        PostgresConfigError: an argument out of range, or a URL that cannot be encoded.
        PostgresError: a URL psycopg cannot read.
    """

    def __init__(
        self,
        connection_url: str,
        pool_size: int = 10,
        *,
        admin_connection_url: str | None = None,
        min_pool_size: int | None = None,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = 30.0,
        admin_statement_timeout: float | None = None,
        pool_timeout: float = 5.0,
        health_check_interval: float = 30.0,
        admin_pool_size: int = 2,
        application_name: str = "crm-infra",
        credentials: DynamicCredentials | None = None,
        admin_credentials: DynamicCredentials | None = None,
    ) -> None:
        name = type(self).__name__
        fixed = (password_of(connection_url), password_of(admin_connection_url or ""))
        self._secrets: Iterable[str | None] = (
            fixed
            if credentials is None and admin_credentials is None
            else LiveSecrets(fixed, (credentials, admin_credentials))
        )
        self._url_shown = scrub(connection_url, self._secrets)
        self._credentials = {_APP_POOL: credentials, _ADMIN_POOL: admin_credentials}
        min_size = min(2, pool_size) if min_pool_size is None else min_pool_size
        problems = _setting_problems(
            pool_size=pool_size,
            min_size=min_size,
            admin_pool_size=admin_pool_size,
            timeouts={"connect_timeout": connect_timeout, "pool_timeout": pool_timeout},
            limits={
                "statement_timeout": statement_timeout,
                "admin_statement_timeout": admin_statement_timeout,
            },
        )
        problems += _credential_problems(
            connection_url, credentials, admin_connection_url, admin_credentials
        )
        if problems:
            raise PostgresConfigError(f"{name}: " + "; ".join(problems), operation="configure")
        self._pool_size = pool_size
        self._min_size = min_size
        self._pool_timeout = pool_timeout
        self._connect_timeout = max(2, math.ceil(connect_timeout))
        self._health_check_interval = health_check_interval
        self._admin_pool_size = admin_pool_size
        self._application_name = application_name
        self._admin_statement_timeout = admin_statement_timeout
        # Sent with the user setting in every call: transaction-local, never a startup option
        # (PgBouncer refuses those, and a pooled session must not carry it).
        self._timeout_value = _milliseconds(statement_timeout)
        self._admin_timeout_value = _milliseconds(admin_statement_timeout)
        self._timeout_bytes = None if self._timeout_value is None else self._timeout_value.encode()
        # The server enforces the timeouts; the client's deadlines are the backstop for when
        # it cannot (a frozen server). The client's own short statements (a ping, BEGIN,
        # ROLLBACK, the role check) answer at once from a live server: they get the connect
        # timeout, whatever statement_timeout.
        self._deadline = None if statement_timeout is None else statement_timeout + GRACE_S
        self._admin_deadline = (
            None if admin_statement_timeout is None else admin_statement_timeout + GRACE_S
        )
        self._short_deadline = float(self._connect_timeout)
        self._statements = StatementCache()
        self._user_tx: ContextVar[UserTxState | None] = ContextVar(
            f"crm_pg_user_tx_{id(self)}", default=None
        )
        self._admin_tx: ContextVar[Any] = ContextVar(f"crm_pg_admin_tx_{id(self)}", default=None)
        self._replaced_at: dict[str, float] = {}
        self._replace_lock = threading.Lock()
        self._opened_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._closed = False
        self._pool: Any = None
        self._admin_pool: Any = None
        try:
            with translate_errors(f"connect to {self._url_shown}", self._secrets):
                self._app_conninfo = self._conninfo(connection_url)
                self._admin_conninfo: str | None = (
                    None
                    if admin_connection_url is None
                    else self._conninfo(admin_connection_url)
                )
        except UnicodeEncodeError:
            raise PostgresConfigError(
                f"{name}: a connection URL cannot be encoded as UTF-8 (a lone surrogate?)",
                operation="configure",
            ) from None
        watch_pools(self)

    def _conninfo(self, url: str) -> str:
        # No statement timeout among the startup options: PgBouncer refuses them (and one
        # that ignores them would silently drop it). It travels with every call instead.
        extra: dict[str, Any] = {"connect_timeout": self._connect_timeout}
        if "application_name" not in conninfo_to_dict(url):
            extra["application_name"] = self._application_name
        return make_conninfo(url, **extra)

    def _held_by_open_block(self, pool: object) -> str:
        """Say so when a block open in this context holds one of ``pool``'s connections."""
        if pool is self._pool and self._user_tx.get() is not None:
            return (
                " (a transaction() block is open here and holds a pooled connection; a "
                "statement meant for that transaction goes through its handle, tx.execute)"
            )
        if pool is self._admin_pool and self._admin_tx.get() is not None:
            return (
                " (an admin_transaction() block is open here and holds a pooled connection; "
                "a statement meant for it goes through its handle, tx.execute)"
            )
        return ""

    def _set_user(self, uid: UUID) -> list[bytes]:
        if type(uid) is UUID:  # not a subclass, which could redefine hash and equality
            user = _USER_TEXT.get(uid)
            if user is None:
                if len(_USER_TEXT) >= _USERS_KEPT:
                    _USER_TEXT.clear()
                user = _USER_TEXT[uid] = str(uid).encode()
        else:
            user = str(uid).encode()
        timeout = self._timeout_bytes
        return [user] if timeout is None else [user, timeout]

    def _prepare(self, conn: Any, checked: Checked, operation: str, query: str) -> Call:
        """Dump the values of ``checked`` for ``conn``; errors say nothing was sent."""
        try:
            return prepare_call(self._statements.state(conn), checked)
        except psycopg.Error as exc:  # a value psycopg cannot adapt
            raise_translated(exc, describe(operation, query), self._secrets)
        except UnicodeEncodeError:
            # Not chained: the codec error holds the whole value (.object).
            raise_sanitized(input_error(describe(operation, query)), None)
        except ValueError as exc:
            raise_sanitized(unsendable_error(describe(operation, query), exc), None)

    def __repr__(self) -> str:
        admin = "configured" if self._admin_conninfo else "none"
        state = "closed" if self._closed else "open"
        dynamic = [s.path for s in self._credentials.values() if s is not None]
        creds = f", credentials={dynamic!r}" if dynamic else ""
        return (
            f"{type(self).__name__}(url={self._url_shown!r}, pool_size={self._pool_size}, "
            f"admin={admin}{creds}, {state})"
        )

    def pool_stats(self) -> dict[str, PoolStats]:
        """Return the state of the open pools (application, and admin once opened), by name."""
        return pool_stats(self)
    # --- short-lived credentials (see credentials.py): looked up only when a pool connects ---

    def _login_kwargs(self, pool_name: str) -> dict[str, Any]:
        """The user and password of a connection made outside the pool (none from a URL that
        holds them)."""
        source = self._credentials[pool_name]
        return {} if source is None else source.connect_kwargs()

    def _pool_kwargs(self, pool_name: str) -> dict[str, Any] | Callable[[], dict[str, Any]]:
        """What a pool passes to each connection it opens: with credentials from Vault, a
        callable the pool calls then (never per call: ``execute`` pays nothing)."""
        source = self._credentials[pool_name]
        if source is None:
            return POOL_KWARGS
        return lambda: {**POOL_KWARGS, **source.connect_kwargs()}

    def _opened(self, pool_name: str, conn: Any) -> None:
        """The pools' ``configure``: note a new connection (and the credentials it used)."""
        source = self._credentials[pool_name]
        if source is not None:
            source.opened(conn)
        self._note_opened(conn)

    def _credentials_expired(self, pool_name: str, operation: str) -> PostgresError | None:
        """The error for a pool timeout that the end of its credentials explains, if any."""
        source = self._credentials[pool_name]
        return None if source is None else source.expired_error(operation)

    def _credential_sources(self) -> list[DynamicCredentials]:
        return [s for s in self._credentials.values() if s is not None]

    def _stop_credentials(self) -> None:
        """Stop renewing (and draining pools that are about to close); may wait for a Vault
        request in flight."""
        for source in self._credential_sources():
            source.stop()

    def _close_credentials(self) -> None:
        """Revoke the leases (after the pools closed); a failure is logged, never raised."""
        for source in self._credential_sources():
            try:
                source.close()
            except Exception:  # cleanup goes on; logged with its cause
                logger.warning("closing the database credentials failed", exc_info=True)

    def _no_admin_url(self, operation: str) -> PostgresConfigError:
        return PostgresConfigError(
            f"{operation} failed: no admin_connection_url was given to {type(self).__name__}; "
            "admin work needs the separate BYPASSRLS role",
            operation=operation,
        )

    def _note_opened(self, conn: Any) -> None:
        self._opened_at[conn] = time.monotonic()
        self._statements.state(conn)  # from now on its idle time counts

    def _idle_long(self, conn: Any) -> bool:
        """Whether a pooled connection sat idle long enough to be pinged before use (a ping
        per borrow would double the round trips of every execute)."""
        idle = time.monotonic() - self._statements.state(conn).last_used
        return idle > self._health_check_interval

    def _first_to_replace(self, pool_name: str, conn: Any) -> bool:
        """``conn`` was broken by the server (a restart, a failover, backends terminated):
        the pool's other connections, opened before, are most likely dead too, and should all
        be replaced now, so that the next calls wait briefly for fresh connections instead of
        each failing on one more dead one. A connection opened before the pool's last
        replacement was covered by it: return False (else every dead one would replace the
        fresh ones)."""
        opened = self._opened_at.get(conn, -math.inf)
        with self._replace_lock:
            if opened <= self._replaced_at.get(pool_name, -math.inf):
                return False
            self._replaced_at[pool_name] = time.monotonic()
        source = self._credentials.get(pool_name)
        if source is not None:
            source.suspect()  # a revoked lease ends its connections like this
        logger.warning(
            "a pooled connection was closed by the server; replacing the idle ones (%s)",
            pool_name,
        )
        return True

    def _handed_back(self, conn: Any) -> None:
        """Note what the cache needs when ``conn`` goes back to the pool."""
        if conn.closed:
            self._statements.forget(conn)
        else:
            self._statements.state(conn).last_used = time.monotonic()

    def _transaction_call(self, state: UserTxState, query: str, params: Params) -> Call:
        """Check and dump a statement of an open transaction, before any I/O; a refusal
        aborts the transaction as on the server (params of the wrong kind do not)."""
        try:
            checked = check_user_sql("transaction.execute", query, params)
            return self._prepare(state.conn, checked, "transaction.execute", query)
        except PostgresParamsError:
            raise  # refused for its kind, as psycopg refuses it: the transaction goes on
        except PostgresError:
            state.refused()  # refused before it was sent: aborted, as on the server
            raise

    def _outer_transaction(self, uid: UUID) -> UserTxState | None:
        """The transaction already open in this context, for the same user, if any.

        Raises:
            PostgresTransactionUsageError: it is another user's.
        """
        outer = self._user_tx.get()
        if outer is not None and outer.user_id != uid:
            raise PostgresTransactionUsageError(
                "transaction failed: already inside a transaction for another user; a user's "
                "work never runs inside another user's transaction",
                operation="transaction",
            )
        return outer
