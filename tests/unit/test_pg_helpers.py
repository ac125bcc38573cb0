"""The PostgreSQL adapter's pure helpers: placeholders, password scrubbing (no server needed)."""

from __future__ import annotations

from uuid import uuid4

import pytest

from crm_infra.adapters._pg_errors import password_of, scrub
from crm_infra.adapters._pg_sql_checks import changes_user_identity, leaves_session_state
from crm_infra.adapters._pg_statements import _has_statement_break, to_dollar_placeholders


def test_positional_placeholders_become_dollar_numbers() -> None:
    a, b = uuid4(), "x"
    assert to_dollar_placeholders("SELECT %s, %s", (a, b)) == ("SELECT $1, $2", [a, b])


def test_named_placeholders_reuse_their_number() -> None:
    converted = to_dollar_placeholders("SELECT %(a)s, %(b)s, %(a)s", {"b": 2, "a": 1, "unused": 3})
    assert converted == ("SELECT $1, $2, $1", [1, 2])


def test_double_percent_is_a_literal_percent() -> None:
    assert to_dollar_placeholders("SELECT 'a%%' LIKE %s", ("a",)) == (
        "SELECT 'a%' LIKE $1",
        ["a"],
    )


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("SELECT %s, %s", (1,)),  # too few values
        ("SELECT %s", (1, 2)),  # too many values
        ("SELECT %(a)s", (1,)),  # named placeholder, positional values
        ("SELECT %s", {"a": 1}),  # positional placeholder, named values
        ("SELECT %(a)s", {"b": 1}),  # missing name
        ("SELECT 5 % 2, %s", (1,)),  # a lone percent: psycopg's own error should show
    ],
)
def test_mismatches_are_left_for_psycopg_to_report(query: str, params: object) -> None:
    assert to_dollar_placeholders(query, params) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("conninfo", "password"),
    [
        ("postgresql://app:s3cr%40t@db:5432/crm", "s3cr@t"),
        ("postgresql://app@db/crm", None),
        ("host=db password=hunter2 user=app", "hunter2"),
        ("host=db password='two words' user=app", "two words"),
        ("postgresql://app:p@[::1/crm", "p"),
    ],
)
def test_password_of_finds_the_password(conninfo: str, password: str | None) -> None:
    assert password_of(conninfo) == password


def test_scrub_removes_known_and_password_shaped_secrets() -> None:
    text = 'bad URI "postgresql://app:hunter2@db/crm", also password=other and known-secret here'
    cleaned = scrub(text, ["known-secret", None])
    for secret in ("hunter2", "other", "known-secret"):
        assert secret not in cleaned
    assert "postgresql://app:***@db/crm" in cleaned


@pytest.mark.parametrize(
    ("query", "several"),
    [
        ("SELECT 1", False),
        ("SELECT ';'", False),
        ("SELECT 'it''s; fine'", False),
        ('SELECT 1 AS "a;b"', False),
        ("SELECT $$;$$, $x$ ; $x$", False),
        ("SELECT 1 -- trailing; comment", False),
        ("SELECT /* ; */ 1", False),
        (r"SELECT E'\'; still a string'", False),
        ("SELECT 1; SELECT 2", True),
        ("SELECT 'a'; DELETE FROM contacts", True),
    ],
)
def test_statement_breaks_are_found_outside_literals(query: str, several: bool) -> None:
    assert _has_statement_break(query) is several


@pytest.mark.parametrize(
    "query",
    [
        "SET app.current_user_id = 1",
        "set session role other",
        "RESET ROLE",
        "SELECT 1; SET ROLE other",
        "/* why */ SET SESSION AUTHORIZATION other",
        'SET "app".current_user_id = 1',
        'SELECT "set_config"(\'app.current_user_id\', %s, true)',
        "SELECT pg_catalog.set_config('app.current_user_id', %s, true)",
        "DO $$BEGIN PERFORM set_config('app.current_user_id', 'x', true); END$$",
        "DO $f$BEGIN IF true THEN SET ROLE other; END IF; END$f$",
        "DO $$BEGIN IF a THEN NULL; ELSIF b THEN SET ROLE other; END IF; END$$",
        "CREATE FUNCTION pg_temp.f() RETURNS text LANGUAGE sql SET ROLE other AS 'SELECT 1'",
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql SET role = other AS 'SELECT 1'",
        "ALTER ROLE CURRENT_USER SET ROLE other",
        "ALTER FUNCTION f() SET app.current_user_id TO 'x'",
        "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql SET role = other",
    ],
)
def test_sql_that_changes_the_user_or_role_is_found(query: str) -> None:
    assert changes_user_identity(query)


@pytest.mark.parametrize(
    "query",
    [
        "UPDATE accounts SET role = %s WHERE id = %s",  # a column named role
        'UPDATE accounts SET "role" = %s',
        "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET role = 2",
        'SELECT 1 AS "reset role"',
        "INSERT INTO contacts (name) VALUES ('set_config(x)')",
        "SELECT E'it\\'s time to reset role'",
        "VALUES ($$please set role now$$)",
        "CREATE TEMP TABLE staged AS SELECT 1 AS id; UPDATE members SET role = %s",
        "SELECT current_setting('app.current_user_id', true)",
        "SELECT 1 -- set_config(",
    ],
)
def test_ordinary_sql_is_not_taken_for_an_identity_change(query: str) -> None:
    assert not changes_user_identity(query)


@pytest.mark.parametrize(
    "text", ["/* " * 20000, "'" + "a" * 50000, "$a$ " * 20001, '"' * 30001, "E'" + "\\'" * 20000]
)
def test_unclosed_quotes_and_comments_run_to_the_end_of_the_text(text: str) -> None:
    # Read as the server reads them: nothing after an unclosed opener is a statement break.
    assert not _has_statement_break("SELECT " + text + "; SELECT 2")
    # For the identity check a dollar-quoted body is code (a DO block); the rest is not.
    assert changes_user_identity(text + " SET ROLE other") == text.startswith("$")


def test_deeply_nested_dollar_quotes_are_read_without_running_out_of_stack() -> None:
    tags = [f"$t{i}$" for i in range(600)]
    query = "DO " + " ".join(tags) + " SET ROLE other; " + " ".join(reversed(tags))
    assert changes_user_identity(query)


def test_a_dollar_sign_inside_a_name_opens_no_quote() -> None:
    assert _has_statement_break("SELECT 1 AS cost$usd$; SELECT 2 AS two")
    assert not _has_statement_break("SELECT $q$a;b$q$ AS text")


@pytest.mark.parametrize(
    ("query", "leaves"),
    [
        ("SELECT name INTO TEMP stash FROM contacts", True),
        ("SELECT a INTO pg_temp.x FROM t", True),
        ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", True),
        ('DECLARE "h;x" CURSOR WITH HOLD FOR SELECT 1', True),
        ("UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'", True),
        ("ALTER ROLE CURRENT_USER SET search_path = pg_catalog", True),
        ("SELECT pg_advisory_lock(1)", True),
        ("LISTEN events", True),
        ("INSERT INTO temp (a) VALUES (1)", False),
        ("MERGE INTO temp t USING s ON true WHEN MATCHED THEN DELETE", False),
        ("SELECT pg_advisory_xact_lock(1)", False),
        ("SELECT temp_password, is_temporary FROM accounts", False),
        ("SET LOCAL statement_timeout = 0", False),
    ],
)
def test_what_would_stay_on_the_pooled_connection_is_found(query: str, leaves: bool) -> None:
    assert leaves_session_state(query) is leaves
