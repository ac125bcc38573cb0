"""SQL text for SQLite: every identifier quoted, no comments, nothing read twice.

Whatever the fake sends to SQLite is generated here, so that no user spelling can turn into
another SQLite name: every identifier is quoted (a quoted name in SQLite is only ever that
name), with backticks rather than double quotes, because SQLite reads a double-quoted name
that matches no column as a string literal (its "DQS" misfeature, which Python 3.11's sqlite3
cannot switch off): a typo would then be a wrong answer instead of an error. Comments are
dropped: PostgreSQL nests ``/* ... */`` and SQLite does not, so a comment copied through as
written would end early in SQLite and turn the rest of it into SQL that PostgreSQL never saw
(sqlglot escapes the markers inside a comment it writes; nothing here relies on it).
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.dialects.sqlite import SQLite

__all__ = ["CrmFakeSQLite", "quote", "to_sqlite"]


class CrmFakeSQLite(SQLite):
    """SQLite, with backticks as the identifier quote the generator writes."""

    class Tokenizer(SQLite.Tokenizer):
        # The first pair is the one sqlglot writes; SQLite reads all three.
        IDENTIFIERS = ["`", '"', ("[", "]")]  # noqa: RUF012 - sqlglot's own class attribute


def quote(name: str) -> str:
    """Return ``name`` as a quoted SQLite identifier (backticks, a backtick doubled)."""
    return "`" + name.replace("`", "``") + "`"


def to_sqlite(node: exp.Expr) -> str:
    """Return ``node`` as SQLite SQL: identifiers quoted, comments dropped.

    Raises:
        sqlglot.errors.UnsupportedError: a construct SQLite's generator cannot write.
    """
    return node.sql(
        dialect=CrmFakeSQLite,
        identify=True,
        comments=False,
        unsupported_level=sqlglot.ErrorLevel.RAISE,
    )
