"""User-scoped SQL checked as ``PostgresClient`` checks it, and the fake's own names refused.

The fake runs the same guard (:mod:`crm_infra._sql_guard`, PostgreSQL's own grammar) on the
same text (``$n`` placeholders, as :func:`crm_infra._sql_params.split_placeholders` writes
them), so both backends refuse the same SQL with the same words. On top of it the fake
refuses every name of its own that a statement could mention: the base tables behind its
views, its triggers, constraints and SQL functions, and SQLite's ``sqlite_*`` tables. On
PostgreSQL none of them exists; in SQLite each one would reach past row-level security (a
base table holds every user's rows). They are compared case-insensitively, as SQLite compares
names, with every spelling the parser reads (quoted, ``U&"..."``, schema-qualified, as a table,
a CTE, an alias, a column or a column's qualifier), since the check runs on the names the
parser read, not on the text.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

import attrs
from pglast.parser import ParseError, scan

from crm_infra._sql_guard import Refusal, parameter_refusal, user_sql_verdict
from crm_infra._sql_params import SplitQuery, split_placeholders, verbatim

__all__ = ["CheckedSql", "InternalNames", "RefusedSql", "UserSqlChecker", "written_spelling"]

# Prefixes no name of the user's may have: SQLite's own tables, and the fake's.
_PREFIXES = {
    "sqlite_": "SQLite's own tables are named sqlite_...",
    "_crm_": "what it makes in SQLite for a statement is named _crm_...",
}
_MAX_CACHED = 10_000
_UNICODE_ESCAPE = re.compile(r"\\(\\|\+[0-9A-Fa-f]{6}|[0-9A-Fa-f]{4})")


class RefusedSql(Exception):
    """SQL the fake refuses as ``UnsafeQueryError``; the caller adds the operation."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message())
        self.refusal = refusal


class InternalNames:
    """The names internal to one fake (lower case), each with what it is.

    Args:
        names: name -> what it is, completing "a name internal to the in-memory database
            fake (...)"; names that start with ``sqlite_`` or ``_crm_`` are internal too.
    """

    def __init__(self, names: Mapping[str, str]) -> None:
        self._names = {name.lower(): what for name, what in names.items()}

    def why(self, name: str) -> str | None:
        """Return why ``name`` may not be used (any case), or None for a name that may."""
        lower = name.lower()
        what = self._names.get(lower)
        if what is None:
            what = next((w for p, w in _PREFIXES.items() if lower.startswith(p)), None)
        if what is None:
            return None
        return (
            f"is a name internal to the in-memory database fake ({what}); PostgreSQL has "
            "nothing of that name"
        )

    def first_used(self, names: Iterable[str]) -> str | None:
        """Return the first of ``names`` (sorted, for a stable message) that is internal."""
        return next((n for n in sorted(names) if self.why(n) is not None), None)


@attrs.frozen
class CheckedSql:
    """What the guard says of one user-scoped text: refused, a syntax error, or its kind."""

    split: SplitQuery
    kind: str = ""
    refusal: Refusal | None = None
    syntax_error: str | None = None


class UserSqlChecker:
    """Check user-scoped SQL once per distinct text, as the client does, plus internal names.

    Thread-safe; the cache is cleared when it grows past a bound (generated SQL texts).
    """

    def __init__(self, internal: InternalNames) -> None:
        self.internal = internal
        self._cache: dict[tuple[str, bool], CheckedSql] = {}
        self._lock = threading.Lock()

    def check(self, query: str, *, with_params: bool) -> CheckedSql:
        """Return the verdict on ``query`` as a user-scoped statement.

        Raises:
            crm_infra._sql_params.ClientSideError: malformed or mixed placeholders (psycopg
                refuses them before anything else).
        """
        key = (query, with_params)
        found = self._cache.get(key)
        if found is not None:
            return found
        # As PostgresClient: psycopg's placeholder rules only with params; the text sent as
        # written without.
        split = split_placeholders(query) if with_params else verbatim(query)
        verdict = user_sql_verdict(split.text)
        refusal = verdict.refusal
        if refusal is None and verdict.syntax_error is None:
            refusal = parameter_refusal(split)
            refusal = refusal or self._internal_name(split.text, verdict.identifiers)
        found = CheckedSql(
            split,
            kind=verdict.kind if refusal is None else "",
            refusal=refusal,
            syntax_error=verdict.syntax_error,
        )
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _internal_name(self, text: str, identifiers: frozenset[str]) -> Refusal | None:
        name = self.internal.first_used(identifiers)
        if name is None:
            return None
        why = self.internal.why(name)
        assert why is not None  # first_used found it internal
        return Refusal(written_spelling(text, name), name.lower(), why)


def written_spelling(text: str, name: str) -> str:
    """Return how ``text`` spells the identifier the parser read as ``name`` (any case):
    ``_T_Contacts``, ``"_t_contacts"``, ``U&"\\005Ft_contacts"``; ``name`` when not found."""
    wanted = name.lower()
    try:
        tokens = scan(text)
    except ParseError:  # pragma: no cover - the text parsed already
        return name
    for token in tokens:
        if token.name not in {"IDENT", "UIDENT"}:
            continue
        written = text[token.start : token.end + 1]
        if _read_as(written).lower() == wanted:
            return written
    return name


def _read_as(written: str) -> str:
    """Return the name an identifier token stands for (without a UESCAPE clause)."""
    if written[:3].upper() == 'U&"':
        body = written[3:-1].replace('""', '"')
        return _UNICODE_ESCAPE.sub(_unescape, body)
    if written.startswith('"'):
        return written[1:-1].replace('""', '"')
    return written


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code == "\\":
        return "\\"
    return chr(int(code.lstrip("+"), 16))
