"""What user-scoped SQL is, decided by PostgreSQL's own grammar.

The whole SQL text of one user-scoped call may be hostile (an injection in domain code). Such
a call may fail, or act as its own user; it must never act as another user or leave anything
behind for a later call. So user-scoped SQL must be exactly ONE data statement (SELECT,
INSERT, UPDATE, DELETE or MERGE, with WITH, VALUES and subqueries inside), and nothing in its
tree may act on the session or on other sessions. What the text *is* comes from pglast
(libpg_query: the server's own parser), never from regular expressions, so every spelling the
grammar accepts (quoted, ``U&"..."``, schema-qualified, nested anywhere, inside ``EXPLAIN``) is
read as the server reads it. The verdict is cached per distinct text: the hot path never
parses twice.

This is the first of two walls: what no text check can see (SQL text run by a function, a
``DO`` body) the database refuses itself (``sql/bootstrap/roles.sql`` revokes it, and
``PostgresClient`` checks at start-up that it was revoked).

Shared by ``PostgresClient`` and the in-memory fake, which give the same refusals.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator

import attrs
from pglast import ast, parse_sql
from pglast.parser import ParseError, parse_sql_json, scan

from crm_infra._sql_params import SplitQuery

__all__ = ["DATA_STATEMENTS", "Refusal", "Verdict", "parameter_refusal", "user_sql_verdict"]

DATA_STATEMENTS = {
    "SelectStmt": "SELECT",
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
}

_SETS_THE_USER = (
    "would set who the statement runs as; the client sets the user itself "
    "(pass user_id=... or use user_context)"
)
_OUTLIVES_THE_CALL = "would leave state on the pooled connection for a later call"
_OTHER_SESSIONS = "acts on other sessions"
_RUNS_SQL_TEXT = "runs SQL given as text, which no check of the statement can see"

# Functions no user-scoped statement may call, by name (any schema, any case): what acts on
# the session, on other sessions, or runs SQL text. The database refuses the SQL-text ones too.
_DENIED_FUNCTIONS: dict[str, str] = {
    "set_config": "changes a setting, and with it possibly who the statement runs as; the "
    "client sets the user and the statement timeout itself (pass user_id=... or use "
    "user_context)",
    "pg_advisory_lock": "takes a session-level advisory lock, which " + _OUTLIVES_THE_CALL
    + " (use pg_advisory_xact_lock)",
    "pg_advisory_lock_shared": "takes a session-level advisory lock, which "
    + _OUTLIVES_THE_CALL + " (use pg_advisory_xact_lock_shared)",
    "pg_try_advisory_lock": "takes a session-level advisory lock, which " + _OUTLIVES_THE_CALL
    + " (use pg_try_advisory_xact_lock)",
    "pg_try_advisory_lock_shared": "takes a session-level advisory lock, which "
    + _OUTLIVES_THE_CALL + " (use pg_try_advisory_xact_lock_shared)",
    "pg_advisory_unlock": "releases session-level advisory locks",
    "pg_advisory_unlock_shared": "releases session-level advisory locks",
    "pg_advisory_unlock_all": "releases session-level advisory locks",
    "pg_terminate_backend": _OTHER_SESSIONS,
    "pg_cancel_backend": _OTHER_SESSIONS,
    "pg_notify": _OTHER_SESSIONS,
    "pg_reload_conf": _OTHER_SESSIONS,
    "query_to_xml": _RUNS_SQL_TEXT,
    "query_to_xmlschema": _RUNS_SQL_TEXT,
    "query_to_xml_and_xmlschema": _RUNS_SQL_TEXT,
    "cursor_to_xml": "reads a cursor of the session by name",
    "cursor_to_xmlschema": "reads a cursor of the session by name",
    "ts_stat": _RUNS_SQL_TEXT,
    "setseed": "seeds the session's random numbers, which " + _OUTLIVES_THE_CALL,
    "lastval": "reads what an earlier call on the pooled connection left in the session",
    "currval": "reads what an earlier call on the pooled connection left in the session",
}
_LARGE_OBJECTS = "works on large objects, which have no row-level security and outlive the call"
_DENIED_FUNCTIONS.update(
    dict.fromkeys(
        (
            "lo_open", "lo_close", "lo_creat", "lo_create", "lo_import", "lo_export",
            "lo_unlink", "lo_put", "lo_get", "lo_from_bytea", "lo_lseek", "lo_lseek64",
            "lo_tell", "lo_tell64", "lo_truncate", "lo_truncate64", "loread", "lowrite",
        ),
        _LARGE_OBJECTS,
    )
)
_DENIED_PREFIXES: dict[str, str] = {"dblink": "opens or uses another database connection"}

# Statements refused wherever they appear, with why; named as the user wrote them.
_DENIED_STATEMENTS: dict[str, str] = {
    "DoStmt": "runs a procedural block, which no check of the statement can see into",
    "PrepareStmt": "prepares a statement on the pooled connection, which "
    + _OUTLIVES_THE_CALL,
    "ExecuteStmt": "runs a prepared statement of the session",
    "DeallocateStmt": "drops prepared statements of the session",
    "TransactionStmt": "controls the transaction; the client does (use transaction())",
    "ListenStmt": "listens on a channel, which " + _OUTLIVES_THE_CALL,
    "UnlistenStmt": "changes the session's listening channels",
    "NotifyStmt": "signals other sessions",
    "DeclareCursorStmt": "declares a cursor, which may outlive the call",
    "ClosePortalStmt": "closes cursors of the session",
    "FetchStmt": "reads a cursor of the session",
    "CopyStmt": "copies data in or out outside the statement's rows",
    "DiscardStmt": "discards the session's state",
    "LoadStmt": "loads a shared library into the session",
    "CallStmt": "calls a procedure, which may control transactions",
    "VariableSetStmt": "changes a setting of the session",
    "CreateTableAsStmt": "creates a table",
    "IntoClause": "creates a table (SELECT ... INTO)",
    "LockStmt": "locks tables",
}
# Settings whose change would change who the statement acts as.
_IDENTITY_SETTINGS = ("role", "session_authorization", "session authorization")
_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
_WRITES = ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")


@attrs.frozen
class Refusal:
    """Why user-scoped SQL is refused: the construct as written, what it is, and why."""

    written: str
    construct: str
    reason: str

    def message(self) -> str:
        """Return the refusal as one sentence (without the operation)."""
        named = self.written
        if self.construct and self.construct.lower() not in self.written.lower():
            named += f" ({self.construct})"
        return f"user-scoped SQL may not use {named}: it {self.reason}"


@attrs.frozen
class Verdict:
    """What one user-scoped SQL text is.

    ``refusal`` or ``syntax_error`` says why it may not run; otherwise ``kind`` is its
    statement (``SELECT``...). ``identifiers`` are every name the statement mentions (tables,
    aliases, CTEs, columns, functions; not literals), as the parser read them.
    """

    kind: str = ""
    refusal: Refusal | None = None
    syntax_error: str | None = None
    identifiers: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=4096)
def user_sql_verdict(text: str) -> Verdict:
    """Return the verdict on ``text``: SQL as PostgreSQL gets it (``$n`` placeholders).

    Never raises on any input: a text the grammar rejects gives ``syntax_error``.
    """
    try:
        # The JSON form first: libpg_query guards its own stack, and json.loads raises
        # RecursionError on a tree too deep for pglast's own (recursive, unguarded) build of
        # Python nodes, which a few thousand UNIONs would crash with a segmentation fault.
        json.loads(parse_sql_json(text))
        statements = parse_sql(text)
    except ParseError as exc:
        return Verdict(syntax_error=_syntax_message(text, exc))
    except RecursionError:
        return Verdict(
            refusal=Refusal(
                "a statement nested this deeply", "", "is deeper than the client parses"
            )
        )
    if len(statements) != 1 or statements[0].stmt is None:
        return Verdict(refusal=_not_one_statement(len(statements)))
    raw = statements[0]
    tree = raw.stmt
    assert tree is not None  # checked above
    identifiers = frozenset(_identifiers(tree))
    found = _first_denied(text, tree, raw.stmt_location or 0)
    kind = DATA_STATEMENTS.get(type(tree).__name__, "")
    if found is None and not kind:
        found = Refusal(
            _leading_words(text, raw.stmt_location or 0, 2),
            type(tree).__name__.removesuffix("Stmt"),
            "is not a data statement; user-scoped SQL is exactly one SELECT, INSERT, "
            "UPDATE, DELETE or MERGE (DDL, utility, role, transaction and session "
            "commands go through the admin path or not at all)",
        )
    if found is not None:
        return Verdict(refusal=found, identifiers=identifiers)
    return Verdict(kind=kind, identifiers=identifiers)


def parameter_refusal(split: SplitQuery) -> Refusal | None:
    """Refuse ``$n`` parameters the server would see besides what the ``%s`` placeholders
    became (a ``$1`` of the caller's own, or a ``%s`` inside a string literal, which psycopg
    rewrites there too): the server would bind them to the wrong values, or to none."""
    text = split.text
    if "$" not in text:
        return None
    expected = split.count if split.keys else 0
    try:
        found = sum(1 for token in scan(text) if token.name == "PARAM")
    except ParseError:  # the guard reports the text itself
        return None
    if found == expected:
        return None
    if found < expected:
        return Refusal(
            "a %s inside a quoted string",
            "",
            "is a placeholder to psycopg there too, so the value would go nowhere; write %%s "
            "for a literal percent-s",
        )
    return Refusal(
        "$n placeholders of its own",
        "",
        "would take values meant for the %s placeholders, or none; write %s (or %(name)s) "
        "for every value and pass them as params",
    )


def _not_one_statement(count: int) -> Refusal:
    if count == 0:
        return Refusal("an empty statement", "", "has nothing to run")
    return Refusal(
        f"{count} statements",
        "",
        "must be exactly one statement per call; run several in one transaction with "
        "transaction() (their values then never travel inside SQL text)",
    )


def _syntax_message(text: str, exc: ParseError) -> str:
    message = str(exc.args[0]) if exc.args else "syntax error"
    location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else -1
    if 0 <= location < len(text):
        message += f", at character {location + 1}"
    return message


def _walk(node: object) -> Iterator[ast.Node]:
    """Every node of the tree, depth first, parents before children."""
    stack: list[object] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Node):
            yield item
            children = [getattr(item, slot, None) for slot in item]
            stack.extend(reversed([c for c in children if isinstance(c, ast.Node | tuple)]))
        elif isinstance(item, tuple):
            stack.extend(reversed(item))


def _first_denied(text: str, tree: ast.Node, start: int) -> Refusal | None:
    """Return the first construct in ``tree`` no user-scoped statement may contain."""
    found: list[tuple[int, Refusal]] = []
    for node in _walk(tree):
        refusal = _denied(text, node)
        if refusal is not None:
            if node is tree and type(node).__name__ not in _WRITES:
                # The statement itself: named by its leading words as written.
                setting = isinstance(node, ast.VariableSetStmt)
                written = _leading_words(text, start, 5 if setting else 3, names=setting)
                refusal = attrs.evolve(refusal, written=written)
            location = getattr(node, "location", None)
            found.append((location if isinstance(location, int) else -1, refusal))
    if not found:
        return None
    # The first in the text; a nested statement without a location comes first of all.
    return min(found, key=lambda pair: pair[0])[1]


def _denied(text: str, node: ast.Node) -> Refusal | None:
    if isinstance(node, ast.FuncCall):
        return _denied_function(text, node)
    if isinstance(node, ast.ColumnRef | ast.A_Indirection):
        return _denied_attribute(text, node)
    if isinstance(node, ast.VariableSetStmt):
        return _denied_setting(node)
    kind = type(node).__name__
    if kind in _WRITES:
        return _denied_target(node)
    special = _special_statement(node)
    if special is not None:
        return special
    reason = _DENIED_STATEMENTS.get(kind)
    return None if reason is None else Refusal(_statement_name(node), "", reason)


def _special_statement(node: ast.Node) -> Refusal | None:
    """Temporary tables and held cursors: refused for what they leave behind."""
    if isinstance(node, ast.CreateStmt):
        if node.relation is not None and node.relation.relpersistence == "t":
            return Refusal(
                "CREATE TEMP TABLE",
                "",
                "creates a temporary table, which has no row-level security and "
                + _OUTLIVES_THE_CALL,
            )
    elif isinstance(node, ast.DeclareCursorStmt) and (node.options or 0) & 0x0020:  # WITH HOLD
        return Refusal("DECLARE ... WITH HOLD", "", "declares a cursor that outlives the call")
    return None


def _denied_function(text: str, node: ast.FuncCall) -> Refusal | None:
    parts = [p.sval or "" for p in node.funcname or () if isinstance(p, ast.String)]
    if not parts:
        return None
    name = parts[-1].lower()
    reason = _denied_name(name)
    if reason is None and name == "ts_rewrite" and len(node.args or ()) == 2:
        reason = _RUNS_SQL_TEXT  # ts_rewrite(query, 'SELECT ...') runs the SELECT
    if reason is None:
        return None
    written = _written_name(text, node.location) or ".".join(parts)
    return Refusal(written, name, reason)


def _denied_name(name: str) -> str | None:
    reason = _DENIED_FUNCTIONS.get(name)
    if reason is None:
        reason = next((r for p, r in _DENIED_PREFIXES.items() if name.startswith(p)), None)
    return reason


def _denied_attribute(text: str, node: ast.ColumnRef | ast.A_Indirection) -> Refusal | None:
    """PostgreSQL reads ``x.f`` and ``(x).f`` as the call ``f(x)`` when ``x`` is no table
    but a value and ``f`` a one-argument function (``(42::bigint).pg_advisory_lock``): a
    name after the first in a column reference, or in an indirection, is checked as a call."""
    if isinstance(node, ast.ColumnRef):
        names = list(node.fields or ())[1:]
    else:
        names = list(node.indirection or ())
    for part in names:
        if not isinstance(part, ast.String):
            continue
        name = (part.sval or "").lower()
        reason = _denied_name(name)
        if reason is not None:
            location = getattr(node, "location", None)  # a ColumnRef's; an indirection has none
            found = _name_token(text, location if isinstance(location, int) else 0, name)
            if found is None:
                written = name
            elif isinstance(location, int):
                written = text[location : found[1]]  # t.pg_advisory_lock
            else:
                written = "(...)." + text[found[0] : found[1]]
            return Refusal(
                written,
                name,
                reason + " (written as a field, it is a call of the function)",
            )
    return None


def _denied_setting(node: ast.VariableSetStmt) -> Refusal:
    name = (node.name or "").lower()
    verb = "RESET" if "RESET" in getattr(node.kind, "name", "") else "SET"
    scope = " LOCAL" if node.is_local else ""
    if name.startswith("app.") or name in _IDENTITY_SETTINGS:
        return Refusal(f"{verb}{scope} {node.name}", "", "sets " + _SETS_THE_USER.removeprefix(
            "would set "
        ))
    shown = f"{verb}{scope} {node.name}" if node.name else verb
    return Refusal(
        shown,
        "",
        "changes a setting of the session; the client sets the statement timeout itself",
    )


def _denied_target(node: ast.Node) -> Refusal | None:
    relation = getattr(node, "relation", None)
    if not isinstance(relation, ast.RangeVar):
        return None
    schema = (relation.schemaname or "").lower()
    table = (relation.relname or "").lower()
    if schema in _SYSTEM_SCHEMAS or (not schema and table.startswith("pg_")):
        written = f"{relation.schemaname}.{relation.relname}" if schema else relation.relname
        return Refusal(
            f"{DATA_STATEMENTS[type(node).__name__]} {written}",
            "",
            "writes to a system catalog or view (pg_settings changes session settings)",
        )
    return None


def _statement_name(node: ast.Node) -> str:
    if isinstance(node, ast.TransactionStmt):
        return str(getattr(node.kind, "name", "TRANSACTION")).removeprefix("TRANS_STMT_")
    names = {
        "DoStmt": "DO",
        "PrepareStmt": "PREPARE",
        "ExecuteStmt": "EXECUTE",
        "DeallocateStmt": "DEALLOCATE",
        "ListenStmt": "LISTEN",
        "UnlistenStmt": "UNLISTEN",
        "NotifyStmt": "NOTIFY",
        "DeclareCursorStmt": "DECLARE",
        "ClosePortalStmt": "CLOSE",
        "FetchStmt": "FETCH",
        "CopyStmt": "COPY",
        "DiscardStmt": "DISCARD",
        "LoadStmt": "LOAD",
        "CallStmt": "CALL",
        "CreateTableAsStmt": "CREATE TABLE AS",
        "IntoClause": "SELECT ... INTO",
        "LockStmt": "LOCK",
    }
    return names.get(type(node).__name__, type(node).__name__)


def _written_name(text: str, location: int | None) -> str:
    """The function name exactly as written at ``location``, up to its ``(``."""
    if not isinstance(location, int) or location < 0:
        return ""
    out = []
    quoted = False
    for char in text[location : location + 200]:
        if char == '"':
            quoted = not quoted
        elif char == "(" and not quoted:
            break
        out.append(char)
    return "".join(out).strip()


def _name_token(text: str, start: int, name: str) -> tuple[int, int] | None:
    """Where the first token from ``start`` that reads as ``name`` (any case, quoted or not)
    begins and ends in ``text``."""
    try:
        tokens = scan(text[start : start + 2000])
    except ParseError:  # pragma: no cover - the text parsed already
        return None
    for token in tokens:
        word = text[start + token.start : start + token.end + 1]
        if word.strip('"').lower() == name:
            return start + token.start, start + token.end + 1
    return None


def _leading_words(text: str, start: int, count: int, *, names: bool = False) -> str:
    """The first ``count`` keywords of the statement at ``start``, as written (with
    ``names``, names too, up to a ``=``: ``SET LOCAL U&"app.current_user_id"``)."""
    try:
        tokens = scan(text[start:])
    except ParseError:  # pragma: no cover - the text parsed already
        return text[start : start + 20]
    last = None
    for index, token in enumerate(tokens[:count]):
        word = text[start + token.start : start + token.end + 1]
        if names and (word == "=" or word.upper() == "TO"):
            break
        if token.kind == "NO_KEYWORD" and index and not names:
            break
        last = token
    if last is None:
        return text[start : start + 20]
    return text[start + tokens[0].start : start + last.end + 1]


def _identifiers(tree: ast.Node) -> Iterator[str]:
    """Every name in ``tree`` as the parser read it: relations, schemas, aliases, CTEs,
    columns, functions, types. String literals (``A_Const``) are not names."""
    stack: list[object] = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.A_Const):
            continue
        if isinstance(item, ast.String):
            yield item.sval or ""
            continue
        if isinstance(item, tuple):
            stack.extend(item)
            continue
        if not isinstance(item, ast.Node):
            continue
        for slot in item:
            value = getattr(item, slot, None)
            if isinstance(value, str) and slot in _NAME_SLOTS:
                yield value
            elif isinstance(value, ast.Node | tuple):
                stack.append(value)


_NAME_SLOTS = frozenset(
    {"relname", "schemaname", "catalogname", "ctename", "aliasname", "name", "colname"}
)
