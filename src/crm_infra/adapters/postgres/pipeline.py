"""One user-scoped call in one round trip: a libpq pipeline up to one Sync.

For a user-scoped ``execute`` the client sends, through libpq's pipeline mode on the
connection's ``pgconn``::

    [head statements]  set-user (unnamed)  [Close S]  [Parse S]  Bind/Execute S(values)  Sync

The set-user statement (``set_config('app.current_user_id', $1, true)``, with the statement
timeout beside it) is the UNNAMED statement, which no SQL can create, replace or drop (SQL's
``PREPARE`` and ``DEALLOCATE`` know named statements only): only a protocol-level Parse from a
client can. So nothing in a pooled session decides who a call runs as. Behind a pooler (where
other clients share the server session) it is parsed in every call; on a direct connection,
whose only client is this one, the client knows whether its last unnamed Parse was the
set-user statement and then binds it again without parsing (the proof the cached statement is
untouched), which costs what a named statement costs. ``S`` is the caller's statement under
a content-addressed name (:func:`statement_name`), so a server connection that has a statement
of that name has the same statement; its plan is reused. Values travel as protocol
parameters, never inside SQL text.

The extended protocol runs everything up to the Sync in order, in one implicit transaction
when the connection starts idle in autocommit (the caller asserts it), so the
transaction-local settings are in force for the statement and gone at the Sync. After an
error the results are drained to the Sync, so the connection stays usable; a call interrupted
before the Sync was read leaves the protocol state unknown, so the connection is closed.

This works below psycopg's public API (pipeline mode on ``pgconn``, psycopg's generators and
``Connection.wait``), which is why ``pyproject.toml`` pins psycopg's minor version.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar

import psycopg
from psycopg import abc as pg_abc
from psycopg import errors as pg_errors
from psycopg import pq, waiting
from psycopg.abc import Buffer, PQGen
from psycopg.adapt import Transformer
from psycopg.generators import fetch_many, send
from psycopg.pq import ExecStatus
from psycopg.pq.abc import PGconn, PGresult
from psycopg.rows import DictRow

from crm_infra.adapters.postgres.errors import ResultLoadError
from crm_infra.ports import Row

__all__ = [
    "SET_USER",
    "SET_USER_AND_TIMEOUT",
    "Outcome",
    "PipelineState",
    "Step",
    "drive",
    "drive_async",
    "pipeline",
    "run_pipelined",
    "statement_name",
]

# Unnamed, parsed in every call (see the module docstring). The backend's pid comes back so
# that the client can tell a direct connection (the pid it was given at connect time) from a
# pooler's (PgBouncer hands out its own), which decides how far its statement cache is known.
SET_USER = (
    b"SELECT set_config('app.current_user_id', $1, true) AS crm_user, pg_backend_pid() AS crm_pid"
)
SET_USER_AND_TIMEOUT = (
    b"SELECT set_config('app.current_user_id', $1, true) AS crm_user, "
    b"set_config('statement_timeout', $2, true), pg_backend_pid() AS crm_pid"
)
T = TypeVar("T")
_TEXT_OID = 25
# The protocol's Close message (libpq 17+; psycopg's binary wheel bundles a newer libpq) drops
# a statement without an SQL statement: no error when it is missing, and a pooler that tracks
# prepared statements (PgBouncer 1.21+) sees it. Older libpq: DEALLOCATE, in SQL.
_CLOSE_MESSAGE = pq.version() >= 170000
# Plain ints: an IntEnum member costs a slow class attribute lookup, several per call here.
_FATAL_ERROR = int(ExecStatus.FATAL_ERROR)
_TUPLES_OK = int(ExecStatus.TUPLES_OK)
_COMMAND_OK = int(ExecStatus.COMMAND_OK)
_PIPELINE_SYNC = int(ExecStatus.PIPELINE_SYNC)
# How long an asyncio wait sleeps before it looks at the socket again (psycopg's own value).
_WAIT_INTERVAL = 0.1


@functools.lru_cache(maxsize=8192)
def statement_name(sql: str, oids: tuple[int, ...]) -> bytes:
    """Return the content-addressed name of ``sql`` prepared with parameter types ``oids``.

    Two connections (or two processes behind one PgBouncer) that prepare the same text with
    the same types get the same name, and a name never stands for another statement, so a
    server connection that already has the name has this very statement.
    """
    digest = hashlib.sha256(f"{sql}\x00{','.join(map(str, oids))}".encode()).hexdigest()
    return f"_crm_{digest[:40]}".encode()


class PipelineState:
    """What one connection needs for pipelined calls: a reusable transformer (it caches
    dumpers and loaders) and the connection's encoding."""

    __slots__ = ("encoding", "transformer")

    def __init__(
        self, conn: psycopg.Connection[DictRow] | psycopg.AsyncConnection[DictRow]
    ) -> None:
        self.transformer: pg_abc.Transformer = Transformer(conn)
        self.encoding = conn.info.encoding


class Step:
    """Which message of a pipeline an error came from (indexes into the results)."""

    HEAD = "head"
    SET_USER = "set-user"
    CLOSE = "close"
    PARSE = "parse"
    RUN = "run"


class Outcome(NamedTuple):
    """What one pipelined call gave: its rows, or the error the server answered with and
    the step it answered it to; the backend's pid when the set-user statement ran, and
    whether the unnamed statement is the set-user statement after the call."""

    rows: list[Row]
    error: psycopg.Error | None
    failed: str | None  # a Step, when error
    pid: int | None
    parsed: bool  # the Parse of the statement succeeded in this call
    # The unnamed statement after the call: the set-user statement (True), another or none
    # (False), or as it was before (None: nothing went unnamed).
    unnamed_sets_user: bool | None = False


def pipeline(
    pgconn: PGconn,
    state: PipelineState,
    *,
    head: Sequence[bytes] = (),
    set_user: Sequence[bytes] | None = None,
    rebind_set_user: bool = False,
    after: Sequence[bytes] = (),
    name: bytes,
    sql: bytes,
    oids: Sequence[int],
    params: Sequence[Buffer | None] | None,
    parse: bool,
    close: bool = False,
) -> PQGen[Outcome]:
    """Run the caller's statement, with what goes before it, in one round trip: a generator
    for the connection's ``wait`` (``conn.wait`` or ``await conn.wait``), as psycopg's own.

    Args:
        pgconn: the libpq connection of a connection not in pipeline mode (idle in
            autocommit, or in a transaction).
        state: the connection's :class:`PipelineState`.
        head: statements without parameters to run first (``BEGIN``...).
        set_user: the set-user statement's values (user id[, timeout]), or None to set none.
        rebind_set_user: the unnamed statement is known to be the set-user statement of
            this shape: bind it without parsing.
        after: statements without parameters to run after the user setting (savepoints).
        name: the statement's name; ``b""`` runs it unnamed (parsed in this call).
        sql: the statement's text with ``$n`` placeholders.
        oids: the declared parameter types.
        params: the dumped parameter values, in ``$n`` order.
        parse: send a Parse of ``name`` first (ignored for the unnamed statement).
        close: DEALLOCATE ``name`` before the Parse (its plan went stale).

    Returns:
        The rows (``[]`` for a statement without a result), or the server's error and step.

    Raises:
        psycopg.Error: the connection failed. Nothing is sent when encoding fails (the
            caller encodes and dumps before calling). Whoever drives the generator closes the
            connection when it ends in any exception (see :func:`run_pipelined`).
    """
    pgconn.enter_pipeline_mode()
    steps = _send_head(pgconn, head, set_user, rebind_set_user, after)
    _send_statement(
        pgconn, steps, name, sql=sql, oids=oids, params=params, parse=parse, close=close
    )
    pgconn.pipeline_sync()
    results = yield from _exchange(pgconn, len(steps))
    pgconn.exit_pipeline_mode()
    # What the unnamed statement is now: the set-user statement, when nothing after it went
    # unnamed and it ran; as before, when nothing went unnamed at all.
    unnamed_after = bool(after) or not name or (close and not _CLOSE_MESSAGE)
    if set_user is None:
        keeps: bool | None = False if (head or unnamed_after) else None
    else:
        keeps = not unnamed_after
    return _outcome(state, steps, results, keeps)


def drive(conn: psycopg.Connection[DictRow], gen: PQGen[T]) -> T:
    """Run a protocol generator on ``conn``, as psycopg runs its own.

    An exception that leaves the protocol mid-way (interrupted or disconnected before the
    Sync was read: still in pipeline mode, or a query active) closes ``conn``: what the
    server still has to say is unknown, so it cannot be used again. One the server broke is
    left as it is, so that the pool sees it was the server. An error the server answered
    leaves the connection idle and usable.
    """
    try:
        return conn.wait(gen)
    except BaseException as exc:
        if not conn.closed and _unusable(conn.pgconn, exc):
            conn.close()
        raise


async def drive_async(conn: psycopg.AsyncConnection[DictRow], gen: PQGen[T]) -> T:
    """:func:`drive` for an asyncio connection. A cancelled call closes it at once (psycopg's
    own ``wait`` would first try to cancel the query, for up to 5 s)."""
    try:
        # A wait wakes at the socket, or after the interval to look again: psycopg's own
        # interval. Without one, every wait would spin through the event loop until the answer
        # came (the default of 0 re-polls at once).
        return await waiting.wait_async(gen, conn.pgconn.socket, interval=_WAIT_INTERVAL)
    except BaseException as exc:
        if not conn.closed and _unusable(conn.pgconn, exc):
            await conn.close()
        raise


def _unusable(pgconn: PGconn, exc: BaseException) -> bool:
    return (
        pgconn.pipeline_status != pq.PipelineStatus.OFF
        or pgconn.transaction_status == pq.TransactionStatus.ACTIVE
        or isinstance(exc, psycopg.InternalError)  # the client's own bookkeeping was wrong
    )


def run_pipelined(conn: psycopg.Connection[DictRow], state: PipelineState, **how: Any) -> Outcome:
    """:func:`pipeline` run on ``conn`` (see :func:`drive`)."""
    return drive(conn, pipeline(conn.pgconn, state, **how))


def _send_head(
    pgconn: PGconn,
    head: Sequence[bytes],
    set_user: Sequence[bytes] | None,
    rebind_set_user: bool,
    after: Sequence[bytes],
) -> list[str]:
    steps: list[str] = []
    for statement in head:
        pgconn.send_query_params(statement, None)
        steps.append(Step.HEAD)
    if set_user is not None:
        if rebind_set_user:
            pgconn.send_query_prepared(b"", set_user)
        else:
            pgconn.send_query_params(
                SET_USER if len(set_user) == 1 else SET_USER_AND_TIMEOUT,
                set_user,
                param_types=[_TEXT_OID] * len(set_user),
            )
        steps.append(Step.SET_USER)
    for statement in after:
        pgconn.send_query_params(statement, None)
        steps.append(Step.HEAD)
    return steps


def _send_statement(
    pgconn: PGconn,
    steps: list[str],
    name: bytes,
    *,
    sql: bytes,
    oids: Sequence[int],
    params: Sequence[Buffer | None] | None,
    parse: bool,
    close: bool,
) -> None:
    if not name:
        pgconn.send_query_params(sql, params, param_types=oids)
    else:
        if close:
            if _CLOSE_MESSAGE:
                pgconn.send_close_prepared(name)
            else:
                pgconn.send_query_params(b"DEALLOCATE " + name, None)
            steps.append(Step.CLOSE)
        if parse:
            pgconn.send_prepare(name, sql, param_types=oids)
            steps.append(Step.PARSE)
        pgconn.send_query_prepared(name, params)
    steps.append(Step.RUN)


def _outcome(
    state: PipelineState, steps: list[str], results: list[PGresult], keeps: bool | None
) -> Outcome:
    pid = None
    parsed = False
    for step, result in zip(steps, results, strict=True):
        status = result.status
        if status == _FATAL_ERROR:
            error = pg_errors.error_from_result(result, encoding=state.encoding)
            if keeps:
                keeps = pid is not None  # it ran: the failure came after it
            return Outcome([], error, step, pid, parsed, keeps)
        if step == Step.SET_USER:
            pid = _set_user_pid(result)
        elif step == Step.PARSE:
            parsed = status == _COMMAND_OK
    rows = _rows(state.transformer, results[-1], state.encoding)
    return Outcome(rows, None, None, pid, parsed, keeps)


def _set_user_pid(result: PGresult) -> int:
    """The backend's pid from the set-user statement's row, which must be that statement's
    (a check on the client's own bookkeeping of the unnamed statement)."""
    if (
        result.status != _TUPLES_OK
        or result.ntuples != 1
        or result.fname(0) != b"crm_user"
        or result.fname(result.nfields - 1) != b"crm_pid"
    ):
        raise psycopg.InternalError(
            "the statement that sets the user answered as another statement; the connection "
            "is closed"
        )
    value = result.get_value(0, result.nfields - 1)
    return int(value or b"0")


def _exchange(pgconn: PGconn, expected: int) -> PQGen[list[PGresult]]:
    """Flush the pipeline, then read each statement's result and the Sync."""
    yield from send(pgconn)
    results: list[PGresult] = []
    for _ in range(expected):
        # One statement's results up to its terminating NULL (an aborted one gives
        # PIPELINE_ABORTED); the last of them is the one that counts.
        got = yield from fetch_many(pgconn)
        results.append(got[-1])
    sync = yield from fetch_many(pgconn)
    if not sync or sync[-1].status != _PIPELINE_SYNC:
        raise psycopg.OperationalError("the server's answer to a pipeline ended unexpectedly")
    return results


def _rows(tx: pg_abc.Transformer, result: PGresult, encoding: str) -> list[Row]:
    if result.status != _TUPLES_OK or not result.ntuples:
        return []
    tx.set_pgresult(result)
    names = [(result.fname(i) or b"").decode(encoding) for i in range(result.nfields)]

    def make_row(values: Sequence[Any]) -> Row:
        return dict(zip(names, values, strict=True))

    try:
        rows: list[Row] = tx.load_rows(0, result.ntuples, make_row)
    except psycopg.DataError as exc:
        raise ResultLoadError.wrap(exc) from exc
    return rows
