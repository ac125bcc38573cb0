"""How ``PostgresClient`` sends a statement's parameters, which decides their integer types.

The fake must type an int parameter as PostgreSQL will see it, and that depends on the path:

* user-scoped, prepared (one preparable statement, values of the usual types): an ``int`` is
  declared ``int8`` (``numeric`` beyond), ``None`` and ``str`` ``unknown``: the server gives them
  the type of what they meet, like an untyped NULL;
* user-scoped, unprepared (several statements, SQL PREPARE does not take, a value of another
  type such as a list for ``= ANY(%s)``): psycopg's ``ClientCursor`` writes the values into the
  text, so an ``int`` is a literal, ``integer`` when it fits, else ``bigint`` (else ``numeric``),
  and ``None`` is ``NULL``;
* admin: psycopg binds server-side, an ``int`` as int2, int4, int8 or numeric by its value.

The first two are told apart exactly as ``crm_infra.adapters._pg_statements.StatementCache.run``
does. The fakes may not import the adapters (psycopg's pool and the other clients would come
with them), so its pure helpers are mirrored here; ``tests/unit/test_fake_database_paths.py``
checks that both agree.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from crm_infra.ports import Params

__all__ = [
    "CONTEXT",
    "RUN_TIME",
    "ParamWidths",
    "param_widths",
    "runs_prepared",
    "user_widths",
]

RUN_TIME: Final = 0
"""An int whose width psycopg picks by its value when the statement runs (the admin path)."""
CONTEXT: Final = -1
"""No integer type of its own: an untyped parameter (None, str...) or not an int at all."""

ParamWidths = tuple[int, ...] | tuple[tuple[str, int], ...]
"""Per parameter (or per name, for a mapping): 64, 32, RUN_TIME or CONTEXT."""

# As _pg_statements: the Python types the client declares a type for (int, datetime and time
# included); a value of any other type makes it run the statement unprepared.
_TYPED: frozenset[type] = frozenset(
    {
        str,
        type(None),
        bool,
        int,
        float,
        Decimal,
        UUID,
        dt.date,
        dt.datetime,
        dt.time,
        dt.timedelta,
        bytes,
    }
)
_PREPARABLE = frozenset(
    {"select", "insert", "update", "delete", "values", "with", "table", "merge"}
)
_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*", re.DOTALL)
_SKIPPABLE = re.compile(
    r"""\b[Ee]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/"""
    r"|(\$[A-Za-z_][A-Za-z0-9_]*\$|\$\$).*?\1",
    re.DOTALL,
)
_DOLLAR_PARAMETER = re.compile(r"\$\d")
_PLACEHOLDER = re.compile(r"%(?:\(([^)]+)\))?s|%%|%")
_INT4_MIN, _INT4_MAX = -(2**31), 2**31 - 1


@functools.lru_cache(maxsize=4096)
def _preparable(query: str) -> bool:
    """Return True for one statement of a kind PREPARE accepts, as the client decides it."""
    query = query.strip().rstrip(";").rstrip()
    head = _LEADING_NOISE.sub("", query, count=1)
    word = re.match(r"[A-Za-z]+", head)
    if word is None or word.group(0).lower() not in _PREPARABLE:
        return False
    code = _SKIPPABLE.sub(" ", query)
    return ";" not in code and _DOLLAR_PARAMETER.search(code) is None


@functools.lru_cache(maxsize=4096)
def _placeholders(query: str, named: bool) -> tuple[str, ...] | int | None:
    """Return the names in order of first use (or the count) of the client's placeholders;
    None where the client leaves the query to psycopg (other formats, mixed styles)."""
    query = query.strip().rstrip(";").rstrip()
    names: dict[str, None] = {}
    count = 0
    for match in _PLACEHOLDER.finditer(query):
        piece, name = match.group(0), match.group(1)
        if piece == "%%":
            continue
        if piece == "%" or named != (name is not None):
            return None
        if named:
            names.setdefault(name, None)
        else:
            count += 1
    return tuple(names) if named else count


def runs_prepared(query: str, params: Params) -> bool:
    """Return True when ``PostgresClient`` PREPAREs this user-scoped statement (with declared
    parameter types), False when it sends the values as literals in the text."""
    if not params or not _preparable(query):
        return _preparable(query)
    if isinstance(params, Mapping):
        names = _placeholders(query, True)
        return (
            isinstance(names, tuple)
            and all(name in params for name in names)
            and all(type(params[name]) in _TYPED for name in names)
        )
    return (
        not isinstance(params, str | bytes | bytearray)
        and _placeholders(query, False) == len(params)
        and all(type(value) in _TYPED for value in params)
    )


def _literal_bits(value: int) -> int:
    # PostgreSQL types an integer literal integer if it fits, else bigint (else numeric: a
    # value the fake refuses when it binds it).
    return 32 if _INT4_MIN <= value <= _INT4_MAX else 64


def _width(value: Any, prepared: bool) -> int:
    if type(value) is int:
        return 64 if prepared else _literal_bits(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _literal_bits(value)  # an int subclass is never prepared: a literal
    return CONTEXT


def user_widths(query: str, params: Params, *, several: bool = False) -> ParamWidths:
    """Return the widths of a user-scoped statement's parameters (the translation's key).

    Args:
        query: the statement as the caller wrote it.
        params: its parameters.
        several: the statement is one of several in the call (the client runs those
            unprepared, whatever their parameters).
    """
    if type(params) is tuple or type(params) is list:  # the common case, cached by types
        found = _widths_by_types(query, tuple(map(type, params)), several)
        if found is not None:
            return found
        return tuple(_width(v, False) for v in params)
    prepared = not several and runs_prepared(query, params)
    return param_widths(params, admin=False, prepared=prepared)


@functools.lru_cache(maxsize=4096)
def _widths_by_types(
    query: str, kinds: tuple[type, ...], several: bool
) -> tuple[int, ...] | None:
    """Return the widths for parameters of these types; None when the values decide them
    (an int written as a literal is integer or bigint by its value)."""
    prepared = not several and _preparable(query)
    if prepared and kinds:
        prepared = _placeholders(query, False) == len(kinds) and all(k in _TYPED for k in kinds)
    if not prepared and any(issubclass(k, int) and k is not bool for k in kinds):
        return None
    return tuple(64 if prepared and k is int else CONTEXT for k in kinds)


def param_widths(params: Params, *, admin: bool, prepared: bool) -> ParamWidths:
    """Return what the translation of a statement needs to know of its parameters' values:
    the integer width each one has on the path the client sends it by."""
    if admin or not params:
        return ()  # the admin path's widths are decided at run time (RUN_TIME)
    if isinstance(params, Mapping):
        return tuple((str(k), _width(v, prepared)) for k, v in params.items())
    if isinstance(params, str | bytes | bytearray):
        return ()
    return tuple(_width(v, prepared) for v in params)
