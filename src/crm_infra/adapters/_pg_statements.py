"""One round trip per user-scoped statement, with reused plans.

``execute`` of one preparable statement goes as a libpq pipeline (:mod:`._pg_pipeline`).
Everything else (statements inside ``transaction()``, SQL that cannot be prepared, values of
other types) sends ONE simple-Query message::

    [BEGIN;] EXECUTE _crm_set_user('<uuid>'); EXECUTE _crm_sN(<literals>)

``_crm_set_user`` is ``SELECT set_config('app.current_user_id', $1, true)``, prepared when the
pool opens the connection; ``PREPARE _crm_sN(<types>) AS <statement>`` goes before the EXECUTE
the first time a connection sees that SQL text with those parameter types. The protocol runs
every statement of one simple Query in order, in one implicit transaction when the
connection is idle in autocommit, so the transaction-local setting is in force for the
statement and is gone when the message ends. Literals are quoted by psycopg's
``ClientCursor`` (libpq's escaping, for the connection's encoding), and server plans are
reused through the per-connection cache as psycopg's own prepared statements are.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import threading
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg import ClientCursor
from psycopg.rows import DictRow, dict_row

from crm_infra.adapters._pg_errors import ResultLoadError
from crm_infra.adapters._pg_pipeline import PipelineState, run_pipelined, type_oids
from crm_infra.adapters._pg_sql_checks import DOLLAR_OPEN, LITERAL_OR_COMMENT, QUOTED_NAME
from crm_infra.ports import Params, Row

__all__ = [
    "ConnState",
    "StatementCache",
    "fetch_last",
    "to_dollar_placeholders",
]

_PLACEHOLDER = re.compile(r"%(?:\(([^)]+)\))?s|%%|%")
_PREPARABLE = frozenset(
    {"select", "insert", "update", "delete", "values", "with", "table", "merge"}
)
_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*", re.DOTALL)

# The parameter types psycopg's own binding gives these Python types, as far as the result's
# Python type goes. ``unknown`` lets the server infer from context (psycopg sends str and None
# untyped too). A value of any other type makes the call run unprepared.
_PG_TYPE: dict[type, str] = {
    str: "unknown",
    type(None): "unknown",
    bool: "bool",
    float: "float8",
    Decimal: "numeric",
    UUID: "uuid",
    dt.date: "date",
    dt.time: "time",
    dt.timedelta: "interval",
    bytes: "bytea",
}
_INT8_MIN, _INT8_MAX = -(2**63), 2**63 - 1


def to_dollar_placeholders(query: str, params: Params) -> tuple[str, list[Any]] | None:
    """Return ``query`` with ``$n`` placeholders and the values in ``$n`` order.

    Follows psycopg's placeholder rules (``%s``, ``%(name)s``, ``%%``); returns None when the
    query mixes styles, uses another format, or does not match the parameters, so that the
    caller falls back to psycopg, which raises the proper error.
    """
    if isinstance(params, str | bytes | bytearray):
        return None  # not a sequence of values: psycopg raises its TypeError
    if isinstance(params, Mapping):
        plan = _plan(query, True)
        if plan is None or not all(name in params for name in plan[1]):
            return None
        return plan[0], [params[name] for name in plan[1]]
    plan = _plan(query, False)
    if plan is None or plan[1] != len(params):
        return None
    return plan[0], list(params)


@functools.lru_cache(maxsize=1024)
def _plan(query: str, named: bool) -> tuple[str, Any] | None:
    """Parse placeholders once per query text: ($n text, names in order | count)."""
    names: dict[str, int] = {}
    count = 0
    failed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal failed, count
        piece, name = match.group(0), match.group(1)
        if piece == "%%":
            return "%"
        if piece == "%" or named != (name is not None):
            failed = True
            return piece
        if named:
            if name not in names:
                names[name] = len(names) + 1
            return f"${names[name]}"
        count += 1
        return f"${count}"

    converted = _PLACEHOLDER.sub(replace, query)
    if failed:
        return None
    return converted, (list(names) if named else count)


def _pg_type(value: Any) -> str | None:
    kind = type(value)
    if kind is int:
        return "int8" if _INT8_MIN <= value <= _INT8_MAX else "numeric"
    if kind is dt.datetime:
        return "timestamp" if value.tzinfo is None else "timestamptz"
    if kind is dt.time and value.tzinfo is not None:
        return "timetz"
    return _PG_TYPE.get(kind)


@functools.lru_cache(maxsize=1024)
def _preparable(query: str) -> bool:
    """Return True for one statement of a kind PREPARE accepts (several run unprepared)."""
    head = _LEADING_NOISE.sub("", query, count=1)
    word = re.match(r"[A-Za-z]+", head)
    if word is None or word.group(0).lower() not in _PREPARABLE:
        return False
    code = _SKIPPABLE.sub(" ", query)
    # A ``$1`` of the caller's own would clash with the placeholders: the server's own error
    # for it ("there is no parameter $1") comes from the unprepared path.
    return ";" not in code and _DOLLAR_PARAMETER.search(code) is None


# Things a ';' may hide in: quoted strings and identifiers, dollar quotes, comments.
_SKIPPABLE = re.compile(
    rf"{LITERAL_OR_COMMENT}|{QUOTED_NAME}|{DOLLAR_OPEN}.*?(?:(?P=tag)|\Z)", re.DOTALL
)


_DOLLAR_PARAMETER = re.compile(r"\$\d")


def _has_statement_break(query: str) -> bool:
    return ";" in _SKIPPABLE.sub(" ", query)


class ConnState:
    """What the client knows about one pooled connection: its prepared statements, a reusable
    cursor, and when it was last handed back (for the idle health check)."""

    __slots__ = ("cursor", "issued", "last_used", "names", "pipeline")

    def __init__(self, conn: psycopg.Connection[DictRow]) -> None:
        self.names: dict[tuple[str, tuple[str | None, ...]], str] = {}
        self.issued = 0
        self.last_used = time.monotonic()
        self.cursor = ClientCursor(conn, row_factory=dict_row)
        self.pipeline = PipelineState(conn)

    def new_name(self, limit: int) -> str | None:
        if self.issued >= limit:
            return None
        self.issued += 1
        return f"_crm_s{self.issued}"

    def release(self, name: str) -> None:
        """Take back the name just issued, which the server never got (its Parse failed)."""
        if name == f"_crm_s{self.issued}":
            self.issued -= 1


class StatementCache:
    """Per-connection state, keyed by connection; see :class:`ConnState`.

    Statement names are never reused, so a statement whose PREPARE may or may not have run
    (the message failed) is simply forgotten. A new connection starts with an empty cache,
    which is what "cleared on reconnect" needs; ``forget`` empties one connection's cache.
    """

    def __init__(self, max_per_connection: int = 256) -> None:
        self._max = max_per_connection
        self._by_conn: dict[psycopg.Connection[DictRow], ConnState] = {}
        self._lock = threading.Lock()

    def state(self, conn: psycopg.Connection[DictRow]) -> ConnState:
        """Return the state of ``conn``, creating it on first sight."""
        entry = self._by_conn.get(conn)
        if entry is None:
            with self._lock:
                # The state's cursor refers to its connection, so weak keys alone would never
                # let go: drop closed connections whenever a new one shows up (rare).
                for old in [c for c in self._by_conn if c.closed]:
                    del self._by_conn[old]
                entry = self._by_conn.setdefault(conn, ConnState(conn))
        return entry

    def forget(self, conn: psycopg.Connection[DictRow]) -> None:
        """Drop what is known about ``conn``'s prepared statements."""
        with self._lock:
            self._by_conn.pop(conn, None)

    def clear(self) -> None:
        """Forget every connection (the pools were closed)."""
        with self._lock:
            self._by_conn.clear()

    def prepare_connection(self, conn: psycopg.Connection[DictRow]) -> None:
        """Prepare the user-setting statement on a new connection (the pool's ``configure``)."""
        conn.execute(_PREPARE_SET_USER)
        self.state(conn)

    def reset(self, conn: psycopg.Connection[DictRow]) -> None:
        """Deallocate everything on ``conn`` (idle) and start its cache afresh."""
        self.forget(conn)
        conn.execute("DEALLOCATE ALL")
        self.prepare_connection(conn)

    def _key(self, query: str, params: Params) -> tuple[str, tuple[str | None, ...]] | None:
        query = query.strip().rstrip(";").rstrip()
        converted = to_dollar_placeholders(query, params) if params else (query, [])
        if converted is None or not _preparable(query):
            return None
        sql, values = converted
        types = tuple(_pg_type(v) for v in values)
        return None if None in types else (sql, types)

    def is_prepared(self, conn: psycopg.Connection[DictRow], query: str, params: Params) -> bool:
        """Return True when :meth:`run` would send ``query`` as an EXECUTE of a statement
        already prepared on ``conn``, not as its text."""
        key = self._key(query, params)
        return key is not None and key in self.state(conn).names

    def forget_if_stale(
        self, conn: psycopg.Connection[DictRow], query: str, params: Params, error: psycopg.Error
    ) -> None:
        """After ``error`` from running ``query``: when it says the tables changed shape since
        the statement was prepared, forget the statement, so the next run prepares it afresh
        (its name is never reused; the server drops it with the connection)."""
        key = self._key(query, params)
        if key is not None and changed_shape(error):
            self.state(conn).names.pop(key, None)

    def run(
        self,
        conn: psycopg.Connection[DictRow],
        query: str,
        params: Params,
        *,
        user: str | None = None,
        before: str = "",
        after: str = "",
    ) -> list[Row]:
        """Send one simple-Query message; return the last statement's rows.

        The message is ``before``, then the user setting when ``user`` is given, then
        ``after``, then the statement (prepared on first sight, then EXECUTEd).

        Args:
            conn: an idle or in-transaction connection (the caller checks which it expects).
            query: the caller's statement; ``%s``/``%(name)s`` placeholders when ``params``.
            params: values for ``query``; empty means the text is sent as written.
            user: the user id to set transaction-locally, or None to set nothing.
            before: statements without placeholders to send first (e.g. ``BEGIN; ``).
            after: statements without placeholders to send after the user setting.
        """
        state = self.state(conn)
        cur = state.cursor
        head = before + (_EXECUTE_SET_USER if user is not None else "") + after
        head_params = [user] if user is not None else []
        query = query.strip().rstrip(";").rstrip()
        converted = to_dollar_placeholders(query, params) if params else (query, [])
        if converted is None or not _preparable(query):
            return _run_unprepared(cur, head, head_params, query, params)
        sql, values = converted
        types = tuple(_pg_type(v) for v in values)
        if None in types:
            return _run_unprepared(cur, head, head_params, query, params)
        key = (sql, types)
        name = state.names.get(key)
        if user is not None and not before and not after:
            return self._run_pipelined(conn, state, key, name=name, user=user, values=values)
        if name is not None:
            cur.execute(head + _call(name, len(values)), [*head_params, *values])
            return fetch_last(cur)
        name = state.new_name(self._max)
        if name is None:  # cache full: run unprepared rather than evict a live plan
            return _run_unprepared(cur, head, head_params, query, params)
        declared = f"({', '.join(t for t in types if t)})" if types else ""
        # The newline ends a trailing ``--`` comment, which would otherwise swallow the EXECUTE.
        prepare = f"PREPARE {name}{declared} AS {sql.replace('%', '%%')}\n; "
        cur.execute(head + prepare + _call(name, len(values)), [*head_params, *values])
        state.names[key] = name  # only once the server has it
        return fetch_last(cur)

    def _run_pipelined(
        self,
        conn: psycopg.Connection[DictRow],
        state: ConnState,
        key: tuple[str, tuple[str | None, ...]],
        *,
        name: str | None,
        user: str,
        values: list[Any],
    ) -> list[Row]:
        prepare = None
        if name is None:
            name = state.new_name(self._max)
            if name is None:  # cache full: let the server plan it each time, unnamed
                name = ""
            prepare = (key[0], type_oids(key[1]))
        outcome = run_pipelined(
            conn, state.pipeline, name=name, prepare=prepare, user=user, values=values
        )
        if outcome.prepared and name:
            state.names[key] = name  # the server has it, even if running it then failed
        elif prepare is not None and name:
            state.release(name)  # its Parse failed: the server has no such statement
        error = outcome.error
        if error is None:
            return outcome.rows
        if prepare is None and changed_shape(error):
            # The statement's tables changed shape since it was prepared (``SELECT *`` after
            # a new column): the call ran nothing, so prepare it afresh and run it again.
            del state.names[key]
            conn.execute(f"DEALLOCATE {name}")
            return self._run_pipelined(conn, state, key, name=None, user=user, values=values)
        raise error


def changed_shape(error: psycopg.Error) -> bool:
    """Return True for "cached plan must not change result type" (told by where it is raised,
    which does not depend on the server's message language)."""
    return (
        error.sqlstate == "0A000" and error.diag.source_function == "RevalidateCachedQuery"
    )


# Prepared once per connection, so the per-call setting costs the server no parse or plan.
_PREPARE_SET_USER = (
    "PREPARE _crm_set_user(text) AS SELECT set_config('app.current_user_id', $1, true)"
)
_EXECUTE_SET_USER = "EXECUTE _crm_set_user(%s); "


@functools.lru_cache(maxsize=4096)
def _call(name: str, count: int) -> str:
    return f"EXECUTE {name}({', '.join(['%s'] * count)})" if count else f"EXECUTE {name}"


def _run_unprepared(
    cur: ClientCursor[DictRow],
    head: str,
    head_params: Sequence[Any],
    query: str,
    params: Params,
) -> list[Row]:
    # psycopg applies its own placeholder rules (and raises its own errors) to ``query``.
    text = cur.mogrify(head, head_params) if head_params else head
    if params:
        cur.execute(text.replace("%", "%%") + query, params)
    else:
        cur.execute(text + query)
    return fetch_last(cur)


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
