"""Hostile user-scoped SQL: what an injection in domain code could send, by category.

The threat model of docs/database.md ("The threat model: hostile SQL"): the whole SQL text
of one user-scoped call may be hostile. Such a call may fail, or act as its own user; it must
never read, change or create another user's rows, and never change what any later call does.
Each :class:`Hostile` entry is one such text, run as user A against a database where user B has
rows, by ``tests/integration/test_hostile_sql.py`` (PostgreSQL, with the pooled connection
checked afterwards) and ``tests/contract/test_hostile_sql.py`` (every DB backend).

The ids of users and rows are fixed (:data:`USER_A`, :data:`USER_B`, ...), so the texts are
written out in full here, as an attacker would write them. Every text value of B's rows holds
:data:`B_MARKER`: none of them, and no id of B's rows, may show in what A gets back (rows or
error messages) or in A's rows afterwards, unless A's own text wrote it
(:func:`b_secrets_hidden_from`). The user directory (``users``) is readable by every user by
design, so B's email there is not a secret.

Each entry says what it must come to (:class:`Outcome`), the same on every backend:

- ``REFUSED``: :class:`crm_infra.UnsafeQueryError`, before any I/O. What docs/database.md
  lists as refused, in every spelling the grammar accepts, nested anywhere.
- ``ERROR``: some :class:`crm_infra.DatabaseError` (the server's or the fake's answer: row
  security, a missing table, a privilege, a syntax error), never rows; ``error`` narrows the
  class where it is deterministic.
- ``ROWS``: runs, and returns only A's rows (``rows``, when given, is the exact answer after
  :func:`normalize`).
- ``EITHER``: an error or A's rows; which one depends on the server (what it revokes, which
  extensions it has) or, on the fake, on its own names.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from crm_infra import DatabaseError, DatabaseInputError, IntegrityError, RowSecurityError

__all__ = [
    "A_ADDRESS",
    "A_CONTACT",
    "A_CONTACT_2",
    "A_TICKET",
    "BYSTANDER",
    "B_ADDRESS",
    "B_CONTACT",
    "B_CONTACT_2",
    "B_MARKER",
    "B_TICKET",
    "CORPUS",
    "SEED",
    "USER_A",
    "USER_B",
    "Hostile",
    "Outcome",
    "b_secrets_hidden_from",
    "by_category",
    "normalize",
]

USER_A = uuid.UUID("0a0a0a0a-0000-4000-8000-00000000000a")
USER_B = uuid.UUID("0b0b0b0b-0000-4000-8000-00000000000b")
A_CONTACT = uuid.UUID("0a0a0a0a-0000-4000-8000-0000000000c1")
A_CONTACT_2 = uuid.UUID("0a0a0a0a-0000-4000-8000-0000000000c2")
A_ADDRESS = uuid.UUID("0a0a0a0a-0000-4000-8000-0000000000d1")
A_TICKET = uuid.UUID("0a0a0a0a-0000-4000-8000-0000000000e1")
B_CONTACT = uuid.UUID("0b0b0b0b-0000-4000-8000-0000000000c1")
B_CONTACT_2 = uuid.UUID("0b0b0b0b-0000-4000-8000-0000000000c2")
B_ADDRESS = uuid.UUID("0b0b0b0b-0000-4000-8000-0000000000d1")
B_TICKET = uuid.UUID("0b0b0b0b-0000-4000-8000-0000000000e1")

B_MARKER = "bsecret"
"""In every text value of B's rows (lowercase); scanned for case-insensitively."""

BYSTANDER = "crm-hostile-bystander"
"""The application_name of a second client of the same login role, acting for B: what acts on
other sessions would hit it."""

_NAMES = {
    USER_A: "A",
    USER_B: "B",
    A_CONTACT: "A_CONTACT",
    A_CONTACT_2: "A_CONTACT_2",
    A_ADDRESS: "A_ADDRESS",
    A_TICKET: "A_TICKET",
    B_CONTACT: "B_CONTACT",
    B_CONTACT_2: "B_CONTACT_2",
    B_ADDRESS: "B_ADDRESS",
    B_TICKET: "B_TICKET",
}

_CREATED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # fixed: a reset restores rows as they were


def _rows(columns: str, *values: tuple[Any, ...]) -> tuple[dict[str, Any], ...]:
    names = [*columns.split(), "created_at"]
    return tuple(dict(zip(names, (*row, _CREATED), strict=True)) for row in values)


SEED: Mapping[str, Sequence[Mapping[str, Any]]] = {
    "users": _rows(
        "id email",
        (USER_A, "a@hostile.example"),
        (USER_B, "b@hostile.example"),
    ),
    "contacts": _rows(
        "id user_id name email phone company",
        (A_CONTACT, USER_A, "Ann", "ann@a.example", None, "A-Co"),
        (A_CONTACT_2, USER_A, "Al", None, None, None),
        (B_CONTACT, USER_B, "bsecret-name-1", "bsecret-1@b.example", "bsecret-phone",
         "bsecret-co"),
        (B_CONTACT_2, USER_B, "bsecret-name-2", None, None, None),
    ),
    "addresses": _rows(
        "id user_id contact_id city",
        (A_ADDRESS, USER_A, A_CONTACT, "Aville"),
        (B_ADDRESS, USER_B, B_CONTACT, "bsecret-city"),
    ),
    "tickets": _rows(
        "id user_id contact_id subject body status",
        (A_TICKET, USER_A, A_CONTACT, "A ticket", "a body", "open"),
        (B_TICKET, USER_B, B_CONTACT, "bsecret-subject", "bsecret-body", "open"),
    ),
}
"""The rows both users start with, inserted through the admin path, table by table."""


class Outcome(enum.Enum):
    """What a hostile call must come to (see the module docstring)."""

    REFUSED = "refused"
    ERROR = "error"
    ROWS = "rows"
    EITHER = "either"


@attrs.frozen
class Hostile:
    """One hostile user-scoped SQL text, run as user A.

    ``id`` is ``category:name``. ``rows`` pins the answer (after :func:`normalize`) where it
    is ``ROWS``; ``error`` narrows the error class where it is deterministic. The fake may
    answer any entry but a ``REFUSED`` one with ``UnsupportedQueryError`` (SQL it merely
    cannot run: PostgreSQL's catalogs and many of its functions), never differently.
    """

    id: str
    sql: str
    params: tuple[Any, ...] = ()
    expect: Outcome = Outcome.REFUSED
    rows: tuple[tuple[tuple[str, Any], ...], ...] | None = None
    error: type[DatabaseError] | None = None
    note: str = ""

    @property
    def category(self) -> str:
        """The part of the id before the colon."""
        return self.id.split(":", 1)[0]


def _fill(text: str) -> str:
    """Write the fixed ids into ``text`` (``<B>`` is B's user id, ``<B_CONTACT>``...)."""
    for value, name in sorted(_NAMES.items(), key=lambda item: -len(item[1])):
        text = text.replace(f"<{name}>", str(value))
    return text


_ID_TEXTS = {str(value): name for value, name in _NAMES.items()}


def _plain(value: Any) -> Any:
    """One value made comparable: the fixed ids by name (also as text, in JSON or XML), other
    ids and times as placeholders, containers as sorted tuples."""
    if isinstance(value, Mapping):
        result: Any = tuple(sorted((str(k), _plain(v)) for k, v in value.items()))
    elif isinstance(value, list | tuple):
        result = tuple(_plain(v) for v in value)
    elif isinstance(value, uuid.UUID):
        result = _NAMES.get(value, "<uuid>")
    elif isinstance(value, dt.date):
        result = "<time>"
    elif isinstance(value, Decimal):
        result = str(value)
    elif isinstance(value, str):
        result = _ID_TEXTS.get(value, value)
    else:
        result = value
    return result


def _freeze(rows: Sequence[Mapping[str, Any]]) -> tuple[tuple[tuple[str, Any], ...], ...]:
    return tuple(sorted((tuple(sorted(row.items())) for row in rows), key=repr))


def normalize(rows: Sequence[Mapping[str, Any]]) -> tuple[tuple[tuple[str, Any], ...], ...]:
    """Return ``rows`` comparable across backends: the fixed ids by name, other ids and times
    as placeholders, row order ignored."""
    return _freeze([{key: _plain(value) for key, value in row.items()} for row in rows])


CORPUS: list[Hostile] = []


def _entry(
    id_: str,
    sql: str,
    expect: Outcome = Outcome.REFUSED,
    *,
    params: tuple[Any, ...] = (),
    rows: Sequence[Mapping[str, Any]] | None = None,
    error: type[DatabaseError] | None = None,
    note: str = "",
) -> None:
    assert all(e.id != id_ for e in CORPUS), id_
    pinned = None if rows is None else _freeze(rows)
    CORPUS.append(
        Hostile(
            id_,
            _fill(sql),
            tuple(_fill(p) if isinstance(p, str) else p for p in params),
            expect,
            pinned,
            error,
            note,
        )
    )


REFUSED, ERROR, ROWS, EITHER = Outcome.REFUSED, Outcome.ERROR, Outcome.ROWS, Outcome.EITHER
_SET_B = "set_config('app.current_user_id', '<B>', true)"
_SET_B_SESSION = "set_config('app.current_user_id', '<B>', false)"

# --- identity: setting who the statement runs as, in every spelling and position ---------

for name, sql in {
    "set-config-local": f"SELECT {_SET_B}",
    "set-config-session": f"SELECT {_SET_B_SESSION}",
    "set-config-upper": "SELECT SET_CONFIG('APP.CURRENT_USER_ID', '<B>', TRUE)",
    "set-config-quoted": "SELECT \"set_config\"('app.current_user_id', '<B>', true)",
    "set-config-schema": "SELECT pg_catalog.set_config('app.current_user_id', '<B>', true)",
    "set-config-schema-quoted":
        "SELECT \"pg_catalog\".\"set_config\"('app.current_user_id', '<B>', false)",
    "set-config-uescape": "SELECT U&\"\\0073et_config\"('app.current_user_id', '<B>', true)",
    "set-config-uescape-custom":
        "SELECT U&\"!0073et!005fconfig\" UESCAPE '!'('app.current_user_id', '<B>', false)",
    "set-config-uescape-schema":
        "SELECT U&\"pg\\005fcatalog\".U&\"set\\005fconfig\"('app.current_user_id', '<B>', true)",
    "set-config-named-args": "SELECT set_config(setting_name => 'app.current_user_id', "
    "new_value => '<B>', is_local => false)",
    "set-config-comments":
        "SELECT /* who */ set_config /* am I */ ('app.current_user_id', '<B>', true) -- now",
    "set-config-whitespace":
        "SELECT\n\tset_config\n(\n'app.current_user_id' ,\n'<B>' ,\ntrue\n)",
    "set-config-setting-name-built": "SELECT set_config('app.' || 'current_user_id', '<B>', true)",
    "set-config-in-where": f"SELECT name FROM contacts WHERE {_SET_B} IS NOT NULL",
    "set-config-scalar-subquery": f"SELECT (SELECT {_SET_B}) AS who, name FROM contacts",
    "set-config-cte": f"WITH who AS (SELECT {_SET_B} AS s) SELECT c.name FROM who, contacts c",
    "set-config-cte-materialized":
        f"WITH who AS MATERIALIZED (SELECT {_SET_B} AS s) SELECT c.name FROM who CROSS JOIN "
        "contacts c",
    "set-config-recursive-cte":
        f"WITH RECURSIVE r(n) AS (SELECT {_SET_B} UNION SELECT n FROM r) SELECT n FROM r",
    "set-config-rows-from": f"SELECT * FROM ROWS FROM ({_SET_B}) AS s(v)",
    "set-config-from": "SELECT * FROM pg_catalog.set_config('app.current_user_id', '<B>', "
    "true) AS s(v)",
    "set-config-lateral":
        f"SELECT c.name FROM contacts c CROSS JOIN LATERAL (SELECT {_SET_B}) AS s(v)",
    "set-config-exists": f"SELECT name FROM contacts WHERE EXISTS (SELECT {_SET_B})",
    "set-config-in-list":
        f"SELECT name FROM contacts WHERE user_id IN (SELECT {_SET_B}::uuid)",
    "set-config-order-by": f"SELECT name FROM contacts ORDER BY {_SET_B}",
    "set-config-group-having":
        f"SELECT name FROM contacts GROUP BY name HAVING {_SET_B} IS NOT NULL",
    "set-config-filter":
        f"SELECT count(*) FILTER (WHERE {_SET_B} <> '') AS n FROM contacts",
    "set-config-window": f"SELECT {_SET_B} OVER () AS w FROM contacts",
    "set-config-case": f"SELECT CASE WHEN true THEN {_SET_B} END AS who",
    "set-config-coalesce": f"SELECT coalesce(NULL, {_SET_B}) AS who",
    "set-config-array": f"SELECT ARRAY[{_SET_B}] AS who",
    "set-config-json": f"SELECT json_build_object('who', {_SET_B}) AS who",
    "set-config-cast-argument": f"SELECT CAST({_SET_B} AS uuid) AS who",
    "set-config-values": f"VALUES ({_SET_B})",
    "set-config-union": f"SELECT name FROM contacts UNION ALL SELECT {_SET_B}",
    "set-config-insert-values":
        f"INSERT INTO contacts (name) VALUES ({_SET_B}) RETURNING user_id",
    "set-config-insert-select":
        f"INSERT INTO contacts (name) SELECT {_SET_B} RETURNING user_id",
    "set-config-insert-returning":
        f"INSERT INTO contacts (name) VALUES ('x') RETURNING {_SET_B}",
    "set-config-update": f"UPDATE contacts SET name = {_SET_B} WHERE id = '<A_CONTACT_2>'",
    "set-config-delete": f"DELETE FROM contacts WHERE name = {_SET_B}",
    "set-config-merge":
        f"MERGE INTO contacts c USING (SELECT {_SET_B} AS s) AS x ON false "
        "WHEN NOT MATCHED THEN INSERT (name) VALUES (x.s)",
    "set-config-data-modifying-cte":
        f"WITH moved AS (UPDATE contacts SET name = name WHERE {_SET_B} IS NOT NULL "
        "RETURNING id) SELECT count(*) AS n FROM moved",
    "set-config-explain": f"EXPLAIN SELECT {_SET_B}",
    "set-config-explain-analyze": f"EXPLAIN (ANALYZE, COSTS OFF) SELECT {_SET_B_SESSION}",
    "set-config-role": "SELECT set_config('role', 'crm_admin', false)",
    "set-config-session-authorization":
        "SELECT set_config('session_authorization', 'postgres', false)",
    "set-config-row-security": "SELECT set_config('row_security', 'off', false)",
    "set-app-equals": "SET app.current_user_id = '<B>'",
    "set-app-to": "SET app.current_user_id TO '<B>'",
    "set-app-upper": "SET APP.CURRENT_USER_ID = '<B>'",
    "set-session-app": "SET SESSION app.current_user_id = '<B>'",
    "set-local-app": "SET LOCAL app.current_user_id = '<B>'",
    "set-local-app-quoted-parts": "SET LOCAL \"app\".\"current_user_id\" = '<B>'",
    "set-local-app-quoted-whole": "SET LOCAL \"app.current_user_id\" = '<B>'",
    "set-local-app-uescape": "SET LOCAL U&\"app\\002ecurrent_user_id\" = '<B>'",
    "set-app-default": "SET app.current_user_id TO DEFAULT",
    "reset-app": "RESET app.current_user_id",
    "reset-app-quoted": "RESET \"app\".current_user_id",
    "set-role": "SET ROLE crm_admin",
    "set-local-role": "SET LOCAL ROLE crm_app",
    "set-role-none": "SET ROLE NONE",
    "reset-role": "RESET ROLE",
    "set-role-quoted": "SET \"role\" = 'crm_admin'",
    "set-role-uescape": "SET U&\"\\0072ole\" TO 'crm_admin'",
    "set-session-authorization": "SET SESSION AUTHORIZATION postgres",
    "set-session-authorization-default": "SET SESSION AUTHORIZATION DEFAULT",
    "reset-session-authorization": "RESET SESSION AUTHORIZATION",
    "set-session-authorization-quoted": "SET \"session_authorization\" = 'postgres'",
}.items():
    _entry(f"identity:{name}", sql)
_entry(
    "identity:set-config-param",
    "SELECT set_config('app.current_user_id', %s, false) AS who",
    params=("<B>",),
)
_entry("identity:set-app-param", "SET app.current_user_id = %s", params=("<B>",))
_entry(
    "identity:read-own-setting",
    "SELECT current_setting('app.current_user_id', true) AS me",
    ROWS,
    rows=[{"me": "A"}],
    note="reading the setting is allowed, and says A",
)

# --- the reproductions of issue 11, one by one --------------------------------------------

_entry(
    "repro:do-deallocate-prepare-set-user",
    "DO $$BEGIN EXECUTE 'DEALLOCATE _crm_set_user'; EXECUTE 'PREPARE _crm_set_user(text) AS "
    "SELECT set_config(''app.current_user_id'', ''<B>'', true)'; END$$",
)
_entry(
    "repro:do-deallocate-all-prepare",
    "DO $$BEGIN EXECUTE 'DEALLOCATE ALL'; EXECUTE 'PREPARE _crm_set_user(text, text) AS "
    "SELECT set_config(''app.current_user_id'', ''<B>'', true), $2'; END$$",
)
_entry(
    "repro:do-listen-and-session-lock",
    "DO $$BEGIN EXECUTE 'LISTEN crm_hostile'; PERFORM pg_advisory_lock(4242); END$$",
)
_entry("repro:execute-set-user-then-select",
       "EXECUTE _crm_set_user('<B>'); SELECT name FROM contacts")
_entry("repro:execute-set-user", "EXECUTE _crm_set_user('<B>')")
_entry("repro:set-local-uescape-name", "SET LOCAL U&\"app.current_user_id\" = '<B>'")
_entry(
    "repro:uescape-set-config",
    "SELECT U&\"\\0073et_config\"('app.current_user_id', '<B>', false)",
)
_entry(
    "repro:do-dynamic-set-config",
    "DO $$BEGIN PERFORM set_config('app.current_user_id', '<B>', false); END$$",
)
_entry(
    "repro:do-dynamic-execute-format",
    "DO $$BEGIN EXECUTE format('SELECT set_config(%L, %L, false)', 'app.current_user_id', "
    "'<B>'); END$$",
)
_entry(
    "repro:query-to-xml",
    "SELECT query_to_xml('SELECT set_config(''app.current_user_id'', ''<B>'', false)', "
    "true, false, '')",
)
_entry(
    "repro:query-to-xmlschema",
    "SELECT query_to_xmlschema('SELECT name FROM contacts', true, false, '')",
)
_entry(
    "repro:query-to-xml-and-xmlschema",
    "SELECT query_to_xml_and_xmlschema('SELECT name FROM contacts', true, false, '')",
)
_entry(
    "repro:ts-stat",
    "SELECT * FROM ts_stat('SELECT to_tsvector(set_config(''app.current_user_id'', "
    "''<B>'', false))')",
)
_entry(
    "repro:ts-rewrite-query-text",
    "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, "
    "to_tsquery(set_config(''app.current_user_id'', ''<B>'', false))')",
)
_entry(
    "repro:cursor-to-xml",
    "SELECT cursor_to_xml('held'::refcursor, 10, false, false, '')",
)
_entry("repro:commit-begin", "COMMIT; BEGIN")
_entry(
    "repro:cte-shadow-exists",
    "SELECT name FROM _t_contacts WHERE EXISTS "
    "(WITH _t_contacts AS (SELECT 1) SELECT 1 FROM _t_contacts)",
    ERROR,
    note="PostgreSQL has no _t_contacts; the fake must not reach its base table",
)
_entry(
    "repro:cte-shadow-insert-select",
    "INSERT INTO contacts (name, email) SELECT name, email FROM _t_contacts WHERE EXISTS "
    "(WITH _t_contacts AS (SELECT 1) SELECT 1 FROM _t_contacts)",
    ERROR,
)
_entry(
    "repro:catalog-prepared-statements",
    "SELECT name, statement FROM pg_prepared_statements",
    ROWS,
)
_entry(
    "repro:catalog-stat-activity",
    "SELECT pid, application_name, state, query FROM pg_stat_activity",
    ROWS,
)

# --- dynamic SQL: text run by a procedural block or a built-in function -------------------

for name, sql in {
    "do-plain": "DO $$BEGIN NULL; END$$",
    "do-language": "DO LANGUAGE plpgsql $$BEGIN NULL; END$$",
    "do-read-every-row":
        "DO $$DECLARE r record; BEGIN FOR r IN SELECT name FROM contacts LOOP "
        "RAISE NOTICE '%', r.name; END LOOP; END$$",
    "do-sql-language": "DO LANGUAGE sql $$SELECT 1$$",
    "query-to-xml-rows": "SELECT query_to_xml('SELECT name FROM contacts', true, false, '')",
    "query-to-xml-schema":
        "SELECT pg_catalog.query_to_xml('SELECT name FROM contacts', true, false, '')",
    "query-to-xml-uescape":
        "SELECT U&\"query\\005fto\\005fxml\"('SELECT name FROM contacts', true, false, '')",
    "query-to-xml-nested":
        "SELECT name FROM contacts WHERE EXISTS "
        "(SELECT query_to_xml('SELECT pg_advisory_lock(4242)', true, false, ''))",
    "query-to-xml-in-values":
        "INSERT INTO contacts (name) VALUES "
        "(query_to_xml('SELECT name FROM contacts', true, false, '')::text)",
    "ts-stat-weights": "SELECT * FROM ts_stat('SELECT to_tsvector(name) FROM contacts', 'a')",
    "ts-stat-schema":
        "SELECT * FROM pg_catalog.ts_stat('SELECT to_tsvector(name) FROM contacts')",
    "ts-rewrite-select":
        "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery')",
    "cursor-to-xmlschema": "SELECT cursor_to_xmlschema('held'::refcursor, false, false, '')",
    "dblink": "SELECT dblink('dbname=postgres', 'SELECT 1')",
    "dblink-exec": "SELECT dblink_exec('dbname=postgres', 'SELECT 1')",
    "lo-import": "SELECT lo_import('/etc/hostname')",
    "lo-from-bytea": "SELECT lo_from_bytea(0, 'planted')",
    "lo-create": "SELECT lo_create(0)",
    "lowrite": "SELECT lowrite(0, 'planted')",
    # PostgreSQL's attribute notation: (x).f is f(x) for a function of one argument. No
    # FuncCall in the parse tree, the same call on the server.
    "ts-stat-attribute-set-user":
        "SELECT ('SELECT to_tsvector(set_config(''app.current_user_id'', ''<B>'', "
        "false))'::text).ts_stat",
    "ts-stat-attribute-search-path":
        "SELECT ('SELECT to_tsvector(set_config(''search_path'', ''pg_catalog'', "
        "false))'::text).ts_stat",
    "ts-stat-attribute-session-lock":
        "SELECT ('SELECT to_tsvector(pg_advisory_lock(4245)::text)'::text).ts_stat",
    "ts-stat-attribute-rows":
        "SELECT ('SELECT to_tsvector(name) FROM contacts'::text).ts_stat",
    "lo-create-attribute": "SELECT (0::oid).lo_create",
    "lo-unlink-attribute": "SELECT (0::oid).lo_unlink",
    "ts-stat-attribute-query-to-xml":
        "SELECT ('SELECT to_tsvector(query_to_xml(''SELECT 1'', true, false, '''')::text)'"
        "::text).ts_stat",
}.items():
    _entry(f"dynamic:{name}", sql)
for name, sql in {
    "table-to-xml": "SELECT table_to_xml('contacts', true, false, '') AS x",
    "table-to-xml-and-xmlschema":
        "SELECT table_to_xml_and_xmlschema('tickets', true, false, '') AS x",
    "schema-to-xml": "SELECT schema_to_xml('public', true, false, '') AS x",
    "database-to-xml": "SELECT database_to_xml(true, false, '') AS x",
}.items():
    # They run SQL they build from a table's name, as the caller and under row-level
    # security; what they may return is A's rows only.
    _entry(f"dynamic:{name}", sql, EITHER)

# --- transaction control ------------------------------------------------------------------

for name, sql in {
    "begin": "BEGIN",
    "begin-isolation": "BEGIN ISOLATION LEVEL SERIALIZABLE",
    "start-transaction": "START TRANSACTION READ WRITE",
    "commit": "COMMIT",
    "commit-and-chain": "COMMIT AND CHAIN",
    "end": "END",
    "rollback": "ROLLBACK",
    "abort": "ABORT",
    "rollback-and-chain": "ROLLBACK AND CHAIN",
    "savepoint": "SAVEPOINT hostile",
    "release-client-savepoint": "RELEASE SAVEPOINT _crm_sp1",
    "rollback-to-client-savepoint": "ROLLBACK TO SAVEPOINT _crm_sp1",
    "prepare-transaction": "PREPARE TRANSACTION 'hostile'",
    "commit-prepared": "COMMIT PREPARED 'hostile'",
    "rollback-prepared": "ROLLBACK PREPARED 'hostile'",
    "commit-then-set-user": f"COMMIT; SELECT {_SET_B_SESSION}",
    "commit-then-select": "COMMIT; SELECT name FROM contacts",
    "rollback-then-insert": "ROLLBACK; INSERT INTO contacts (user_id, name) "
    "VALUES ('<B>', 'planted')",
    "set-transaction": "SET TRANSACTION READ ONLY",
    "set-session-characteristics":
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "set-constraints": "SET CONSTRAINTS ALL DEFERRED",
    "lock-table": "LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE",
}.items():
    _entry(f"txn:{name}", sql)

# --- session state: what would outlive the call on a pooled connection --------------------

for name, sql in {
    "prepare": "PREPARE mine AS SELECT name FROM contacts",
    "prepare-set-user":
        "PREPARE _crm_set_user(text) AS SELECT set_config('app.current_user_id', '<B>', true)",
    "prepare-content-addressed-name":
        "PREPARE _crm_0000000000000000000000000000000000000000 AS "
        "SELECT name FROM contacts WHERE user_id = '<B>'",
    "execute": "EXECUTE mine",
    "deallocate": "DEALLOCATE mine",
    "deallocate-all": "DEALLOCATE ALL",
    "deallocate-prepare-all": "DEALLOCATE PREPARE ALL",
    "listen": "LISTEN crm_hostile",
    "listen-quoted": "LISTEN \"crm hostile\"",
    "unlisten": "UNLISTEN *",
    "notify": "NOTIFY crm_events, 'hostile'",
    "pg-notify": "SELECT pg_notify('crm_events', 'hostile')",
    "pg-notify-schema": "SELECT pg_catalog.pg_notify('crm_events', 'hostile')",
    "advisory-lock": "SELECT pg_advisory_lock(4242)",
    "advisory-lock-pair": "SELECT pg_advisory_lock(42, 42)",
    "advisory-lock-shared": "SELECT pg_advisory_lock_shared(4242)",
    "try-advisory-lock": "SELECT pg_try_advisory_lock(4242)",
    "try-advisory-lock-shared": "SELECT pg_try_advisory_lock_shared(4242)",
    "advisory-lock-in-where": "SELECT name FROM contacts WHERE pg_try_advisory_lock(4242)",
    "advisory-lock-uescape": "SELECT U&\"pg\\005fadvisory\\005flock\"(4242)",
    "advisory-unlock-all": "SELECT pg_advisory_unlock_all()",
    "advisory-lock-attribute": "SELECT (4242::bigint).pg_advisory_lock",
    "advisory-lock-shared-attribute": "SELECT (4243::bigint).pg_advisory_lock_shared",
    "advisory-unlock-attribute": "SELECT (4242::bigint).pg_advisory_unlock",
    "try-advisory-lock-attribute":
        "SELECT name FROM contacts WHERE (4244::bigint).pg_try_advisory_lock",
    "create-temp-table": "CREATE TEMP TABLE stash (name text)",
    "create-temporary-table": "CREATE TEMPORARY TABLE stash (name text)",
    "create-pg-temp-table": "CREATE TABLE pg_temp.stash (name text)",
    "create-temp-table-as": "CREATE TEMP TABLE stash AS SELECT name FROM contacts",
    "create-temp-view": "CREATE TEMP VIEW stash AS SELECT name FROM contacts",
    "select-into-temp": "SELECT name INTO TEMP stash FROM contacts",
    "select-into-pg-temp": "SELECT name INTO pg_temp.stash FROM contacts",
    "select-into": "SELECT name INTO stash FROM contacts",
    "declare": "DECLARE held CURSOR FOR SELECT name FROM contacts",
    "declare-with-hold": "DECLARE held CURSOR WITH HOLD FOR SELECT name FROM contacts",
    "declare-binary-with-hold":
        "DECLARE held BINARY NO SCROLL CURSOR WITH HOLD FOR SELECT name FROM contacts",
    "fetch": "FETCH ALL FROM held",
    "move": "MOVE NEXT IN held",
    "close-all": "CLOSE ALL",
    "discard-all": "DISCARD ALL",
    "discard-plans": "DISCARD PLANS",
    "discard-temp": "DISCARD TEMP",
    "discard-sequences": "DISCARD SEQUENCES",
    "load": "LOAD 'plpgsql'",
    "load-path": "LOAD '/tmp/hostile.so'",
    "set-statement-timeout": "SET statement_timeout = 0",
    "set-local-statement-timeout": "SET LOCAL statement_timeout = 0",
    "set-search-path": "SET search_path = pg_temp, public",
    "set-session-search-path": "SET SESSION search_path TO pg_catalog",
    "set-work-mem": "SET work_mem = '64kB'",
    "set-row-security": "SET row_security = off",
    "set-read-only": "SET default_transaction_read_only = on",
    "set-application-name": "SET application_name = 'crm-hostile-bystander'",
    "set-config-statement-timeout": "SELECT set_config('statement_timeout', '0', false)",
    "set-config-search-path": "SELECT set_config('search_path', 'pg_catalog', false)",
    "reset-all": "RESET ALL",
    "reset-statement-timeout": "RESET statement_timeout",
    "update-pg-settings":
        "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
    "update-pg-catalog-pg-settings":
        "UPDATE pg_catalog.pg_settings SET setting = 'pg_catalog' WHERE name = 'search_path'",
    "update-pg-settings-quoted":
        "UPDATE \"pg_settings\" SET setting = '64kB' WHERE name = 'work_mem'",
    "update-pg-settings-uescape":
        "UPDATE U&\"pg\\005fsettings\" SET setting = '64kB' WHERE name = 'work_mem'",
    "update-pg-settings-in-cte":
        "WITH s AS (UPDATE pg_settings SET setting = 'pg_catalog' WHERE name = 'search_path' "
        "RETURNING name) SELECT name FROM s",
    "update-pg-settings-app-user":
        "UPDATE pg_settings SET setting = '<B>' WHERE name = 'app.current_user_id'",
    "alter-role-set": "ALTER ROLE CURRENT_USER SET statement_timeout = 0",
    "alter-role-password": "ALTER ROLE CURRENT_USER PASSWORD 'hostile'",
    "alter-user-password": "ALTER USER CURRENT_USER WITH PASSWORD 'hostile'",
    "alter-role-set-app-user": "ALTER ROLE CURRENT_USER SET app.current_user_id = '<B>'",
    "security-label": "SECURITY LABEL ON TABLE contacts IS 'hostile'",
    "copy-to-stdout": "COPY contacts TO STDOUT",
    "copy-query-to-stdout": "COPY (SELECT name FROM contacts) TO STDOUT",
    "copy-from-stdin": "COPY contacts (name) FROM STDIN",
    "copy-to-program": "COPY contacts TO PROGRAM 'cat'",
    "copy-to-file": "COPY contacts TO '/tmp/hostile.csv'",
    "call": "CALL hostile()",
    "checkpoint": "CHECKPOINT",
    "vacuum": "VACUUM contacts",
    "analyze": "ANALYZE contacts",
    "create-function": "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "grant": "GRANT ALL ON contacts TO PUBLIC",
    "comment": "COMMENT ON TABLE contacts IS 'hostile'",
    "truncate": "TRUNCATE contacts CASCADE",
    "setseed": "SELECT setseed(0.25)",
    "setseed-attribute": "SELECT (0.25::float8).setseed",
}.items():
    _entry(f"session:{name}", sql)
_entry(
    "session:advisory-xact-lock",
    "SELECT pg_advisory_xact_lock(4242) IS NULL AS locked",
    ROWS,
    rows=[{"locked": False}],
    note="transaction-level: released when the call's transaction ends",
)

# --- other sessions: what would reach into the connections of other users ----------------

_AT_BYSTANDER = f"FROM pg_stat_activity WHERE application_name = '{BYSTANDER}'"
for name, sql in {
    "terminate": f"SELECT pg_terminate_backend(pid) {_AT_BYSTANDER}",
    "cancel": f"SELECT pg_cancel_backend(pid) {_AT_BYSTANDER}",
    "terminate-schema": f"SELECT pg_catalog.pg_terminate_backend(pid) {_AT_BYSTANDER}",
    "terminate-uescape": f"SELECT U&\"pg\\005fterminate\\005fbackend\"(pid) {_AT_BYSTANDER}",
    "terminate-in-where": f"SELECT pid {_AT_BYSTANDER} AND pg_terminate_backend(pid)",
    "terminate-attribute": f"SELECT (pid).pg_terminate_backend {_AT_BYSTANDER}",
    "cancel-attribute": f"SELECT (pid).pg_cancel_backend {_AT_BYSTANDER}",
    "terminate-self-attribute": "SELECT (pg_backend_pid()).pg_terminate_backend",
    "reload-conf": "SELECT pg_reload_conf()",
}.items():
    _entry(f"other:{name}", sql)
_entry("other:stat-reset", "SELECT pg_stat_reset()", ERROR, note="not granted to the role")

# --- several statements in one call -------------------------------------------------------

for name, sql in {
    "two-selects": "SELECT name FROM contacts; SELECT name FROM contacts",
    "select-then-delete": "SELECT name FROM contacts; DELETE FROM contacts",
    "select-then-set-user": f"SELECT 1; SELECT {_SET_B_SESSION}",
    "three-statements": "SELECT 1; SELECT 2; SELECT 3",
    "semicolon-in-comment": "SELECT name FROM contacts /* ; */; DELETE FROM addresses",
    "semicolon-in-string": "SELECT ';' AS s; DELETE FROM addresses",
    "semicolon-in-dollar-string": "SELECT $$;$$ AS s; DELETE FROM addresses",
    "semicolon-in-identifier": "SELECT 1 AS \";\"; DELETE FROM addresses",
    "semicolon-in-e-string": "SELECT E'\\';' AS s; DELETE FROM addresses",
    "insert-then-read-other":
        "INSERT INTO contacts (name) VALUES ('x'); SELECT name FROM contacts "
        "WHERE user_id = '<B>'",
}.items():
    _entry(f"multi:{name}", sql)
_entry(
    "multi:with-params",
    "INSERT INTO contacts (name) VALUES (%s); DELETE FROM addresses WHERE city <> %s",
    params=("x", "y"),
)
_entry("multi:trailing-semicolons", "SELECT name FROM contacts;;", ROWS,
       rows=[{"name": "Al"}, {"name": "Ann"}], note="one statement and empty ones")
_entry("multi:leading-semicolon", ";SELECT name FROM contacts", ROWS,
       rows=[{"name": "Al"}, {"name": "Ann"}])
_entry(
    "multi:nul-byte",
    "SELECT name FROM contacts\x00; DELETE FROM addresses",
    ERROR,
    error=DatabaseInputError,
    note="libpq would end the text at the NUL",
)

# --- catalog reads: allowed, and they show nothing of B's --------------------------------

for name, sql in {
    "prepared-statements-all":
        "SELECT name, statement, from_sql, parameter_types::text AS types "
        "FROM pg_prepared_statements",
    "stat-activity-same-role":
        "SELECT pid, state, query FROM pg_stat_activity WHERE usename = current_user",
    "stat-activity-bystander": f"SELECT query, state {_AT_BYSTANDER}",
    "settings": "SELECT name, setting, source FROM pg_settings",
    "settings-app": "SELECT name, setting, reset_val, source FROM pg_settings "
    "WHERE name LIKE 'app.%'",
    "roles": "SELECT rolname, rolsuper, rolbypassrls, rolcreaterole FROM pg_roles",
    "security-definer-functions": "SELECT proname, proowner::regrole::text AS owner "
    "FROM pg_proc WHERE prosecdef",
    "stats": "SELECT tablename, attname, most_common_vals::text AS mcv, "
    "histogram_bounds::text AS hist FROM pg_stats WHERE schemaname = 'public'",
    "stats-ext": "SELECT * FROM pg_stats_ext",
    "stat-user-tables": "SELECT relname, n_live_tup FROM pg_stat_user_tables",
    "locks": "SELECT locktype, mode, pid, objid FROM pg_locks",
    "cursors": "SELECT name, statement FROM pg_cursors",
    "listening-channels": "SELECT pg_listening_channels() AS channel",
    "policies": "SELECT tablename, qual, with_check FROM pg_policies",
    "large-objects": "SELECT oid FROM pg_largeobject_metadata",
    "current-query": "SELECT current_query() AS q",
    "session-user": "SELECT current_user AS cu, session_user AS su",
}.items():
    _entry(f"catalog:{name}", sql, ROWS)
_entry("catalog:stat-statements", "SELECT query FROM pg_stat_statements", EITHER,
       note="an extension the server may not have")
_entry("catalog:users-directory", "SELECT email FROM users ORDER BY email", ROWS,
       rows=[{"email": "a@hostile.example"}, {"email": "b@hostile.example"}],
       note="the user directory is readable by every user, by design")

# --- CTE shadowing: of the fake's internal names and of real tables ----------------------

for name, sql in {
    "internal-base-table": "SELECT name FROM _t_contacts",
    "internal-base-table-quoted": "SELECT name FROM \"_t_contacts\"",
    "internal-base-table-uescape": "SELECT name FROM U&\"\\005ft\\005fcontacts\"",
    "internal-in-scalar-subquery": "SELECT (SELECT count(*) FROM _t_contacts) AS n",
    "internal-after-nested-cte":
        "WITH a AS (WITH _t_tickets AS (SELECT 1 AS x) SELECT x FROM _t_tickets) "
        "SELECT subject FROM _t_tickets",
    "internal-cte-in-in-list":
        "SELECT city FROM _t_addresses WHERE contact_id IN "
        "(WITH _t_addresses AS (SELECT '<A_CONTACT>'::uuid AS c) SELECT c FROM _t_addresses)",
    "internal-union":
        "SELECT name FROM contacts UNION ALL SELECT name FROM _t_contacts WHERE EXISTS "
        "(WITH _t_contacts AS (SELECT 1) SELECT 1 FROM _t_contacts)",
    "internal-scalar-beside-cte":
        "SELECT (SELECT max(name) FROM _t_contacts) AS n FROM contacts WHERE EXISTS "
        "(WITH _t_contacts AS (SELECT 1) SELECT 1 FROM _t_contacts)",
    "internal-count-beside-cte":
        "SELECT (SELECT count(*) FROM _t_tickets) AS n WHERE EXISTS "
        "(WITH _t_tickets AS (SELECT 1) SELECT 1 FROM _t_tickets)",
    "internal-insert-target": "INSERT INTO _t_contacts (user_id, name) VALUES ('<B>', 'x')",
    "internal-update-target": "UPDATE _t_contacts SET name = 'hijacked'",
    "internal-delete-target": "DELETE FROM _t_tickets",
    "internal-schema-main": "SELECT name FROM main._t_contacts",
    "internal-sqlite-master": "SELECT name, sql FROM sqlite_master",
    "internal-sqlite-schema": "SELECT name FROM sqlite_schema",
    "internal-pragma-function": "SELECT name FROM pragma_table_info('_t_contacts')",
    "internal-update-from":
        "UPDATE contacts SET name = b.name FROM _t_contacts b WHERE EXISTS "
        "(WITH _t_contacts AS (SELECT 1) SELECT 1 FROM _t_contacts)",
}.items():
    _entry(f"shadow:{name}", sql, ERROR)
for name, sql, rows in (
    ("cte-named-contacts", "WITH contacts AS (SELECT name FROM contacts) SELECT name FROM contacts",
     [{"name": "Al"}, {"name": "Ann"}]),
    ("cte-named-contacts-made-up",
     ("WITH contacts AS (SELECT '<B_CONTACT>'::uuid AS id, 'made up' AS name) "
      "SELECT id, name FROM contacts"), [{"id": "B_CONTACT", "name": "made up"}]),
    ("cte-named-tickets-then-join",
     ("WITH tickets AS (SELECT id, subject FROM tickets) "
      "SELECT t.subject FROM tickets t"), [{"subject": "A ticket"}]),
    ("cte-named-internal-unused",
     "WITH _t_contacts AS (SELECT 1 AS x) SELECT name FROM contacts", None),
    ("cte-named-users", "WITH users AS (SELECT id FROM contacts) SELECT count(*) AS n FROM users",
     [{"n": 2}]),
    ("cte-update-via-shadow",
     ("WITH contacts AS (SELECT id FROM contacts) UPDATE contacts SET company = 'via-cte' "
      "WHERE id IN (SELECT id FROM contacts) RETURNING name"),
     [{"name": "Al"}, {"name": "Ann"}]),
    ("cte-recursive-contacts",
     ("WITH RECURSIVE contacts AS (SELECT id, name FROM public.contacts) "
      "SELECT name FROM contacts"), [{"name": "Al"}, {"name": "Ann"}]),
):
    # A CTE named like a table reads the user's own rows (or what it makes up itself). The
    # fake may refuse a WITH query named like a table or like its internal names.
    _entry(f"shadow:{name}", sql, EITHER if rows is None else ROWS, rows=rows)

# --- row-level security: reads that try to reach B's rows --------------------------------

_A_NAMES = [{"name": "Al"}, {"name": "Ann"}]
_READS: tuple[tuple[str, str, list[dict[str, Any]]], ...] = (
    ("where-user-b", "SELECT name FROM contacts WHERE user_id = '<B>'", []),
    ("or-true", "SELECT name FROM contacts WHERE true OR user_id = '<B>'", _A_NAMES),
    ("by-id", "SELECT name FROM contacts WHERE id = '<B_CONTACT>'", []),
    ("by-id-list", ("SELECT name FROM contacts WHERE id = ANY(ARRAY['<B_CONTACT>', "
                    "'<B_CONTACT_2>']::uuid[])"), []),
    ("like-marker", "SELECT name FROM contacts WHERE name LIKE 'bsecret%'", []),
    ("union", "SELECT name FROM contacts UNION SELECT subject FROM tickets",
     [{"name": "A ticket"}, {"name": "Al"}, {"name": "Ann"}]),
    ("union-all-addresses", ("SELECT city AS v FROM addresses UNION ALL "
                             "SELECT email FROM contacts WHERE email IS NOT NULL"),
     [{"v": "Aville"}, {"v": "ann@a.example"}]),
    ("count-subquery", ("SELECT (SELECT count(*) FROM contacts) AS n, "
                        "(SELECT count(*) FROM tickets) AS t"), [{"n": 2, "t": 1}]),
    ("exists-oracle", ("SELECT EXISTS (SELECT 1 FROM tickets WHERE subject LIKE 'bsecret%') "
                       "AS hit"), [{"hit": False}]),
    ("error-oracle", ("SELECT (SELECT max(length(name) / 0) FROM contacts "
                      "WHERE name LIKE 'bsecret%') AS x"), [{"x": None}]),
    ("leaky-division", ("SELECT name FROM contacts WHERE 1 / (CASE WHEN name LIKE 'bsecret%' "
                        "THEN 0 ELSE 1 END) = 1"), _A_NAMES),
    ("join-users", ("SELECT u.email, c.name FROM users u LEFT JOIN contacts c "
                    "ON c.user_id = u.id ORDER BY u.email, c.name"),
     [{"email": "a@hostile.example", "name": "Al"},
      {"email": "a@hostile.example", "name": "Ann"},
      {"email": "b@hostile.example", "name": None}]),
    ("join-tickets-contacts", ("SELECT t.subject, c.name FROM tickets t "
                               "JOIN contacts c ON c.id = t.contact_id"),
     [{"subject": "A ticket", "name": "Ann"}]),
    ("self-join", "SELECT a.name FROM contacts a JOIN contacts b ON a.id <> b.id", _A_NAMES),
    ("group-by-user", "SELECT user_id, count(*) AS n FROM contacts GROUP BY user_id",
     [{"user_id": "A", "n": 2}]),
    ("addresses-of-b-contact", "SELECT city FROM addresses WHERE contact_id = '<B_CONTACT>'",
     []),
    ("schema-qualified", "SELECT name FROM public.contacts", _A_NAMES),
    ("quoted", "SELECT name FROM \"contacts\"", _A_NAMES),
    ("only", "SELECT name FROM ONLY contacts", _A_NAMES),
    ("window", "SELECT name, count(*) OVER () AS n FROM contacts",
     [{"name": "Al", "n": 2}, {"name": "Ann", "n": 2}]),
    ("order-limit-offset", "SELECT name FROM contacts ORDER BY name LIMIT 10 OFFSET 1",
     [{"name": "Ann"}]),
    ("in-subquery-on-other-table", ("SELECT subject FROM tickets WHERE contact_id IN "
                                    "(SELECT id FROM contacts WHERE user_id = '<B>')"), []),
    ("not-in", "SELECT name FROM contacts WHERE id NOT IN ('<A_CONTACT>')", [{"name": "Al"}]),
)
for name, sql, rows in _READS:
    _entry(f"rls:{name}", sql, ROWS, rows=rows)
for name, sql in {
    "values-join": "SELECT c.name FROM (VALUES ('<B_CONTACT>'::uuid)) AS v(id) "
    "JOIN contacts c ON c.id = v.id",
    "lateral": "SELECT c.name, t.subject FROM contacts c, "
    "LATERAL (SELECT subject FROM tickets WHERE contact_id = c.id) t",
    "json-agg-rows": "SELECT json_agg(c) AS everything FROM contacts c",
    "row-to-json": "SELECT row_to_json(t) AS r FROM tickets t",
    "tablesample": "SELECT name FROM contacts TABLESAMPLE SYSTEM (100)",
    "for-update": "SELECT name FROM contacts FOR UPDATE",
    "for-share-skip-locked": "SELECT name FROM contacts FOR SHARE SKIP LOCKED",
    "recursive-walk": "WITH RECURSIVE r AS (SELECT id, name FROM contacts UNION "
    "SELECT c.id, c.name FROM contacts c JOIN r ON true) SELECT name FROM r",
    "xmlagg": "SELECT xmlagg(xmlelement(name n, name)) AS x FROM contacts",
    "current-user-functions": "SELECT current_user AS cu, session_user AS su, "
    "pg_backend_pid() > 0 AS p",
}.items():
    _entry(f"rls:{name}", sql, ROWS)
_entry("rls:leaky-cast", "SELECT name FROM contacts WHERE name::int > 0", ERROR,
       note="fails on A's own names; B's rows are filtered out before the cast is tried")

# --- writes for another user --------------------------------------------------------------

for name, sql, error in (
    ("insert-user-b", "INSERT INTO contacts (user_id, name) VALUES ('<B>', 'planted')",
     RowSecurityError),
    ("insert-user-b-returning",
     "INSERT INTO contacts (user_id, name) VALUES ('<B>', 'planted') RETURNING id",
     RowSecurityError),
    ("insert-two-rows", ("INSERT INTO contacts (user_id, name) VALUES ('<A>', 'mine'), "
                         "('<B>', 'planted')"), RowSecurityError),
    ("insert-select-as-b", ("INSERT INTO contacts (user_id, name) SELECT '<B>', name "
                            "FROM contacts"), RowSecurityError),
    ("update-set-user-b", "UPDATE contacts SET user_id = '<B>' WHERE id = '<A_CONTACT_2>'",
     RowSecurityError),
    ("update-set-user-b-all", "UPDATE tickets SET user_id = '<B>'", None),
    ("upsert-other", ("INSERT INTO contacts (id, name) VALUES ('<B_CONTACT>', 'mine') "
                      "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name"), RowSecurityError),
    ("upsert-other-where", ("INSERT INTO contacts (id, name) VALUES ('<B_CONTACT>', 'mine') "
                            "ON CONFLICT (id) DO UPDATE SET name = 'hijacked' "
                            "WHERE contacts.user_id = '<B>'"),
     RowSecurityError),
    ("upsert-take-over", ("INSERT INTO contacts (id, user_id, name) VALUES ('<B_CONTACT>', "
                          "'<B>', 'x') ON CONFLICT (id) DO UPDATE SET user_id = '<A>'"),
     RowSecurityError),
    ("data-modifying-cte", ("WITH x AS (INSERT INTO contacts (user_id, name) VALUES "
                            "('<B>', 'planted') RETURNING id) SELECT count(*) AS n FROM x"),
     RowSecurityError),
    ("address-user-b", ("INSERT INTO addresses (user_id, contact_id, city) VALUES "
                        "('<B>', '<B_CONTACT>', 'planted')"), RowSecurityError),
    ("address-for-b-contact", ("INSERT INTO addresses (contact_id, city) VALUES "
                               "('<B_CONTACT>', 'planted')"), IntegrityError),
    ("ticket-for-b-contact", ("INSERT INTO tickets (contact_id, subject) VALUES "
                              "('<B_CONTACT>', 'planted')"), IntegrityError),
    ("ticket-moved-to-b-contact", ("UPDATE tickets SET contact_id = '<B_CONTACT>' "
                                   "WHERE id = '<A_TICKET>'"), IntegrityError),
    ("contact-with-b-id", "INSERT INTO contacts (id, name) VALUES ('<B_CONTACT>', 'x')",
     IntegrityError),
    ("null-user", "INSERT INTO contacts (user_id, name) VALUES (NULL, 'x')", None),
    ("users-insert", "INSERT INTO users (email) VALUES ('planted@hostile.example')", None),
    ("users-update-b", "UPDATE users SET email = 'hijacked@hostile.example' WHERE id = '<B>'",
     None),
    ("users-delete-b", "DELETE FROM users WHERE id = '<B>'", None),
):
    _entry(f"write:{name}", sql, ERROR, error=error)
_entry("write:insert-user-b-param", "INSERT INTO contacts (user_id, name) VALUES (%s, %s)",
       ERROR, params=("<B>", "planted"), error=RowSecurityError)
_entry(
    "write:merge-other-row",
    "MERGE INTO contacts c USING (SELECT '<B_CONTACT>'::uuid AS id) v ON c.id = v.id "
    "WHEN MATCHED THEN UPDATE SET name = 'hijacked' "
    "WHEN NOT MATCHED THEN INSERT (id, name) VALUES (v.id, 'planted')",
    ERROR,
    note="B's row is not visible, so it is NOT MATCHED, and its id is taken",
)
_entry(
    "write:merge-insert-user-b",
    "MERGE INTO contacts c USING (SELECT 1 AS one) s ON false "
    "WHEN NOT MATCHED THEN INSERT (user_id, name) VALUES ('<B>', 'planted')",
    ERROR,
)
_entry(
    "write:merge-update-set-user-b",
    "MERGE INTO contacts c USING (SELECT id FROM contacts) s ON c.id = s.id "
    "WHEN MATCHED THEN UPDATE SET user_id = '<B>'",
    ERROR,
)
for name, sql, rows in (
    ("copy-other-rows", ("INSERT INTO contacts (name) SELECT name FROM contacts "
                         "WHERE user_id = '<B>' RETURNING name"), []),
    ("copy-every-row", ("INSERT INTO contacts (name, email) SELECT name, email FROM contacts "
                        "RETURNING name"), _A_NAMES),
    ("update-other-by-id", ("UPDATE contacts SET name = 'hijacked' WHERE id = '<B_CONTACT>' "
                            "RETURNING id"), []),
    ("update-other-subquery", ("UPDATE contacts SET name = 'hijacked' WHERE id IN "
                               "(SELECT id FROM contacts WHERE user_id = '<B>') RETURNING id"), []),
    ("update-every-row", "UPDATE contacts SET company = 'hijacked' RETURNING name", _A_NAMES),
    ("delete-other", "DELETE FROM tickets WHERE user_id = '<B>' RETURNING id", []),
    ("delete-other-by-id", "DELETE FROM addresses WHERE id = '<B_ADDRESS>' RETURNING id", []),
    ("delete-every-address", "DELETE FROM addresses RETURNING city", [{"city": "Aville"}]),
    ("upsert-other-do-nothing", ("INSERT INTO contacts (id, name) VALUES ('<B_CONTACT>', "
                                 "'mine') ON CONFLICT (id) DO NOTHING RETURNING id"), []),
    ("update-from-other", ("UPDATE contacts c SET name = t.subject FROM tickets t "
                           "WHERE t.id = '<B_TICKET>' RETURNING c.id"), []),
):
    _entry(f"write:{name}", sql, ROWS, rows=rows)
_entry("write:delete-using-other", "DELETE FROM contacts c USING tickets t WHERE "
       "t.contact_id = c.id AND t.user_id = '<B>' RETURNING c.id", ROWS, rows=[])

# --- injections: user input formatted into the SQL text of a domain function -------------

_BY_NAME = "SELECT name FROM contacts WHERE name = '{}'"
_BY_ID = "SELECT name FROM contacts WHERE id = '{}'"
_NEW_CONTACT = "INSERT INTO contacts (name, company) VALUES ('{}', 'acme') RETURNING name"
_RENAME = "UPDATE contacts SET company = '{}' WHERE id = '<A_CONTACT_2>' RETURNING name"
_ORDERED = "SELECT name FROM contacts ORDER BY {}"
for name, template, payload, expect, rows in (
    ("or-true", _BY_NAME, "' OR '1'='1", ROWS, _A_NAMES),
    ("or-user-b", _BY_NAME, "' OR user_id = '<B>", ROWS, []),
    ("or-user-b-comment", _BY_NAME, "' OR user_id = '<B>' --", ROWS, []),
    ("union-other", _BY_NAME, "' UNION SELECT name FROM contacts WHERE user_id = '<B>", ROWS,
     []),
    ("union-tickets", _BY_NAME, "' UNION ALL SELECT subject FROM tickets WHERE '1'='1", ROWS,
     [{"name": "A ticket"}]),
    ("union-users", _BY_NAME, "' UNION SELECT email FROM users --", ROWS,
     [{"name": "a@hostile.example"}, {"name": "b@hostile.example"}]),
    ("exists-oracle", _BY_NAME,
     "' OR EXISTS (SELECT 1 FROM tickets WHERE subject LIKE 'bsecret%') OR 'x' = 'y", ROWS,
     []),
    ("error-oracle", _BY_NAME,
     ("' OR (SELECT max(length(name) / 0) FROM contacts "
      "WHERE name LIKE 'bsecret%') = 1 OR 'x' = 'y"), ROWS, []),
    ("comment-out", _BY_NAME, "' --", ROWS, []),
    ("unicode-apostrophe", _BY_NAME, "\u02bc OR 1=1 --", ROWS, []),
    ("id-or-other", _BY_ID, "<B_CONTACT>' OR id = '<B_CONTACT_2>", ROWS, []),
    ("id-or-true", _BY_ID, "<A_CONTACT>' OR 'x' = 'x", ROWS, _A_NAMES),
    ("order-by-other-count", _ORDERED,
     "name, (SELECT count(*) FROM contacts WHERE user_id = '<B>')", ROWS,
     [{"name": "Al"}, {"name": "Ann"}]),
    ("insert-copies-other", _NEW_CONTACT,
     "x', (SELECT string_agg(name, ',') FROM contacts WHERE user_id = '<B>')) --", ROWS, []),
    ("update-where-widened", "UPDATE contacts SET company = 'x' WHERE id = '{}' RETURNING name",
     "<A_CONTACT>' OR user_id = '<B>", ROWS, [{"name": "Ann"}]),
    ("delete-where-widened", "DELETE FROM addresses WHERE id = '{}' RETURNING city",
     "<A_ADDRESS>' OR '1'='1", ROWS, [{"city": "Aville"}]),
    ("stacked-delete", _BY_NAME, "'; DELETE FROM contacts; --", REFUSED, None),
    ("stacked-set-user", _BY_NAME,
     "'; SELECT set_config('app.current_user_id', '<B>', false); --", REFUSED, None),
    ("inline-set-user", _BY_NAME,
     "' OR set_config('app.current_user_id', '<B>', true) IS NOT NULL OR 'x' = 'y", REFUSED,
     None),
    ("inline-session-lock", _BY_NAME,
     "' OR (4246::bigint).pg_try_advisory_lock OR 'x' = 'y", REFUSED, None),
    ("inline-query-to-xml", _BY_NAME,
     "' OR query_to_xml('SELECT 1', true, false, '') IS NOT NULL OR 'x' = 'y", REFUSED,
     None),
    ("stacked-commit-begin", _BY_NAME, "'; COMMIT; BEGIN; SELECT '", REFUSED, None),
    ("stacked-copy", _BY_NAME, "'; COPY contacts TO STDOUT; --", REFUSED, None),
    ("stacked-do", _BY_NAME,
     "'; DO $$BEGIN PERFORM set_config('app.current_user_id', '<B>', false); END$$; --",
     REFUSED, None),
    ("dollar-quote", _BY_NAME, "$$'; DROP TABLE contacts; $$", ERROR, None),
    ("backslash", _BY_NAME, "\\'; SELECT pg_sleep(10); --", REFUSED, None),
    ("order-by-set-user", _ORDERED, f"(SELECT {_SET_B})", REFUSED, None),
    ("insert-stacked-other", _NEW_CONTACT,
     "x', 'y'); INSERT INTO contacts (user_id, name) VALUES ('<B>', 'planted') --",
     REFUSED, None),
    ("insert-user-b", "INSERT INTO contacts (name, user_id) VALUES ('{}', DEFAULT)",
     "planted', '<B>') --", ERROR, None),
    ("update-set-user-b", _RENAME, "x', user_id = '<B>", ERROR, None),
    ("unterminated-comment", _BY_NAME, "'/*", ERROR, None),
    ("limit-union", "SELECT name FROM contacts LIMIT {}",
     "ALL UNION SELECT subject FROM tickets", ERROR, None),
):
    _entry(f"inject:{name}", template.replace("{}", payload), expect, rows=rows)
_entry(
    "inject:own-dollar-parameter",
    "SELECT name FROM contacts WHERE name = '' OR user_id = $1::uuid AND name <> %s",
    params=("x",),
    note="$n of its own would take values meant for the %s placeholders",
)
for name, sql, params in (
    ("param-quote-or", "SELECT name FROM contacts WHERE name = %s", ("' OR '1'='1",)),
    ("param-stacked", "SELECT name FROM contacts WHERE name = %s",
     ("x'; SELECT set_config('app.current_user_id', '<B>', false); --",)),
    ("param-b-ids", "SELECT name FROM contacts WHERE id = ANY(%s)",
     ([B_CONTACT, B_CONTACT_2],)),
    ("param-b-user", "SELECT name FROM contacts WHERE user_id = %s::uuid", ("<B>",)),
):
    # Values travel as protocol parameters: they can only ever be values.
    _entry(f"inject:{name}", sql, ROWS, params=params, rows=[])
_entry("inject:dollar-parameter-without-params",
       "SELECT name FROM contacts WHERE user_id = $1")
_entry("inject:percent-without-params", "SELECT name FROM contacts WHERE name = '%s'", ROWS,
       rows=[], note="without params the text is sent as written")
_entry("inject:nul-byte", "SELECT name FROM contacts WHERE name = 'x\x00' OR '1'='1'", ERROR,
       error=DatabaseInputError)


# --- helpers for the tests ---------------------------------------------------------------


def by_category() -> dict[str, int]:
    """Return how many entries each category has."""
    counts: dict[str, int] = {}
    for entry in CORPUS:
        counts[entry.category] = counts.get(entry.category, 0) + 1
    return counts


# Entries whose rows are SQL texts the session (or the login role) sent: the texts of A's own
# earlier entries, which name B's ids, are A's, not B's.
_SHOWS_SENT_TEXT = frozenset(
    {
        "catalog:prepared-statements-all",
        "catalog:stat-activity-same-role",
        "catalog:stat-activity-bystander",
        "catalog:cursors",
        "catalog:current-query",
        "catalog:stat-statements",
        "repro:catalog-prepared-statements",
        "repro:catalog-stat-activity",
    }
)


def b_secrets_hidden_from(entry: Hostile) -> list[str]:
    """Return B's values (those holding :data:`B_MARKER`) and B's row ids that ``entry``
    does not write itself, lowercase: A may never be shown them, nor find them in its own
    rows. (A text that guesses a value, ``LIKE 'bsecret%'``, is A's own, not B's.) For an
    entry that reads sent SQL texts, what any entry of the corpus writes is A's own."""
    entries = CORPUS if entry.id in _SHOWS_SENT_TEXT else [entry]
    text = " ".join(e.sql + " " + " ".join(map(str, e.params)) for e in entries).lower()
    values = [
        str(value).lower()
        for table in ("contacts", "addresses", "tickets")
        for row in SEED[table]
        if row["user_id"] == USER_B
        for key, value in row.items()
        if (isinstance(value, uuid.UUID) and key != "user_id") or B_MARKER in str(value)
    ]
    return sorted({v for v in values if v not in text})
