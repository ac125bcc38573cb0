"""One round trip per user-scoped statement: simple Query messages with reused plans.

A user-scoped call sends ONE simple-Query message::

    [BEGIN;] SELECT set_config('app.current_user_id', '<uuid>', true); EXECUTE _crm_sN(<literals>)

(with ``PREPARE _crm_sN(<types>) AS <statement>`` inserted before the EXECUTE the first time a
connection sees that SQL text and those parameter types). The protocol runs every statement of
one simple Query in order, in one implicit transaction when the connection is idle in
autocommit, so the transaction-local setting is in force for the statement and is gone when
the message ends. Literals are quoted by psycopg's ``ClientCursor`` (libpq's escaping, for the
connection's encoding), and server plans are reused through the per-connection cache as
psycopg's own prepared statements are.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import weakref
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg import ClientCursor
from psycopg.rows import DictRow, dict_row

from crm_infra.ports import Params, Row

__all__ = ["StatementCache", "fetch_last", "to_dollar_placeholders"]

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
    mapping = params if isinstance(params, Mapping) else None
    sequence: Sequence[Any] = () if isinstance(params, Mapping) else params
    names: dict[str, int] = {}
    values: list[Any] = []
    failed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal failed
        piece, name = match.group(0), match.group(1)
        if piece == "%%":
            return "%"
        if piece == "%" or (mapping is None) != (name is None):
            failed = True
        elif mapping is not None:
            if name not in mapping:
                failed = True
            elif name not in names:
                values.append(mapping[name])
                names[name] = len(values)
            return f"${names.get(name, 0)}"
        elif len(values) >= len(sequence):
            failed = True
        else:
            values.append(sequence[len(values)])
            return f"${len(values)}"
        return piece

    converted = _PLACEHOLDER.sub(replace, query)
    if failed or (mapping is None and len(values) != len(sequence)):
        return None
    return converted, values


def _pg_type(value: Any) -> str | None:
    kind = type(value)
    if kind is int:
        return "int8" if _INT8_MIN <= value <= _INT8_MAX else "numeric"
    if kind is dt.datetime:
        return "timestamp" if value.tzinfo is None else "timestamptz"
    return _PG_TYPE.get(kind)


def _preparable(query: str) -> bool:
    head = _LEADING_NOISE.sub("", query, count=1)
    word = re.match(r"[A-Za-z]+", head)
    return word is not None and word.group(0).lower() in _PREPARABLE


class StatementCache:
    """Per-connection names of server-side prepared statements, keyed by SQL text and types.

    Names are never reused, so a statement whose PREPARE may or may not have run (the
    message failed) is simply forgotten. A new connection starts with an empty cache, which
    is what "cleared on reconnect" needs; ``forget`` empties one connection's cache.
    """

    def __init__(self, max_per_connection: int = 256) -> None:
        self._max = max_per_connection
        self._by_conn: weakref.WeakKeyDictionary[psycopg.Connection[Any], _ConnStatements] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def _for(self, conn: psycopg.Connection[Any]) -> _ConnStatements:
        entry = self._by_conn.get(conn)
        if entry is None:
            with self._lock:
                entry = self._by_conn.setdefault(conn, _ConnStatements())
        return entry

    def forget(self, conn: psycopg.Connection[Any]) -> None:
        """Drop what is known about ``conn``'s prepared statements."""
        with self._lock:
            self._by_conn.pop(conn, None)

    def run(
        self,
        conn: psycopg.Connection[DictRow],
        prefix: str,
        prefix_params: Sequence[Any],
        query: str,
        params: Params,
    ) -> list[Row]:
        """Send ``prefix`` and ``query`` in one simple-Query message; return the last result.

        Args:
            conn: an idle or in-transaction connection (the caller checks which it expects).
            prefix: statements (``%s`` placeholders) to run first, e.g. BEGIN and set_config.
            prefix_params: values for ``prefix``.
            query: the caller's statement; ``%s``/``%(name)s`` placeholders when ``params``.
            params: values for ``query``; empty means the text is sent as written.
        """
        query = query.strip().rstrip(";").rstrip()
        cur = ClientCursor(conn, row_factory=dict_row)
        converted = to_dollar_placeholders(query, params) if params else (query, [])
        if converted is None or not _preparable(query):
            return _run_unprepared(cur, prefix, prefix_params, query, params)
        sql, values = converted
        types = [_pg_type(v) for v in values]
        if None in types:
            return _run_unprepared(cur, prefix, prefix_params, query, params)
        statements = self._for(conn)
        key = (sql, tuple(types))
        name = statements.names.get(key)
        placeholders = ", ".join(["%s"] * len(values))
        call = f"EXECUTE {{}}({placeholders})" if values else "EXECUTE {}"
        if name is not None:
            cur.execute(prefix + call.format(name), [*prefix_params, *values])
            return fetch_last(cur)
        name = statements.new_name(self._max)
        if name is None:  # cache full: run unprepared rather than evict a live plan
            return _run_unprepared(cur, prefix, prefix_params, query, params)
        declared = f"({', '.join(t for t in types if t)})" if types else ""
        prepare = f"PREPARE {name}{declared} AS {sql.replace('%', '%%')}; "
        cur.execute(prefix + prepare + call.format(name), [*prefix_params, *values])
        statements.names[key] = name  # only once the server has it
        return fetch_last(cur)


def _run_unprepared(
    cur: ClientCursor[DictRow],
    prefix: str,
    prefix_params: Sequence[Any],
    query: str,
    params: Params,
) -> list[Row]:
    # psycopg applies its own placeholder rules (and raises its own errors) to ``query``.
    head = cur.mogrify(prefix, prefix_params) if prefix else ""
    if params:
        cur.execute(head.replace("%", "%%") + query, params)
    else:
        cur.execute(head + query)
    return fetch_last(cur)


class _ConnStatements:
    def __init__(self) -> None:
        self.names: dict[tuple[str, tuple[str | None, ...]], str] = {}
        self.issued = 0

    def new_name(self, limit: int = 256) -> str | None:
        if self.issued >= limit:
            return None
        self.issued += 1
        return f"_crm_s{self.issued}"


def fetch_last(cur: psycopg.Cursor[DictRow]) -> list[Row]:
    """Return the rows of the cursor's last result set; ``[]`` when it returned no rows."""
    rows: list[Row] = cur.fetchall() if cur.description is not None else []
    while cur.nextset():
        rows = cur.fetchall() if cur.description is not None else []
    return rows
