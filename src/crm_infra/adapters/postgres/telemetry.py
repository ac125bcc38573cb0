"""What the PostgreSQL clients' spans say: the SQL template, never a value.

Values travel as protocol parameters and never appear here, nor does the user id (the user
setting is not a statement of the call's). The attributes follow OpenTelemetry's conventions
for SQL client spans; see docs/operations.md.

``db.query.text`` is the caller's SQL sanitised, as OpenTelemetry's conventions ask of query
text that may hold literals: every literal constant the text holds is replaced by a
placeholder, and comments are dropped. What is a literal is decided by PostgreSQL's own
lexer (libpg_query's scanner, through pglast), so every spelling the server reads as a
constant is one here: ``'...'``, ``E'...'``, ``U&'...'``, dollar-quoted ``$$...$$`` and
``$tag$...$tag$`` strings, ``B'...'`` and ``X'...'`` bit strings, integers and decimals; in
any statement (``CREATE ROLE ... PASSWORD '...'``, ``COMMENT ON ... IS '...'``, a function's
body, ``COPY ... TO '...'``). Names (``"quoted"`` too), keywords (``TRUE``, ``NULL``) and
operators stay as written; so does the whitespace, except where a comment was (one space, or a
line break if the comment spanned lines). Before anything is shown the text must parse by
PostgreSQL's grammar; a text that does not (a syntax error, an unterminated quote, a NUL byte)
shows as :data:`UNPARSED`, never as written, and its span name and ``db.operation.name`` are
its first word only if that is a PostgreSQL keyword. So does a text longer than
:data:`SANITISED_MAX`, and one with a psycopg placeholder whose name is not a plain
identifier (``%(a')s``: the quote would open a string in the caller's text that the server,
which gets ``$1``, never sees, and hide its literals from the lexer).

A bare word given as a value in a ``SET`` clause outside a data statement (``SET x = word``,
``ALTER ROLE r SET x TO word``, a function's ``SET``) is a string to PostgreSQL, and is
replaced like a literal; an ``UPDATE``'s ``SET col = other_col`` keeps its names.

Numbering: the placeholders of the literals are ``$n``, numbered in the order they appear,
starting above every parameter the statement already has, so a number never means both: the
caller's ``%s`` / ``%(name)s`` placeholders, which stay as written (psycopg sends them as
``$1``...``$k``, so literals start at ``$k+1``), and any ``$n`` the caller wrote itself (in a
SQL function's body, ``PREPARE``), which stays too (literals start above the highest).
``SELECT * FROM t WHERE a = %s AND b = 'x' LIMIT 10`` shows as ``SELECT * FROM t WHERE a = %s
AND b = $2 LIMIT $3``; SQL without literals or comments (the usual parameterised statement)
shows exactly as written. This is the rule of libpg_query's ``normalize`` (what
``pg_stat_statements`` shows), which is not used itself: it keeps comments, leaves the literals
of most utility statements in place (``COMMENT ON``, ``CREATE VIEW``, ``CREATE POLICY``,
``PREPARE``, ``COPY``, ``ALTER SYSTEM``, ``CREATE SERVER ... OPTIONS (password '...')``) and
cannot read psycopg's placeholders. The lexer reads a backslash in ``'...'`` as
``standard_conforming_strings = on`` does (PostgreSQL's default); a server with it off reads
``'a\\'...`` otherwise, and then the text may not be what the server ran.

The sanitised text is computed once per distinct SQL text, never per call, and cut at
:data:`QUERY_TEXT_LIMIT` characters: each client keeps the span attributes of up to 1024
distinct (operation, SQL text) pairs, as before, and the sanitised forms of the last 1024
distinct texts are shared by every client and operation. Only SQL passed as ``str`` is
shown; a ``psycopg.sql.Composed`` has no ``db.query.text``.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping
from typing import Any

import psycopg
from pglast.keywords import (
    COL_NAME_KEYWORDS,
    RESERVED_KEYWORDS,
    TYPE_FUNC_NAME_KEYWORDS,
    UNRESERVED_KEYWORDS,
)
from pglast.parser import ParseError, Token, scan
from pglast.parser import split as split_statements
from psycopg.conninfo import conninfo_to_dict

from crm_infra._sql_params import ClientSideError, SplitQuery, split_placeholders
from crm_infra.pool_stats import PoolStats
from crm_infra.telemetry import Call, CallSpec
from crm_infra.telemetry.calls import Attributes
from crm_infra.telemetry.pools import client_number

__all__ = [
    "ADMIN_CONNECTION",
    "ADMIN_DB",
    "ADMIN_TRANSACTION",
    "ADMIN_TRANSACTION_EXECUTE",
    "CONNECTION",
    "EXECUTE",
    "EXECUTE_ADMIN",
    "HEALTH_CHECK",
    "QUERY_TEXT_LIMIT",
    "SANITISED_MAX",
    "TRANSACTION",
    "TRANSACTION_EXECUTE",
    "UNPARSED",
    "USER_SCOPED_DB",
    "Block",
    "Statement",
    "pool_stats",
    "query_text",
]

USER_SCOPED_DB = "UserScopedDB"
ADMIN_DB = "AdminDB"
QUERY_TEXT_LIMIT = 2048
"""``db.query.text`` is cut here (a migration can be long; the start says which)."""

UNPARSED = "(unparsed)"
"""``db.query.text`` of a text PostgreSQL's grammar does not accept (never the text itself),
or one longer than :data:`SANITISED_MAX`."""
SANITISED_MAX = 16_384
"""The longest text sanitised (characters): the lexer's Python tokens cost about 0.4 us per
character, once per distinct text; a longer one (a bulk insert with its values written in)
shows as :data:`UNPARSED`."""

_CALLS_KEPT = 1024  # per client: distinct (operation, SQL text) pairs whose Call is reused
_TEXTS_KEPT = 1024  # in all: distinct SQL texts whose sanitised form is reused
# The lexer's names of the tokens that are constants, and of comments.
_CONSTANTS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})
_COMMENTS = frozenset({"C_COMMENT", "SQL_COMMENT"})
_SEMICOLON = "ASCII_59"
_LIST_OR_DOT = frozenset({"ASCII_44", "ASCII_46"})  # , .
_ASSIGN = frozenset({"ASCII_61", "TO"})  # = TO
_NAME_KINDS = frozenset({"UNRESERVED_KEYWORD", "COL_NAME_KEYWORD", "TYPE_FUNC_NAME_KEYWORD"})
_DATA_STATEMENTS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "VALUES",
                              "TABLE"})
_KEYWORDS = frozenset().union(
    COL_NAME_KEYWORDS, RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS, UNRESERVED_KEYWORDS
)


class _Known:
    """What one client's spans repeat: its servers, and the Call of each (operation, SQL)."""

    __slots__ = ("admin", "app", "calls")

    def __init__(self, owner: Any) -> None:
        self.app = _where(owner._app_conninfo)
        self.admin = _where(owner._admin_conninfo)
        self.calls: dict[tuple[str, object], Call] = {}


_known: weakref.WeakKeyDictionary[Any, _Known] = weakref.WeakKeyDictionary()


def _where(conninfo: str | None) -> Attributes:
    if conninfo is None:
        return {}
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return {}
    found: dict[str, str | int] = {"server.address": str(parts.get("host") or "localhost")}
    port = str(parts.get("port") or "5432")
    if port.isdigit():
        found["server.port"] = int(port)
    if parts.get("dbname"):
        found["db.namespace"] = str(parts["dbname"])
    return found


def _known_of(owner: Any) -> _Known:
    known = _known.get(owner)
    if known is None:
        known = _known[owner] = _Known(owner)
    return known


def _server_of(owner: Any, admin: bool) -> Attributes:
    """The server attributes of ``owner``'s application or admin role (read once)."""
    known = _known_of(owner)
    return known.admin if admin else known.app


def _verb(query: str) -> str:
    """The statement's first keyword (``SELECT``), after any leading comments; "" when the
    first word is not one of PostgreSQL's keywords (it may be anything in a text that does
    not parse)."""
    text = query.lstrip()
    while text.startswith(("--", "/*")):
        end = text.find("\n") if text.startswith("--") else text.find("*/")
        if end < 0:
            return ""
        text = text[end + (1 if text.startswith("--") else 2):].lstrip()
    word = text.split(None, 1)[0] if text else ""
    word = word.rstrip(";(")
    if not (word.isascii() and word.isalpha()) or word.lower() not in _KEYWORDS:
        return ""
    return word.upper()


def query_text(query: str) -> str:
    """Return ``db.query.text`` for ``query``: its literals replaced by ``$n`` and its
    comments dropped, or :data:`UNPARSED` (see the module docstring); cut at
    :data:`QUERY_TEXT_LIMIT` characters."""
    return _described(query)[1]


@functools.lru_cache(maxsize=_TEXTS_KEPT)
def _described(query: str) -> tuple[str, str]:
    """``query``'s first keyword ("" if none) and its sanitised text, once per text."""
    verb = _verb(query)
    sanitised = _sanitised(query)
    return verb, (UNPARSED if sanitised is None else sanitised[:QUERY_TEXT_LIMIT])


def _sanitised(query: str) -> str | None:
    """``query`` with its literals replaced and its comments dropped; None when PostgreSQL's
    lexer or grammar does not accept it, or anything in it is not a token of the lexer's."""
    if "\x00" in query:
        return None  # libpq would end the text there, and so would the lexer
    if len(query) > SANITISED_MAX:
        return None
    try:
        split: SplitQuery | None = split_placeholders(query)
    except ClientSideError:
        split = None  # no psycopg placeholders as psycopg reads them: sent as written
    if split is not None and not all(_plain_name(key) for key in split.keys):
        # The lexer reads the caller's text, where a quote in a name (%(a')s) would open a
        # string the server never sees, and hide the server's literals from the scan.
        return None
    try:
        tokens = scan(query)
        # Whether the grammar accepts it: parsed in C alone (libpg_query guards its own stack;
        # no tree is built in Python), the psycopg placeholders as PostgreSQL gets them.
        split_statements(query if split is None else split.text, only_slices=True)
    except (ParseError, ValueError):  # ValueError: a lone surrogate has no UTF-8 form
        return None
    taken = len(split.keys) if split is not None else 0
    for token in tokens:
        if token.name == "PARAM":
            written = query[token.start + 1 : token.end + 1]
            if written.isdigit():
                taken = max(taken, int(written))
    return _rebuilt(query, tokens, taken, _bare_values(tokens))


def _plain_name(key: int | str) -> bool:
    """Whether a psycopg placeholder's key is a position or a plain ASCII identifier."""
    return isinstance(key, int) or (key.isascii() and key.isidentifier())


def _bare_values(tokens: list[Token]) -> frozenset[int]:
    """The positions of the tokens that are values of a ``SET`` clause outside a data
    statement (``SET x = word``, ``ALTER ROLE r SET x TO word``, a function's ``SET``):
    PostgreSQL reads a bare word there as a string, so it is a value, not a name. An
    ``UPDATE``'s (or an upsert's) ``SET col = other_col`` is left alone."""
    found: set[int] = set()
    first, data, after_set, valued = True, False, False, False
    for i, token in enumerate(tokens):
        name = token.name
        if name in _COMMENTS:
            continue
        if name == _SEMICOLON:
            first, after_set, valued = True, False, False
            continue
        if first:
            first, data = False, name in _DATA_STATEMENTS
        if data:
            continue
        if valued:
            if name == "IDENT" or token.kind in _NAME_KINDS:
                found.add(i)
                continue
            if name in _LIST_OR_DOT:
                continue
            after_set = valued = False
        if name == "SET":
            after_set = True
        elif after_set and name in _ASSIGN:
            valued = True
    return frozenset(found)


def _instead_of_comments(between: str) -> str:
    """What stands where comments were between two tokens: a space, or a line break and the
    next line's indentation if they spanned lines."""
    if "\n" not in between:
        return " "
    indent = between.rpartition("\n")[2]
    return "\n" + (indent if not indent.strip() else "")


def _rebuilt(query: str, tokens: list[Token], taken: int, bare: frozenset[int]) -> str | None:
    """``query`` from its ``tokens``: constants (and the ``bare`` values) as ``$n`` from
    ``$taken+1`` on, comments dropped, whitespace kept; None if anything but whitespace lies
    outside the tokens."""
    out: list[str] = []
    between = ""  # what lies between the last token kept and the next: whitespace, comments
    commented = False
    at = 0
    for i, token in enumerate(tokens):
        gap = query[at : token.start]
        if gap.strip():
            return None  # not whitespace, yet no token of the lexer's: show none of it
        between += gap
        at = token.end + 1
        if token.name in _COMMENTS:
            between += query[token.start : at]
            commented = True
            continue
        if commented:
            between = _instead_of_comments(between) if out else ""
            commented = False
        if token.name in _CONSTANTS or i in bare:
            taken += 1
            out += (between, f"${taken}")
        else:
            out += (between, query[token.start : at])
        between = ""
    tail = query[at:]
    if tail.strip():
        return None
    if not commented:  # a trailing comment goes with the whitespace around it
        out.append(between + tail)
    return "".join(out)


class Statement(CallSpec):
    """One statement: ``execute``, ``execute_admin``, a transaction handle's ``execute``,
    the health check's ``SELECT 1``.

    Args:
        port: ``UserScopedDB`` or ``AdminDB``.
        operation: the method (``execute``, ``transaction.execute``...).
        query_at: where the SQL is among the method's positional arguments.
        query: the SQL the method always sends (the health check), instead.
    """

    def __init__(
        self, port: str, operation: str, query_at: int = 0, *, query: str | None = None
    ) -> None:
        self._port = port
        self._operation = operation
        self._query_at = query_at
        self._query = query
        self._admin = port == ADMIN_DB
        self._metric: Attributes = {
            "crm.port": port,
            "crm.operation": operation,
            "db.system.name": "postgresql",
        }

    def describe(self, owner: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Call:
        query = self._query
        if query is None:
            query = args[self._query_at] if len(args) > self._query_at else kwargs.get("query")
        # The same SQL makes the same span start: built once per client and text.
        known = _known_of(owner)
        key = (self._operation, query if isinstance(query, str) else None)
        call = known.calls.get(key)
        if call is None:
            if len(known.calls) >= _CALLS_KEPT:
                known.calls.clear()
            call = known.calls[key] = self._call(known, query)
        return call

    def _call(self, known: _Known, query: object) -> Call:
        attributes: dict[str, str | int | bool | float] = {
            **self._metric,
            **(known.admin if self._admin else known.app),
        }
        verb = ""
        if isinstance(query, str):
            verb, attributes["db.query.text"] = _described(query)
        if verb:
            attributes["db.operation.name"] = verb
        return Call(verb or self._operation, attributes, self._metric)

    def outcome(self, call: Call, result: Any) -> Attributes:
        if isinstance(result, list):
            return {"db.response.returned_rows": len(result)}
        return {}

    def failure(self, call: Call, exc: BaseException) -> Attributes:
        sqlstate = getattr(exc, "sqlstate", None)
        return {"db.response.status_code": sqlstate} if isinstance(sqlstate, str) else {}


class Block(CallSpec):
    """A block: ``transaction()``, ``admin_transaction()``, ``connection()``,
    ``admin_connection()``; its statements are spans of their own inside it."""

    def __init__(self, port: str, operation: str) -> None:
        self._admin = port == ADMIN_DB
        self._metric: Attributes = {
            "crm.port": port,
            "crm.operation": operation,
            "db.system.name": "postgresql",
        }
        self._operation = operation

    def describe(self, owner: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Call:
        attributes = {**self._metric, **_server_of(owner, self._admin)}
        return Call(self._operation, attributes, self._metric, client=False)


def pool_stats(owner: Any) -> dict[str, PoolStats]:
    """The state of ``owner``'s pools that are open (the admin pool opens on first use;
    a closed client has none)."""
    found: dict[str, PoolStats] = {}
    if owner._closed:
        return found
    for pool, admin in ((owner._pool, False), (owner._admin_pool, True)):
        if pool is None:
            continue
        where = _server_of(owner, admin)
        name = (
            f"{pool.name} {where.get('server.address', '?')}:{where.get('server.port', '?')}"
            f"/{where.get('db.namespace', '')} #{client_number(owner)}"
        )
        stats = pool.get_stats()
        size = int(stats.get("pool_size", 0))
        idle = int(stats.get("pool_available", 0))
        found[name] = PoolStats(
            name=name,
            system="postgresql",
            size=size,
            idle=idle,
            in_use=max(0, size - idle),
            max=int(stats.get("pool_max", 0)) or None,
            waiting=int(stats.get("requests_waiting", 0)),
            wait_seconds=int(stats.get("requests_wait_ms", 0)) / 1000,
            requests=int(stats.get("requests_num", 0)),
        )
    return found


# The hooks of PostgresClient and AsyncPostgresClient, one per method.
EXECUTE = Statement(USER_SCOPED_DB, "execute")
TRANSACTION = Block(USER_SCOPED_DB, "transaction")
TRANSACTION_EXECUTE = Statement(USER_SCOPED_DB, "transaction.execute", 1)
HEALTH_CHECK = Statement(USER_SCOPED_DB, "health_check", query="SELECT 1")
CONNECTION = Block(USER_SCOPED_DB, "connection")
EXECUTE_ADMIN = Statement(ADMIN_DB, "execute_admin")
ADMIN_TRANSACTION = Block(ADMIN_DB, "admin_transaction")
ADMIN_TRANSACTION_EXECUTE = Statement(ADMIN_DB, "admin_transaction.execute", 1)
ADMIN_CONNECTION = Block(ADMIN_DB, "admin_connection")
