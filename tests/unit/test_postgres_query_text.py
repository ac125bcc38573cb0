"""``db.query.text`` of the PostgreSQL spans: the caller's SQL with every literal replaced by a
``$n`` placeholder and every comment dropped (PostgreSQL's own lexer and grammar decide),
never the raw text of a statement that does not parse; computed once per distinct text."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from pglast import parser

from crm_infra.adapters.postgres import telemetry as pg
from crm_infra.adapters.postgres.telemetry import (
    EXECUTE,
    EXECUTE_ADMIN,
    QUERY_TEXT_LIMIT,
    TRANSACTION_EXECUTE,
    UNPARSED,
    query_text,
)

SECRET = "s3cret-Literal"


class _Owner:
    """What a Statement reads of a client: its two conninfos."""

    def __init__(self) -> None:
        self._app_conninfo = "host=127.0.0.1 port=5432 dbname=crm"
        self._admin_conninfo = "host=127.0.0.1 port=5432 dbname=crm"


def _unique(sql: str) -> str:
    """``sql`` with a comment no other test uses: a text not yet in any cache."""
    return f"{sql} /* {uuid4().hex} */"


# --- literals, in every spelling PostgreSQL's lexer reads as a constant ----------------------


@pytest.mark.parametrize(
    ("sql", "shown"),
    [
        (f"SELECT id FROM contacts WHERE name = '{SECRET}'",
         "SELECT id FROM contacts WHERE name = $1"),
        (f"SELECT 'it''s {SECRET}'", "SELECT $1"),
        (f"SELECT E'\\'{SECRET}\\n'", "SELECT $1"),
        (f"SELECT e'{SECRET}'", "SELECT $1"),
        (f"SELECT U&'{SECRET}\\0061'", "SELECT $1"),
        (f"SELECT $${SECRET}$$", "SELECT $1"),
        (f"SELECT $tag${SECRET} $$ still {SECRET}$tag$", "SELECT $1"),
        (f"SELECT '{SECRET}'\n'{SECRET} continued'", "SELECT $1"),
        ("SELECT B'10110', X'DEADBEEF'", "SELECT $1, $2"),
        ("SELECT 4111111111111111, 3.14159, 1e10, .5, -42", "SELECT $1, $2, $3, $4, -$5"),
        (f"SELECT * FROM t WHERE a = '{SECRET}' AND b IN (1, 2) LIMIT 10 OFFSET 5",
         "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3) LIMIT $4 OFFSET $5"),
        (f"SELECT interval '{SECRET}', date '2020-01-01', '{SECRET}'::text",
         "SELECT interval $1, date $2, $3::text"),
        (f"INSERT INTO t (a, b) VALUES ('{SECRET}', 7) ON CONFLICT DO NOTHING",
         "INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT DO NOTHING"),
    ],
)
def test_every_literal_becomes_a_placeholder(sql: str, shown: str) -> None:
    assert query_text(sql) == shown


@pytest.mark.parametrize(
    ("sql", "shown"),
    [
        (f"CREATE ROLE app LOGIN PASSWORD '{SECRET}' VALID UNTIL 'infinity'",
         "CREATE ROLE app LOGIN PASSWORD $1 VALID UNTIL $2"),
        (f"ALTER ROLE app WITH PASSWORD '{SECRET}'", "ALTER ROLE app WITH PASSWORD $1"),
        (f"ALTER USER app ENCRYPTED PASSWORD E'{SECRET}'", "ALTER USER app ENCRYPTED PASSWORD $1"),
        (f"CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'app', password '{SECRET}')",
         "CREATE USER MAPPING FOR app SERVER s OPTIONS (user $1, password $2)"),
        (f"CREATE SERVER s FOREIGN DATA WRAPPER w OPTIONS (password '{SECRET}')",
         "CREATE SERVER s FOREIGN DATA WRAPPER w OPTIONS (password $1)"),
        (f"CREATE SUBSCRIPTION s CONNECTION 'host=h password={SECRET}' PUBLICATION p",
         "CREATE SUBSCRIPTION s CONNECTION $1 PUBLICATION p"),
        (f"COMMENT ON TABLE contacts IS '{SECRET}'", "COMMENT ON TABLE contacts IS $1"),
        (f"CREATE VIEW v AS SELECT * FROM t WHERE a = '{SECRET}'",
         "CREATE VIEW v AS SELECT * FROM t WHERE a = $1"),
        (f"CREATE POLICY p ON t USING (a <> '{SECRET}')", "CREATE POLICY p ON t USING (a <> $1)"),
        (f"ALTER TABLE t ALTER COLUMN a SET DEFAULT '{SECRET}'",
         "ALTER TABLE t ALTER COLUMN a SET DEFAULT $1"),
        (f"ALTER SYSTEM SET my.setting = '{SECRET}'", "ALTER SYSTEM SET my.setting = $1"),
        (f"CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $body$SELECT '{SECRET}'$body$",
         "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $1"),
        (f"DO $$BEGIN RAISE NOTICE '{SECRET}'; END$$", "DO $1"),
        (f"PREPARE p AS SELECT '{SECRET}'", "PREPARE p AS SELECT $1"),
        (f"EXECUTE p('{SECRET}')", "EXECUTE p($1)"),
        (f"COPY t TO '/tmp/{SECRET}'", "COPY t TO $1"),
        (f"SET app.note = '{SECRET}'", "SET app.note = $1"),
    ],
)
def test_literals_in_ddl_and_utility_statements_become_placeholders(sql: str, shown: str) -> None:
    """libpg_query's normalize would leave most of these in place (COMMENT ON, CREATE VIEW,
    CREATE SERVER ... OPTIONS (password ...), COPY...): the lexer sees them all."""
    assert query_text(sql) == shown


def test_several_statements_are_numbered_on() -> None:
    sql = f"CREATE ROLE a PASSWORD '{SECRET}'; ALTER ROLE b PASSWORD '{SECRET}x';\n"
    assert query_text(sql) == "CREATE ROLE a PASSWORD $1; ALTER ROLE b PASSWORD $2;\n"


# --- comments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "shown"),
    [
        (f"SELECT /* {SECRET} */ id FROM t", "SELECT id FROM t"),
        (f"SELECT id FROM t -- {SECRET}", "SELECT id FROM t"),
        (f"SELECT id FROM t -- {SECRET}\n", "SELECT id FROM t"),
        (f"/* {SECRET} */ SELECT 1", "SELECT $1"),
        (f"-- {SECRET}\nSELECT 1", "SELECT $1"),
        (f"SELECT/*{SECRET}*/1", "SELECT $1"),
        (f"SELECT /* outer /* {SECRET} */ still {SECRET} */ 1", "SELECT $1"),
        (f"SELECT a\n  FROM t -- {SECRET}\n  WHERE b = %s", "SELECT a\n  FROM t\n  WHERE b = %s"),
        (f"SELECT a /* {SECRET}\n{SECRET} */ FROM t", "SELECT a\nFROM t"),
        (f"SELECT '/* {SECRET} */' -- '{SECRET}'", "SELECT $1"),
    ],
)
def test_comments_are_dropped(sql: str, shown: str) -> None:
    assert query_text(sql) == shown


# --- what is not a literal stays as written -------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO contacts (name) VALUES (%s) RETURNING id",
        "SELECT id, name FROM contacts WHERE name = %s AND owner = ANY(%s)",
        "UPDATE contacts SET name = %(name)s WHERE id = %(id)s",
        'SELECT "Quoted Name", t.a FROM "Schema"."table" t WHERE t.b IS NULL AND t.c = TRUE',
        "SELECT id FROM contacts WHERE id = $1",
        "  SELECT count(*)\n    FROM contacts\n   WHERE owner = %s\n",
        "WITH x AS (SELECT a FROM t WHERE b = %s) SELECT * FROM x",
    ],
)
def test_parameterised_sql_is_shown_exactly_as_written(sql: str) -> None:
    assert query_text(sql) == sql


def test_literal_numbers_start_above_every_parameter_of_the_statement() -> None:
    # %s placeholders: psycopg sends them as $1..$k, so the literals start at $k+1.
    assert query_text("SELECT * FROM t WHERE a = %s AND b = %s AND c = 'x'") == (
        "SELECT * FROM t WHERE a = %s AND b = %s AND c = $3"
    )
    # A name used twice is one parameter, as psycopg sends it.
    assert query_text("SELECT %(a)s, %(b)s, %(a)s, 'x'") == "SELECT %(a)s, %(b)s, %(a)s, $3"
    # The caller's own $n stay, and the literals start above the highest.
    assert query_text("SELECT $3, 'x', $1") == "SELECT $3, $4, $1"
    assert query_text(
        "CREATE FUNCTION inc(int) RETURNS int LANGUAGE sql RETURN $1 + 1"
    ) == "CREATE FUNCTION inc(int) RETURNS int LANGUAGE sql RETURN $1 + $2"
    # A text without psycopg placeholders as psycopg reads them (a bare %) counts none.
    assert query_text("SELECT 7 % 2") == "SELECT $1 % $2"
    assert query_text("SELECT 7 %% 2, %s") == "SELECT $2 %% $3, %s"


# --- a text that does not parse shows as UNPARSED, never as written ----------------------------


@pytest.mark.parametrize(
    "sql",
    [
        f"SELEC name FROM contacts WHERE name = '{SECRET}'",
        f"SELECT '{SECRET}",  # unterminated literal
        f"SELECT $${SECRET}",  # unterminated dollar quote
        f"SELECT 1 /* {SECRET}",  # unterminated comment
        f"SELECT 1; SELEC '{SECRET}'",  # the second statement
        f"SELECT 1\x00 '{SECRET}'",  # a NUL, where libpq and the lexer would end the text
        f"SELECT '{SECRET}\ud800'",  # a lone surrogate: no UTF-8 form
        f"{SECRET}",
        f"SELECT %d, '{SECRET}'",  # not a psycopg placeholder, nor SQL
        "SELECT " + "(" * 100_000 + f"'{SECRET}'" + ")" * 100_000,  # deeper than it parses
    ],
)
def test_a_text_that_does_not_parse_is_never_shown(sql: str) -> None:
    assert query_text(sql) == UNPARSED


def test_the_span_of_an_unparsed_text_is_named_by_a_keyword_only() -> None:
    owner = _Owner()
    bad = EXECUTE.describe(owner, (f"SELECT '{SECRET}",), {})
    assert (bad.name, bad.attributes["db.operation.name"]) == ("SELECT", "SELECT")
    assert bad.attributes["db.query.text"] == UNPARSED
    for word in (SECRET, "hunter", "SELEC"):
        garbage = EXECUTE.describe(owner, (f"{word} '{SECRET}'",), {})
        assert garbage.name == "execute"  # the operation: the first word is no keyword
        assert "db.operation.name" not in garbage.attributes
        assert garbage.attributes["db.query.text"] == UNPARSED


# --- on the spans, once per text -------------------------------------------------------------


@pytest.mark.parametrize("spec", [EXECUTE, EXECUTE_ADMIN])
def test_the_span_attributes_hold_the_sanitised_text(spec: pg.Statement) -> None:
    call = spec.describe(_Owner(), (f"SELECT count(*) FROM t WHERE name = '{SECRET}'",), {})
    assert call.attributes["db.query.text"] == "SELECT count(*) FROM t WHERE name = $1"
    assert call.attributes["db.operation.name"] == "SELECT"
    assert call.name == "SELECT"
    assert not any(SECRET in str(v) for v in call.attributes.values())


def test_a_transaction_handles_statement_and_a_keyword_query_are_sanitised() -> None:
    call = TRANSACTION_EXECUTE.describe(
        _Owner(), (object(),), {"query": f"DELETE FROM t WHERE a = '{SECRET}'"}
    )
    assert call.attributes["db.query.text"] == "DELETE FROM t WHERE a = $1"


def test_the_cut_comes_after_the_literals_are_replaced() -> None:
    head = "SELECT " + ", ".join(f"c{i}" for i in range(QUERY_TEXT_LIMIT // 5))
    assert len(head) > QUERY_TEXT_LIMIT
    sql = f"SELECT '{SECRET * 50}', {head.removeprefix('SELECT ')} FROM t"
    shown = query_text(sql)
    assert len(shown) == QUERY_TEXT_LIMIT
    assert shown.startswith("SELECT $1, c0, c1")
    assert SECRET[:4] not in shown
    long_literal = f"SELECT '{'x' * (QUERY_TEXT_LIMIT * 2)}{SECRET}'"
    assert query_text(long_literal) == "SELECT $1"


@pytest.fixture
def counted_scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    scanned: list[str] = []
    real = parser.scan

    def scan(query: str) -> Any:
        scanned.append(query)
        return real(query)

    monkeypatch.setattr(pg, "scan", scan)
    return scanned


def test_the_text_is_sanitised_once_per_distinct_text(counted_scans: list[str]) -> None:
    sql = _unique(f"SELECT * FROM contacts WHERE name = '{SECRET}'")
    other = _unique("SELECT 1")
    first, second = _Owner(), _Owner()
    calls = [
        spec.describe(owner, (sql,), {})
        for owner in (first, second)
        for spec in (EXECUTE, EXECUTE_ADMIN)
        for _ in range(50)
    ]
    assert counted_scans == [sql]  # two clients, two operations, 200 calls: one scan
    assert len({id(c) for c in calls}) == 4  # one Call per client and operation, as before
    EXECUTE.describe(first, (other,), {})
    EXECUTE.describe(first, (other,), {})
    assert counted_scans == [sql, other]


def test_the_cache_of_sanitised_texts_forgets_the_oldest(counted_scans: list[str]) -> None:
    first = _unique("SELECT 1")
    query_text(first)
    for _ in range(pg._TEXTS_KEPT):
        query_text(_unique("SELECT 2"))
    query_text(first)  # pushed out by as many other texts as the cache keeps: scanned again
    assert counted_scans.count(first) == 2
    assert len(counted_scans) == pg._TEXTS_KEPT + 2


# --- what the lexer alone would get wrong ------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT %(a')s::text || ', s3cret-Literal, ' || %(b')s::text",
        "SELECT %(x\")s, 's3cret-Literal', %(y\")s",
        "SELECT %(a--)s, 's3cret-Literal'",
        "SELECT %(név)s, 's3cret-Literal'",
    ],
)
def test_a_placeholder_name_that_is_not_a_plain_identifier_shows_nothing(sql: str) -> None:
    # The server gets $n for each name, but a quote in the name would open a string in the
    # caller's text that the server never sees, and hide its literals from the scan.
    assert query_text(_unique(sql)) == UNPARSED


def test_plain_placeholder_names_stay_as_written() -> None:
    sql = "SELECT * FROM contacts WHERE name = %(name)s AND city = 'Oslo' AND id = %(id_2)s"
    assert query_text(sql) == (
        "SELECT * FROM contacts WHERE name = %(name)s AND city = $3 AND id = %(id_2)s"
    )


@pytest.mark.parametrize(
    ("sql", "shown"),
    [
        ("SET app.api_key = sk_live_51Habc", "SET app.api_key = $1"),
        ("SET LOCAL app.current_user_id = u_3f2a9c", "SET LOCAL app.current_user_id = $1"),
        ("ALTER ROLE app SET app.secret TO topsecret", "ALTER ROLE app SET app.secret TO $1"),
        ("ALTER SYSTEM SET app.key = \"Quoted\"", "ALTER SYSTEM SET app.key = $1"),
        ("SET search_path = crm, public", "SET search_path = $1, $2"),
        (
            "ALTER DATABASE crm SET app.k TO v1; SET x = 'y'",
            "ALTER DATABASE crm SET app.k TO $1; SET x = $2",
        ),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = hidden AS 'SELECT 1'",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = $1 AS $2",
        ),
    ],
)
def test_a_bare_word_set_as_a_value_is_a_value(sql: str, shown: str) -> None:
    assert query_text(sql) == shown


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE contacts SET phone = mobile WHERE name = %s",
        (
            "INSERT INTO contacts (name) VALUES (%s)"
            " ON CONFLICT (name) DO UPDATE SET name = excluded.name"
        ),
        "WITH c AS (SELECT id FROM contacts) UPDATE contacts SET phone = mobile",
        "ALTER TABLE contacts OWNER TO crm_owner",
        "ALTER TABLE contacts ALTER COLUMN phone SET DEFAULT NULL",
    ],
)
def test_names_in_data_statements_and_other_clauses_stay(sql: str) -> None:
    assert query_text(sql) == sql


def test_a_text_too_long_to_sanitise_is_not_shown() -> None:
    values = ", ".join(f"('{SECRET}-{n}')" for n in range(pg.SANITISED_MAX // 20))
    sql = f"INSERT INTO contacts (name) VALUES {values}"
    assert len(sql) > pg.SANITISED_MAX
    assert query_text(sql) == UNPARSED
