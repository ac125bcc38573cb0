"""User-scoped statements: checked once per text, sent as one pipeline, named by content.

Every user-scoped statement, inside ``transaction()`` or not, goes through
:func:`._pg_pipeline.run_pipelined` as ONE data statement (:mod:`crm_infra._sql_guard`) with its
values as protocol parameters: no user's value ever travels inside SQL text, so
``pg_stat_activity`` and ``pg_prepared_statements`` show templates only.

Statement names are content-addressed (``_crm_`` + a hash of the text and parameter types), so
the client's per-connection cache is a hint that is exact on a direct connection and may be
wrong behind a transaction pooler such as PgBouncer, where each transaction may get another
server connection. Either way an error that means *nothing ran* is answered by running the
call again, once, the way the error asks:

- ``42P05`` (the Parse found the name taken): the server connection has this very statement;
  run it without the Parse.
- ``26000`` (the Bind found no such statement): run it with the Parse.
- ``0A000`` from ``RevalidateCachedQuery`` (a table changed shape since the plan was made):
  deallocate it, parse it afresh, run it.

Inside a transaction, only its first statement may be run again (the transaction is rolled
back and begun anew); after it, the transaction stays on one server connection, whose
statements the client knows exactly on a direct connection and otherwise only for what this
transaction prepared or ran: the rest goes unnamed (parsed in the call), never guessed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg.abc import Buffer, PQGen
from psycopg.adapt import PyFormat
from psycopg.pq import TransactionStatus
from psycopg.pq.abc import PGconn
from psycopg.rows import DictRow

from crm_infra._sql_guard import Refusal, parameter_refusal, user_sql_verdict
from crm_infra._sql_params import SplitQuery, bind_order, split_placeholders, verbatim
from crm_infra._sql_text import untextable_reason
from crm_infra.adapters.postgres.errors import ResultLoadError
from crm_infra.adapters.postgres.pipeline import (
    Outcome,
    PipelineState,
    Step,
    drive,
    pipeline,
    statement_name,
)
from crm_infra.ports import Params, Row

__all__ = [
    "AnyConnection",
    "Call",
    "Checked",
    "ConnState",
    "StatementCache",
    "SyntaxRefusal",
    "UnsafeSql",
    "UntextableSql",
    "changed_shape",
    "check_call",
    "fetch_last",
    "fetch_last_async",
    "prepare_call",
]

_INT8_OID = 20
_NUMERIC_OID = 1700
_INT8_MIN, _INT8_MAX = -(2**63), 2**63 - 1
_MAX_ATTEMPTS = 3  # as cached, as the error said, then unnamed (which cannot miss)


class UnsafeSql(Exception):
    """User-scoped SQL the guard refuses (see :class:`crm_infra._sql_guard.Refusal`)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message())
        self.refusal = refusal


class SyntaxRefusal(Exception):
    """User-scoped SQL PostgreSQL's grammar rejects; refused before any I/O."""


class UntextableSql(Exception):
    """SQL text the server cannot receive whole (see ``untextable_reason``)."""


class _UserStatement(NamedTuple):
    split: SplitQuery
    sql: bytes
    refusal: Refusal | None
    syntax_error: str | None
    untextable: str | None = None
    accepted: bool = False  # none of the three above: derived once per text, read per call


_STATEMENTS: dict[tuple[str, bool], _UserStatement] = {}
_STATEMENTS_LOCK = threading.Lock()
_MAX_STATEMENTS = 4096


def _user_statement(query: str, with_params: bool) -> _UserStatement:
    """Split and classify ``query`` once per distinct text (``with_params``: psycopg's
    placeholder rules apply; without, the text is sent as written)."""
    key = (query, with_params)
    found = _STATEMENTS.get(key)
    if found is not None:
        return found
    untextable = untextable_reason(query)
    if untextable is not None:  # not cached: such texts are not worth the room
        return _UserStatement(verbatim(""), b"", None, None, untextable)
    split = split_placeholders(query) if with_params else verbatim(query)
    verdict = user_sql_verdict(split.text)
    refusal = verdict.refusal
    if refusal is None and verdict.syntax_error is None:
        refusal = parameter_refusal(split)
    syntax_error = verdict.syntax_error
    accepted = refusal is None and syntax_error is None
    found = _UserStatement(split, split.text.encode(), refusal, syntax_error, None, accepted)
    with _STATEMENTS_LOCK:
        if len(_STATEMENTS) >= _MAX_STATEMENTS:
            _STATEMENTS.clear()  # generated SQL texts could otherwise grow it forever
        _STATEMENTS[key] = found
    return found


class Checked(NamedTuple):
    """A user-scoped statement the guard accepted, with its values in ``$n`` order."""

    statement: _UserStatement
    values: list[Any] | None


class Call(NamedTuple):
    """One user-scoped statement ready to send: checked, its values dumped, its name known."""

    sql: bytes
    name: bytes
    oids: tuple[int, ...]
    params: Sequence[Buffer | None] | None


def check_call(query: str, params: Params) -> Checked:
    """Check ``query`` and fit ``params`` to its placeholders; no connection is needed.

    Raises:
        UntextableSql: the server cannot receive the text whole (a NUL byte...).
        UnsafeSql: the guard refuses the statement.
        SyntaxRefusal: PostgreSQL's grammar rejects it.
        crm_infra._sql_params.ClientSideError: placeholders and params do not fit.
        crm_infra._sql_params.ParamsShapeError: params of the wrong kind (a TypeError).
    """
    with_params = bool(params)
    statement = _STATEMENTS.get((query, with_params)) or _user_statement(query, with_params)
    split = statement.split
    if (  # the common case, told first: an accepted statement, positional values that fit
        statement.accepted
        and type(params) is tuple
        and not split.named
        and len(params) == len(split.keys)
    ):
        return Checked(statement, list(params) if with_params else None)
    if statement.untextable is not None:
        raise UntextableSql(statement.untextable)
    if statement.refusal is not None:
        raise UnsafeSql(statement.refusal)
    if statement.syntax_error is not None:
        raise SyntaxRefusal(statement.syntax_error)
    return Checked(statement, bind_order(statement.split, params) if params else None)


def prepare_call(state: ConnState, checked: Checked) -> Call:
    """Dump the values of ``checked`` for sending on the connection of ``state``.

    Raises:
        psycopg.ProgrammingError: a value psycopg cannot adapt.
        UnicodeEncodeError: a value that cannot be encoded.
        ValueError: a value psycopg cannot write as text.
    """
    statement, values = checked
    if values is None:
        return Call(statement.sql, statement_name(statement.split.text, ()), (), None)
    tx = state.pipeline.transformer
    dumped = tx.dump_sequence(values, _text_formats(len(values)))
    oids = list(tx.types or ())
    for i, value in enumerate(values):
        if type(value) is int:
            # One declared type for every int, whatever its size (psycopg picks int2, int4 or
            # int8 by value): one statement, one plan. Documented: ``%s::int`` where needed.
            oids[i] = _INT8_OID if _INT8_MIN <= value <= _INT8_MAX else _NUMERIC_OID
    key = tuple(oids)
    return Call(statement.sql, statement_name(statement.split.text, key), key, dumped)


_TEXT_FORMATS: dict[int, list[PyFormat]] = {}


def _text_formats(count: int) -> list[PyFormat]:
    formats = _TEXT_FORMATS.get(count)
    if formats is None:
        formats = _TEXT_FORMATS.setdefault(count, [PyFormat.TEXT] * count)
    return formats


AnyConnection = psycopg.Connection[DictRow] | psycopg.AsyncConnection[DictRow]
"""A pooled connection of either twin: the cache keeps the same state for both."""


class ConnState:
    """What the client knows about one pooled connection: the statements it has (exactly on
    a direct connection, as a hint behind a pooler), those whose plan went stale, whether it
    is direct, whether its unnamed statement is the set-user statement, and when it was last
    handed back (for the idle health check)."""

    __slots__ = ("direct", "last_used", "names", "pipeline", "stale", "unnamed_sets_user")

    def __init__(self, conn: AnyConnection) -> None:
        self.names: set[bytes] = set()
        self.stale: set[bytes] = set()
        self.direct = False  # until a call shows the server's pid is the one we connected to
        # Only this client's own messages can change the unnamed statement of a direct
        # connection (SQL cannot): every send outside the pipeline clears this.
        self.unnamed_sets_user = False
        self.last_used = time.monotonic()
        self.pipeline = PipelineState(conn)


class StatementCache:
    """Per-connection state, keyed by connection; see :class:`ConnState`.

    A new connection starts with an empty cache, which is what "cleared on reconnect" needs;
    ``forget`` empties one connection's cache.
    """

    def __init__(self, max_per_connection: int = 256) -> None:
        self._max = max_per_connection
        self._by_conn: dict[AnyConnection, ConnState] = {}
        self._lock = threading.Lock()

    def state(self, conn: AnyConnection) -> ConnState:
        """Return the state of ``conn``, creating it on first sight."""
        entry = self._by_conn.get(conn)
        if entry is None:
            with self._lock:
                # The state's transformer refers to its connection, so weak keys alone would
                # never let go: drop closed connections whenever a new one shows up (rare).
                for old in [c for c in self._by_conn if c.closed]:
                    del self._by_conn[old]
                entry = self._by_conn.setdefault(conn, ConnState(conn))
        return entry

    def unnamed_lost(self, conn: AnyConnection) -> None:
        """Note that ``conn`` is about to be used outside the pipeline (a simple query, a
        ping...), which may replace or drop its unnamed statement."""
        entry = self._by_conn.get(conn)
        if entry is not None:
            entry.unnamed_sets_user = False

    def forget(self, conn: AnyConnection) -> None:
        """Drop what is known about ``conn``'s prepared statements."""
        with self._lock:
            self._by_conn.pop(conn, None)

    def clear(self) -> None:
        """Forget every connection (the pools were closed)."""
        with self._lock:
            self._by_conn.clear()

    def run(self, conn: psycopg.Connection[DictRow], call: Call, **how: Any) -> list[Row]:
        """:meth:`run_gen` on ``conn`` (a sync connection), waiting as psycopg does."""
        return drive(conn, self.run_gen(conn.pgconn, self.state(conn), call, **how))

    def run_in_transaction(
        self, conn: psycopg.Connection[DictRow], call: Call, **how: Any
    ) -> list[Row]:
        """:meth:`run_in_transaction_gen` on ``conn`` (a sync connection)."""
        return drive(
            conn, self.run_in_transaction_gen(conn.pgconn, self.state(conn), call, **how)
        )

    def run_gen(
        self,
        pgconn: PGconn,
        state: ConnState,
        call: Call,
        *,
        set_user: Sequence[bytes],
        head: Sequence[bytes] = (),
        after: Sequence[bytes] = (),
        confirmed: set[bytes] | None = None,
    ) -> PQGen[list[Row]]:
        """Run ``call`` as the user in ``set_user``: on its own (autocommit), or as the first
        statement of a transaction (``head`` holds its ``BEGIN``, ``after`` savepoints). A
        generator for the connection's ``wait``; the sync and async clients drive the same one.

        An answer that means nothing ran is met by running the call again (see the module
        docstring); a transaction begun by ``head`` is rolled back first.

        Raises:
            psycopg.Error: the server's error, or the connection failed.
        """
        name = call.name
        known = name in state.names
        if not known and len(state.names) >= self._max:
            name = b""  # the cache is full: let the server plan it in this call, unnamed
        parse, close = not known, name in state.stale
        sent_head = tuple(head)
        for attempt in range(_MAX_ATTEMPTS):
            # Parsed afresh unless provably the set-user statement (see _pg_pipeline).
            rebind = state.direct and state.unnamed_sets_user and not sent_head
            outcome = yield from pipeline(
                pgconn,
                state.pipeline,
                head=sent_head,
                set_user=set_user,
                rebind_set_user=rebind,
                after=after,
                name=name,
                sql=call.sql,
                oids=call.oids,
                params=call.params,
                parse=parse,
                close=close,
            )
            _learn(pgconn, state, outcome, name, confirmed)
            error = outcome.error
            if error is None:
                return outcome.rows
            if rebind and outcome.failed == Step.SET_USER:
                # Not the statement the client took it for (nothing of the call ran): parse
                # it afresh. A bug of the client's own, never a wrong user.
                again: tuple[bool, bool] | None = (parse, close)
            else:
                again = _nothing_ran(outcome.failed, error) if name else None
            if again is None or attempt == _MAX_ATTEMPTS - 1:
                self._note_failure(state, name, outcome.failed, error)
                raise error
            parse, close = again
            if parse:
                state.names.discard(name)
            if attempt == _MAX_ATTEMPTS - 2:
                # Behind a pooler the next try may meet yet another server connection: the
                # last one goes unnamed, which every server connection runs alike.
                name, parse, close = b"", False, False
            if head and pgconn.transaction_status == TransactionStatus.INERROR:
                sent_head = (b"ROLLBACK", *head)  # the transaction begun by head is aborted
            else:
                sent_head = tuple(head)
        raise AssertionError("unreachable")  # pragma: no cover

    def run_in_transaction_gen(
        self,
        pgconn: PGconn,
        state: ConnState,
        call: Call,
        *,
        head: Sequence[bytes],
        confirmed: set[bytes],
    ) -> PQGen[list[Row]]:
        """Run ``call`` in the transaction open on the connection (after its first
        statement); a generator for the connection's ``wait``.

        Nothing is run twice here (the transaction is the caller's): a statement goes
        prepared only when the server connection is known to have it, or known not to.

        Raises:
            psycopg.Error: the server's error, or the connection failed.
        """
        name = call.name
        stale = name in state.stale
        if not stale and (name in confirmed or (state.direct and name in state.names)):
            parse = False
        elif state.direct and (stale or len(state.names) < self._max):
            parse = True
        else:
            name, parse, stale = b"", False, False  # unknown here: parsed in the call, unnamed
        outcome = yield from pipeline(
            pgconn,
            state.pipeline,
            head=head,
            name=name,
            sql=call.sql,
            oids=call.oids,
            params=call.params,
            parse=parse,
            close=stale,
        )
        _learn(pgconn, state, outcome, name, confirmed)
        if outcome.error is not None:
            self._note_failure(state, name, outcome.failed, outcome.error)
            raise outcome.error
        return outcome.rows

    @staticmethod
    def _note_failure(
        state: ConnState, name: bytes, step: str | None, error: psycopg.Error
    ) -> None:
        if not name:
            return
        if step == Step.RUN and changed_shape(error):
            state.stale.add(name)  # the next use deallocates and parses it afresh
        elif error.sqlstate == "26000" and step in (Step.RUN, Step.CLOSE):
            state.names.discard(name)
            state.stale.discard(name)


def _learn(
    pgconn: PGconn,
    state: ConnState,
    outcome: Outcome,
    name: bytes,
    confirmed: set[bytes] | None,
) -> None:
    """Record what a pipeline showed about the connection."""
    if outcome.pid is not None:
        state.direct = outcome.pid == pgconn.backend_pid
    if outcome.unnamed_sets_user is not None:
        state.unnamed_sets_user = outcome.unnamed_sets_user
    if name and (outcome.parsed or outcome.error is None):
        state.names.add(name)
        state.stale.discard(name)
        if confirmed is not None:
            confirmed.add(name)


def _nothing_ran(step: str | None, error: psycopg.Error) -> tuple[bool, bool] | None:
    """Return how to run a call again after ``error`` at ``step`` when nothing of it ran:
    ``(parse, close)``; None when something may have run (or it would fail again)."""
    state = error.sqlstate
    if step == Step.PARSE and state == "42P05":
        return False, False  # the name is taken: by this very statement
    if step in (Step.RUN, Step.CLOSE) and state == "26000":
        return True, False  # this server connection lacks it
    if step == Step.RUN and changed_shape(error):
        return True, True
    return None


def changed_shape(error: psycopg.Error) -> bool:
    """Return True for "cached plan must not change result type" (told by where it is raised,
    which does not depend on the server's message language)."""
    return (
        error.sqlstate == "0A000" and error.diag.source_function == "RevalidateCachedQuery"
    )


async def fetch_last_async(cur: psycopg.AsyncCursor[DictRow]) -> list[Row]:
    """:func:`fetch_last` for an asyncio cursor."""
    while cur.nextset():
        pass
    if cur.description is None:
        return []
    try:
        return await cur.fetchall()
    except psycopg.DataError as exc:
        if exc.sqlstate:
            raise
        raise ResultLoadError.wrap(exc) from exc


def fetch_last(cur: psycopg.Cursor[DictRow]) -> list[Row]:
    """Return the rows of the cursor's last result set; ``[]`` when it returned no rows."""
    while cur.nextset():
        pass
    if cur.description is None:
        return []
    try:
        return cur.fetchall()
    except psycopg.DataError as exc:
        if exc.sqlstate:
            raise
        raise ResultLoadError.wrap(exc) from exc
