"""The PostgreSQL functions and operators the fake registers in SQLite, with PostgreSQL semantics.

LIKE and ILIKE are done here rather than by SQLite: PostgreSQL's LIKE is case-sensitive and
escapes with a backslash by default, and its ILIKE and lower()/upper() know Unicode.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Protocol

from crm_infra.errors import DatabaseError, RowSecurityError, UnsupportedQueryError
from crm_infra.fakes.sql.numeric import (
    NumericAvg,
    NumericSum,
    int_checked,
    int_div,
    int_mod,
    numeric,
    numeric_div,
    round_half_away,
)
from crm_infra.fakes.sql.types import canonical_uuid, format_timestamptz

__all__ = ["FAKE_FUNCTIONS", "RLS_REFUSE", "SessionState", "register_functions"]

RLS_REFUSE = "crm_rls_refuse"
"""Raises row-level security's error for its table: the check an upsert's DO UPDATE makes on
the existing row before its WHERE, as PostgreSQL does (see the translator)."""
# Registered under PostgreSQL's own names: a user may call them.
_POSTGRESQL_FUNCTIONS = frozenset({"current_setting", "gen_random_uuid"})


class SessionState:
    """What the registered functions read: the RLS user, the path, the frozen now()."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.current_user_id: str | None = None
        self.rls_active = False
        self.now_text: str | None = None
        self.error: Exception | None = None  # raised inside a function; re-raised by the caller

    def freeze_now(self) -> None:
        """Fix now() for the transaction that is starting, as PostgreSQL does."""
        self.now_text = format_timestamptz(self.clock())


@lru_cache(maxsize=512)
def _like_regex(pattern: str, escape: str, flags: int) -> tuple[re.Pattern[str], bool]:
    """Return the pattern as a regex, and whether it ends with a lone escape character.

    PostgreSQL reports a trailing escape only when matching reaches it, that is when what
    comes before it matches the start of a value with characters left over.
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if escape and ch == escape:
            if i + 1 >= len(pattern):
                return re.compile("".join(out) + "(?=.)", flags | re.DOTALL), True
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), flags | re.DOTALL), False


def _like(value: Any, pattern: Any, escape: Any, flags: int) -> int | None:
    if value is None or pattern is None:
        return None
    if not isinstance(value, str) or not isinstance(pattern, str):
        raise UnsupportedQueryError(
            "LIKE on a value that is not text: test that query against PostgreSQL"
        )
    esc = "\\" if escape is None else escape
    if len(esc) > 1:
        raise DatabaseError("invalid escape string")
    regex, dangling = _like_regex(pattern, esc, flags)
    if dangling:
        if regex.match(value):
            raise DatabaseError("LIKE pattern must not end with escape character")
        return 0
    return 1 if regex.fullmatch(value) else 0


def _cast_int(value: Any) -> int | None:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(Decimal(repr(value)).to_integral_value(rounding="ROUND_HALF_UP"))
    try:
        return int(str(value).strip())
    except ValueError:
        raise DatabaseError("invalid input syntax for type integer") from None


def _cast_numeric(value: Any) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    try:
        return float(Decimal(str(value).strip()))
    except ArithmeticError:
        raise DatabaseError("invalid input syntax for type numeric") from None


def _cast_bool(value: Any) -> int | None:
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text in {"t", "true", "y", "yes", "on", "1"}:
        return 1
    if text in {"f", "false", "n", "no", "off", "0"}:
        return 0
    raise DatabaseError("invalid input syntax for type boolean")


def _cast_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _cast_timestamptz(value: Any) -> str | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise UnsupportedQueryError(
            "casting this text to timestamptz: test that query against PostgreSQL"
        ) from None
    return format_timestamptz(parsed)


def _per_char(value: Any, convert: Callable[[str], str]) -> Any:
    # PostgreSQL maps character by character: 'ß' stays 'ß' in upper(), it never becomes 'SS'.
    if not isinstance(value, str):
        return value
    return "".join(c if len(convert(c)) != 1 else convert(c) for c in value)


def _limit(value: Any) -> Any:
    if value is None:
        return -1  # SQLite's "no limit"
    if isinstance(value, int) and value < 0:
        raise DatabaseError("LIMIT must not be negative")
    return value


def _offset(value: Any) -> Any:
    if value is None:
        return 0
    if isinstance(value, int) and value < 0:
        raise DatabaseError("OFFSET must not be negative")
    return value


def _timestamptz_add(value: Any, seconds: float) -> str | None:
    if value is None:
        return None
    return format_timestamptz(datetime.fromisoformat(value) + timedelta(seconds=seconds))


def _greatest(*values: Any) -> Any:
    present = [v for v in values if v is not None]  # PostgreSQL ignores NULLs here
    return max(present) if present else None


def _least(*values: Any) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _concat(*values: Any) -> str:
    return "".join(str(v) for v in values if v is not None)


def register_functions(conn: sqlite3.Connection, state: SessionState) -> None:
    """Register every function the translated SQL and the DDL call."""

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            try:
                return fn(*args)
            except Exception as exc:
                state.error = exc  # sqlite3 only says "user-defined function raised exception"
                raise

        return call

    def current_setting(name: str, missing_ok: Any = 0) -> str | None:
        if name != "app.current_user_id":
            raise UnsupportedQueryError(
                f"current_setting({name!r}) in the in-memory fake: test that query against "
                "PostgreSQL"
            )
        if state.current_user_id is None and not missing_ok:
            raise DatabaseError('unrecognized configuration parameter "app.current_user_id"')
        return state.current_user_id

    def pg_now() -> str:
        if state.now_text is None:
            state.freeze_now()
        assert state.now_text is not None
        return state.now_text

    def cast_uuid(value: Any) -> str | None:
        return None if value is None else canonical_uuid(str(value))

    def rls_refuse(table: str) -> None:
        raise RowSecurityError(
            f'new row violates row-level security policy (USING expression) for table "{table}"'
        )

    fns: dict[str, tuple[int, Callable[..., Any], bool]] = {
        "current_setting": (-1, current_setting, True),
        "crm_rls_active": (0, lambda: 1 if state.rls_active else 0, True),
        RLS_REFUSE: (1, rls_refuse, False),
        "pg_now": (0, pg_now, True),
        "gen_random_uuid": (0, lambda: str(uuid.uuid4()), False),
        "pg_cast_uuid": (1, cast_uuid, True),
        "pg_cast_text": (1, _cast_text, True),
        "pg_cast_int": (1, _cast_int, True),
        "pg_cast_numeric": (1, _cast_numeric, True),
        "pg_cast_bool": (1, _cast_bool, True),
        "pg_cast_timestamptz": (1, _cast_timestamptz, True),
        "pg_like": (-1, lambda v, p, e=None: _like(v, p, e, 0), True),
        "pg_ilike": (-1, lambda v, p, e=None: _like(v, p, e, re.IGNORECASE), True),
        "pg_numeric_add": (2, numeric(lambda a, b: a + b), True),
        "pg_numeric_sub": (2, numeric(lambda a, b: a - b), True),
        "pg_numeric_mul": (2, numeric(lambda a, b: a * b), True),
        "pg_numeric_div": (2, numeric_div, True),
        "pg_int_div": (2, int_div, True),
        "pg_int_add": (4, int_checked(lambda a, b: a + b), True),
        "pg_int_sub": (4, int_checked(lambda a, b: a - b), True),
        "pg_int_mul": (4, int_checked(lambda a, b: a * b), True),
        "pg_limit": (1, _limit, True),
        "pg_greatest": (-1, _greatest, True),
        "pg_least": (-1, _least, True),
        "pg_concat": (-1, _concat, True),
        "pg_round": (2, round_half_away, True),
        "pg_timestamptz_add": (2, _timestamptz_add, True),
        "pg_offset": (1, _offset, True),
        "pg_int_mod": (2, int_mod, True),
        "pg_lower": (1, lambda v: _per_char(v, str.lower), True),
        "pg_upper": (1, lambda v: _per_char(v, str.upper), True),
    }
    cannot_raise = {"crm_rls_active", "gen_random_uuid", "pg_lower", "pg_upper"}
    for name, (nargs, fn, deterministic) in fns.items():
        wrapped = fn if name in cannot_raise else guarded(fn)
        conn.create_function(name, nargs, wrapped, deterministic=deterministic)
    aggregates: dict[str, Callable[[], _Aggregate]] = {
        "pg_numeric_avg": NumericAvg,
        "pg_numeric_sum": NumericSum,
    }
    for name, aggregate in aggregates.items():
        conn.create_aggregate(name, 1, _guarded_aggregate(aggregate, state))
    # Every name registered is either PostgreSQL's or listed as internal to the fake.
    assert fns.keys() | aggregates.keys() == FAKE_FUNCTIONS | _POSTGRESQL_FUNCTIONS


FAKE_FUNCTIONS = frozenset(
    {
        "crm_rls_active",
        RLS_REFUSE,
        "pg_now",
        "pg_cast_uuid",
        "pg_cast_text",
        "pg_cast_int",
        "pg_cast_numeric",
        "pg_cast_bool",
        "pg_cast_timestamptz",
        "pg_like",
        "pg_ilike",
        "pg_numeric_add",
        "pg_numeric_sub",
        "pg_numeric_mul",
        "pg_numeric_div",
        "pg_int_div",
        "pg_int_add",
        "pg_int_sub",
        "pg_int_mul",
        "pg_limit",
        "pg_greatest",
        "pg_least",
        "pg_concat",
        "pg_round",
        "pg_timestamptz_add",
        "pg_offset",
        "pg_int_mod",
        "pg_lower",
        "pg_upper",
        "pg_numeric_avg",
        "pg_numeric_sum",
    }
)
"""The functions the fake registers that PostgreSQL does not have: internal names, which no
user-scoped statement may use."""


class _Aggregate(Protocol):
    def step(self, value: Any) -> None: ...
    def finalize(self) -> Any: ...


def _guarded_aggregate(
    factory: Callable[[], _Aggregate], state: SessionState
) -> Callable[[], _Aggregate]:
    """Return an aggregate class whose errors reach the caller as raised, like guarded()'s."""

    class Guarded:
        def __init__(self) -> None:
            self.inner = factory()

        def step(self, value: Any) -> None:
            try:
                self.inner.step(value)
            except Exception as exc:
                state.error = exc  # sqlite3 only says "user-defined aggregate raised error"
                raise

        def finalize(self) -> Any:
            try:
                return self.inner.finalize()
            except Exception as exc:
                state.error = exc
                raise

    return Guarded
