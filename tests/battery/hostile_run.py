"""Run one hostile entry as user A and say everything it did wrong.

Shared by ``tests/integration/test_hostile_sql.py`` and ``tests/contract/test_hostile_sql.py``.
The checks are written once, as functions that return problems (one sentence each) instead of
asserting, so that a test reports every way an entry went wrong at once: its outcome, what it
showed A, and what it changed in the rows of either user (read through the admin path).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import attrs

from crm_infra import DatabaseError, UnsafeQueryError, UnsupportedQueryError
from crm_infra.ports import AdminDB, Row, UserScopedDB
from tests.battery.hostile_sql import (
    SEED,
    USER_A,
    USER_B,
    Hostile,
    Outcome,
    b_secrets_hidden_from,
    normalize,
)

__all__ = [
    "MODES",
    "TABLES",
    "WHO",
    "Backend",
    "Result",
    "Snapshot",
    "changed",
    "clear_rows",
    "leak_problems",
    "outcome_problems",
    "reset_rows",
    "run",
    "snapshot",
    "state_problems",
]

TABLES = ("users", "contacts", "addresses", "tickets")
WHO = "SELECT current_setting('app.current_user_id', true) AS me"

MODES = ("execute", "transaction-first", "transaction")
"""How the hostile text is sent: on its own with ``execute``; as the first statement of a
``transaction()`` (it travels with BEGIN and the user setting); as a later one (the
transaction has begun). In a transaction, a statement that went through is followed by a
check that the transaction still runs as A."""


class Backend(UserScopedDB, AdminDB, Protocol):
    """Both ports on one object, as the contract suite's backends have them."""

    def close(self) -> None:
        """Release the backend."""


Snapshot = Mapping[str, Sequence[Row]]
"""Every row of every CRM table, read through the admin path, ordered by id."""


@attrs.frozen
class Result:
    """What one hostile call gave A: rows or a ``DatabaseError``; in a transaction, who the
    transaction ran as after the statement (None when it did not get that far)."""

    mode: str
    rows: list[Row] | None
    error: DatabaseError | None
    me: str | None = None

    def shown(self) -> str:
        """Describe the outcome for a message."""
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error}"
        return f"rows {self.rows!r}"


def run(db: Backend, entry: Hostile, mode: str) -> Result:
    """Send ``entry`` as user A in ``mode`` (one of :data:`MODES`)."""
    try:
        if mode == "execute":
            return Result(mode, db.execute(entry.sql, entry.params, user_id=USER_A), None)
        with db.transaction(USER_A) as tx:
            if mode == "transaction":
                tx.execute(WHO)
            rows = tx.execute(entry.sql, entry.params)
            me = tx.execute_scalar(WHO)
    except DatabaseError as exc:
        return Result(mode, None, exc)
    return Result(mode, rows, None, None if me is None else str(me))


def clear_rows(db: Backend) -> None:
    """Delete every row of every CRM table."""
    for table in reversed(TABLES):
        db.execute_admin(f"DELETE FROM {table}")


def reset_rows(db: Backend) -> None:
    """Put the rows of :data:`SEED` back, exactly (ids and times included), and nothing else."""
    clear_rows(db)
    for table in TABLES:
        rows = SEED[table]
        columns = list(rows[0])
        values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
        db.execute_admin(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}",
            tuple(row[c] for row in rows for c in columns),
        )


def snapshot(db: Backend) -> Snapshot:
    """Read every row of every CRM table through the admin path."""
    return {table: db.execute_admin(f"SELECT * FROM {table} ORDER BY id") for table in TABLES}


def _error_texts(error: BaseException) -> Iterator[str]:
    """The exception and every cause and context: messages, reprs and server diagnostics."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        diag = getattr(current, "diag", None)
        for field in ("message_primary", "message_detail", "message_hint", "context"):
            value = getattr(diag, field, None) if diag is not None else None
            if value:
                yield str(value)
        current = current.__cause__ or current.__context__


def leak_problems(entry: Hostile, result: Result) -> list[str]:
    """What A was shown of B's: B's values, or ids of B's rows A did not name itself."""
    if result.error is not None:
        text = "\n".join(_error_texts(result.error))
        where = "the error A got"
    else:
        text = repr(result.rows)
        where = "the rows A got"
    text = text.lower()
    hidden = b_secrets_hidden_from(entry)
    return [f"{where} show B's {secret!r}" for secret in hidden if secret in text]


def outcome_problems(entry: Hostile, result: Result, *, fake: bool = False) -> list[str]:
    """How the outcome differs from what ``entry`` must come to (see :class:`Outcome`).

    On the fake, ``UnsupportedQueryError`` (SQL it cannot run) answers anything but what
    must be refused.
    """
    error = result.error
    unsupported = fake and isinstance(error, UnsupportedQueryError)
    problems = []
    if entry.expect is Outcome.REFUSED:
        if not isinstance(error, UnsafeQueryError):
            problems.append(f"expected UnsafeQueryError, got {result.shown()}")
    elif entry.expect is Outcome.ERROR:
        if error is None:
            problems.append(f"expected an error, got {result.shown()}")
        elif (
            entry.error is not None
            and not isinstance(error, entry.error | UnsafeQueryError)
            and not unsupported
        ):
            problems.append(f"expected {entry.error.__name__}, got {result.shown()}")
    elif entry.expect is Outcome.ROWS:
        if error is not None and not unsupported:
            problems.append(f"expected A's rows, got {result.shown()}")
        elif result.rows is not None and entry.rows is not None:
            got = normalize(result.rows)
            if got != entry.rows:
                problems.append(f"expected the rows {entry.rows!r}, got {got!r}")
    if result.me is not None and result.me != str(USER_A):
        problems.append(f"after the statement the transaction ran as {result.me!r}, not A")
    return problems


def state_problems(entry: Hostile, seeded: Snapshot, after: Snapshot) -> list[str]:
    """What the call changed that it must not have: any row of B's (or a new one for B), a
    user, a row of anyone but A and B, B's values (or B's ids) copied into A's rows."""
    problems = []
    if after["users"] != seeded["users"]:
        problems.append(f"the users changed: {seeded['users']!r} -> {after['users']!r}")
    secrets = b_secrets_hidden_from(entry)
    for table in TABLES[1:]:
        before_b = [r for r in seeded[table] if r["user_id"] == USER_B]
        after_b = [r for r in after[table] if r["user_id"] == USER_B]
        if after_b != before_b:
            problems.append(f"B's {table} changed: {before_b!r} -> {after_b!r}")
        strangers = [r for r in after[table] if r["user_id"] not in (USER_A, USER_B)]
        if strangers:
            problems.append(f"{table} has rows of neither user: {strangers!r}")
        mine = repr([r for r in after[table] if r["user_id"] == USER_A]).lower()
        problems += [f"A's {table} now hold B's {s!r}" for s in secrets if s in mine]
    return problems


def changed(seeded: Snapshot, after: Snapshot) -> bool:
    """Return True when any row differs from the seeded ones."""
    return any(after[table] != seeded[table] for table in TABLES)
