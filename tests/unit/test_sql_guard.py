"""What user-scoped SQL is, by PostgreSQL's own grammar (no server needed)."""

from __future__ import annotations

import threading

import pytest

from crm_infra._sql_guard import parameter_refusal, user_sql_verdict
from crm_infra._sql_params import split_placeholders, verbatim

MERGE_ONE = (
    "MERGE INTO contacts c USING (SELECT 1 AS x) s ON false "
    "WHEN NOT MATCHED THEN INSERT (name) VALUES ('a')"
)


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("SELECT name FROM contacts WHERE id = $1", "SELECT"),
        ("select 1", "SELECT"),
        ("VALUES (1), (2)", "SELECT"),
        ("TABLE contacts", "SELECT"),
        ("WITH c AS (SELECT 1 AS x) SELECT x FROM c", "SELECT"),
        ("WITH d AS (DELETE FROM contacts RETURNING id) SELECT count(*) FROM d", "SELECT"),
        ("INSERT INTO contacts (name) VALUES ($1) RETURNING id", "INSERT"),
        ("UPDATE contacts SET name = $1 WHERE id = $2", "UPDATE"),
        ("UPDATE accounts SET role = $1", "UPDATE"),  # a column named role
        ("DELETE FROM contacts WHERE id = ANY($1)", "DELETE"),
        (MERGE_ONE, "MERGE"),
        ("SELECT current_setting('app.current_user_id', true)", "SELECT"),
        ("SELECT pg_advisory_xact_lock(1)", "SELECT"),
        ("SELECT name FROM contacts FOR UPDATE SKIP LOCKED", "SELECT"),
        ("INSERT INTO contacts (name) VALUES ('set_config(x); SET ROLE x')", "INSERT"),
        ("SELECT 1 -- set_config(\n", "SELECT"),
        ("SELECT $q$DO $$ BEGIN END $$$q$", "SELECT"),
        ('SELECT 1 AS "reset role"', "SELECT"),
        ("SELECT ts_rewrite('a'::tsquery, 'a'::tsquery, 'b'::tsquery)", "SELECT"),
    ],
)
def test_one_data_statement_is_accepted(query: str, kind: str) -> None:
    verdict = user_sql_verdict(query)
    assert verdict.refusal is None
    assert verdict.syntax_error is None
    assert verdict.kind == kind


@pytest.mark.parametrize(
    ("query", "named"),
    [
        # The user setting, in every spelling the grammar accepts, wherever it sits.
        ("SELECT set_config('app.current_user_id', $1, false)", "set_config"),
        ("SELECT SET_CONFIG('app.current_user_id', $1, true)", "SET_CONFIG"),
        ('SELECT "set_config"(\'a\', $1, true)', '"set_config"'),
        ('SELECT U&"\\0073et_config"(\'a\', $1, true)', 'U&"\\0073et_config"'),
        ("SELECT pg_catalog . set_config('a', $1, true)", "pg_catalog . set_config"),
        ("SELECT (SELECT 1 FROM ROWS FROM (set_config('a', 'b', true)))", "set_config"),
        ("WITH x AS (SELECT set_config('a', 'b', true)) SELECT 1", "set_config"),
        ("EXPLAIN ANALYZE SELECT set_config('a', 'b', true)", "set_config"),
        ("SET app.current_user_id = 'x'", "SET app.current_user_id"),
        ('SET LOCAL U&"app.current_user_id" TO \'x\'', 'SET LOCAL U&"app.current_user_id"'),
        ("set session role crm_admin", "set session role"),
        ("RESET ROLE", "RESET ROLE"),
        ("SET SESSION AUTHORIZATION postgres", "SET SESSION AUTHORIZATION"),
        # Session state, transaction control, other sessions, SQL run as text.
        ("DO $$ BEGIN DEALLOCATE _crm_set_user; END $$", "DO"),
        ("PREPARE p AS SELECT 1", "PREPARE"),
        ("EXECUTE _crm_set_user('x')", "EXECUTE"),
        ("DEALLOCATE ALL", "DEALLOCATE"),
        ("COMMIT", "COMMIT"),
        ("begin", "begin"),
        ("PREPARE TRANSACTION 'x'", "PREPARE TRANSACTION"),
        ("LISTEN crm_events", "LISTEN"),
        ("SELECT pg_advisory_lock(42)", "pg_advisory_lock"),
        ("SELECT pg_notify('c', 'x')", "pg_notify"),
        ("SELECT pg_terminate_backend(1)", "pg_terminate_backend"),
        ("CREATE TEMP TABLE t (a int)", "CREATE TEMP"),
        ("SELECT name INTO TEMP stash FROM contacts", "SELECT ... INTO"),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "DECLARE"),
        ("COPY contacts TO STDOUT", "COPY"),
        ("DISCARD ALL", "DISCARD"),
        ("LOAD 'plugin'", "LOAD"),
        ("SET statement_timeout = 0", "SET statement_timeout"),
        ("SET LOCAL statement_timeout = 0", "SET LOCAL statement_timeout"),
        ("UPDATE pg_settings SET setting = '0' WHERE name = 'x'", "UPDATE pg_settings"),
        ("WITH u AS (UPDATE pg_catalog.pg_settings SET setting = '0') SELECT 1", "pg_settings"),
        ("SELECT query_to_xml('SELECT 1', true, true, '')", "query_to_xml"),
        ("SELECT * FROM ts_stat('SELECT 1')", "ts_stat"),
        ("SELECT ts_rewrite('a'::tsquery, 'SELECT 1')", "ts_rewrite"),
        ("SELECT lo_create(0)", "lo_create"),
        # A one-argument function written as a field is a call of it.
        ("SELECT (4242::bigint).pg_advisory_lock", "(...).pg_advisory_lock"),
        ("SELECT t.pg_advisory_lock FROM (SELECT 1::bigint AS t) s", "t.pg_advisory_lock"),
        ("SELECT s.t.PG_Cancel_Backend FROM (SELECT 1 AS t) s", "s.t.PG_Cancel_Backend"),
        ('SELECT (x).a."pg_terminate_backend" FROM y', '(...)."pg_terminate_backend"'),
        ("SELECT ('SELECT 1'::text).ts_stat", "(...).ts_stat"),
        ("SELECT (0::oid).lo_unlink", "(...).lo_unlink"),
        ("SELECT setseed(0.5)", "setseed"),
        ("SELECT (0.5::float8).setseed", "(...).setseed"),
        ("SELECT lastval()", "lastval"),
        ("CALL p()", "CALL"),
        ("ALTER ROLE CURRENT_USER PASSWORD 'x'", "ALTER ROLE"),
        ("CREATE TABLE t (a int)", "CREATE TABLE"),
        ("EXPLAIN SELECT 1", "EXPLAIN"),
        ("SELECT 1; SELECT 2", "2 statements"),
        ("SELECT 'a'; DELETE FROM contacts", "2 statements"),
        ("", "an empty statement"),
        ("-- nothing", "an empty statement"),
    ],
)
def test_anything_else_is_refused_naming_what_was_written(query: str, named: str) -> None:
    refusal = user_sql_verdict(query).refusal
    assert refusal is not None
    assert named in refusal.message()


@pytest.mark.parametrize(
    "query",
    ["SELEC 1", "SELECT 'unclosed", "SELECT /* unclosed", "SELECT $a$ unclosed", 'SELECT "x'],
)
def test_text_the_grammar_rejects_is_a_syntax_error(query: str) -> None:
    verdict = user_sql_verdict(query)
    assert verdict.syntax_error is not None
    assert verdict.refusal is None


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1 " + "UNION SELECT 1 " * 20000,  # pglast's own node build would crash on it
        "SELECT " + "1 + " * 20000 + "1",
        "SELECT " + "(" * 50000 + "1" + ")" * 50000,
        "/* " * 20000,
    ],
)
def test_hostile_depth_is_refused_without_crashing(query: str) -> None:
    verdict = user_sql_verdict(query)
    assert verdict.kind == ""
    assert verdict.refusal is not None or verdict.syntax_error is not None


def test_a_deep_but_reasonable_statement_is_read_on_any_thread() -> None:
    query = "SELECT 2 " + "UNION SELECT 1 " * 300
    kinds: list[str] = []
    worker = threading.Thread(target=lambda: kinds.append(user_sql_verdict(query).kind))
    worker.start()
    worker.join()
    assert kinds == ["SELECT"]


def test_identifiers_hold_names_but_not_literals() -> None:
    verdict = user_sql_verdict(
        "WITH _t_x AS (SELECT 1) SELECT c.name AS n FROM public.contacts c "
        "WHERE c.name = '_t_secret' AND EXISTS (SELECT 1 FROM _t_x)"
    )
    assert {"_t_x", "c", "name", "n", "public", "contacts"} <= verdict.identifiers
    assert "_t_secret" not in verdict.identifiers


@pytest.mark.parametrize(
    ("query", "with_params", "named"),
    [
        ("SELECT $1 AS x", False, "$n placeholders of its own"),
        ("SELECT %s::int AS a, $2 AS b", True, "$n placeholders of its own"),
        ("SELECT $1, %s", True, "$n placeholders of its own"),
        ("SELECT name FROM contacts WHERE name LIKE '%s' AND id = %s", True, "quoted string"),
    ],
)
def test_parameters_the_placeholders_did_not_make_are_refused(
    query: str, with_params: bool, named: str
) -> None:
    split = split_placeholders(query) if with_params else verbatim(query)
    refusal = parameter_refusal(split)
    assert refusal is not None
    assert named in refusal.message()


def test_the_placeholders_own_parameters_are_fine() -> None:
    assert parameter_refusal(split_placeholders("SELECT %(a)s, %(a)s, '$x$'")) is None
    assert parameter_refusal(verbatim("SELECT '$1' AS literal")) is None
