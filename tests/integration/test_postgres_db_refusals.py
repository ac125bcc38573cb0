"""What the database itself refuses the application role, after bootstrap and migrations.

A check of the SQL text cannot see dynamic SQL, so ``sql/bootstrap/roles.sql`` takes away from
PUBLIC what would run it or leave state behind (docs/database.md, "What the database itself
refuses"). These tests talk to the server directly as the application's login role, past the
client and its own checks, so each refusal proven here is the database's. They only read the
shared session database; nothing here changes a privilege in it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from crm_infra.adapters import PostgresClient
from crm_infra.adapters.postgres.roles import (
    LARGE_OBJECT_WRITERS,
    REVOKED_FUNCTIONS,
    SERVER_FILE_FUNCTIONS,
    SQL_TEXT_FUNCTIONS,
)
from crm_infra.bootstrap import BootstrappedDatabase, drop_database
from crm_infra.migrations import apply_migrations
from crm_infra.schema_files import bootstrap_roles_file

# A call of each revoked function with arguments it accepts; the privilege check comes first.
CALLS = {
    "pg_catalog.query_to_xml(text, boolean, boolean, text)": (
        "query_to_xml('SELECT 1', true, false, '')"
    ),
    "pg_catalog.query_to_xmlschema(text, boolean, boolean, text)": (
        "query_to_xmlschema('SELECT 1', true, false, '')"
    ),
    "pg_catalog.query_to_xml_and_xmlschema(text, boolean, boolean, text)": (
        "query_to_xml_and_xmlschema('SELECT 1', true, false, '')"
    ),
    "pg_catalog.cursor_to_xml(refcursor, integer, boolean, boolean, text)": (
        "cursor_to_xml('c', 1, true, false, '')"
    ),
    "pg_catalog.cursor_to_xmlschema(refcursor, boolean, boolean, text)": (
        "cursor_to_xmlschema('c', true, false, '')"
    ),
    "pg_catalog.ts_stat(text)": "ts_stat('SELECT to_tsvector(''a b'')')",
    "pg_catalog.ts_stat(text, text)": "ts_stat('SELECT to_tsvector(''a b'')', 'ab')",
    "pg_catalog.ts_rewrite(tsquery, text)": (
        "ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery')"
    ),
    "pg_catalog.lo_creat(integer)": "lo_creat(-1)",
    "pg_catalog.lo_create(oid)": "lo_create(0)",
    "pg_catalog.lo_from_bytea(oid, bytea)": "lo_from_bytea(0, '\\x00'::bytea)",
    "pg_catalog.lo_put(oid, bigint, bytea)": "lo_put(1, 0, '\\x00'::bytea)",
    "pg_catalog.lowrite(integer, bytea)": "lowrite(0, '\\x00'::bytea)",
    "pg_catalog.lo_truncate(integer, integer)": "lo_truncate(0, 0)",
    "pg_catalog.lo_truncate64(integer, bigint)": "lo_truncate64(0, 0)",
    "pg_catalog.lo_unlink(oid)": "lo_unlink(1)",
    "pg_catalog.lo_import(text)": "lo_import('/etc/hostname')",
    "pg_catalog.lo_import(text, oid)": "lo_import('/etc/hostname', 0)",
    "pg_catalog.lo_export(oid, text)": "lo_export(1, '/tmp/crm_test_lo_export')",
}


@pytest.fixture
def app_conn(pg_database: BootstrappedDatabase) -> Iterator[psycopg.Connection[tuple[object]]]:
    """A raw connection as the application's login role, in autocommit."""
    with psycopg.connect(pg_database.app_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def admin_conn(
    pg_database: BootstrappedDatabase,
) -> Iterator[psycopg.Connection[tuple[object]]]:
    """A raw connection as the admin login role (a member of crm_admin), in autocommit."""
    with psycopg.connect(pg_database.admin_url, autocommit=True) as conn:
        yield conn


def test_every_revoked_function_has_a_call_here() -> None:
    assert set(CALLS) == set(REVOKED_FUNCTIONS)


def test_the_app_role_may_not_run_a_do_block(app_conn: psycopg.Connection[tuple[object]]) -> None:
    with pytest.raises(errors.InsufficientPrivilege, match="language plpgsql"):
        app_conn.execute("DO $$ BEGIN PERFORM 1; END $$")


@pytest.mark.parametrize("function", REVOKED_FUNCTIONS)
def test_the_app_role_may_not_run_a_revoked_function(
    app_conn: psycopg.Connection[tuple[object]], function: str
) -> None:
    name = function.removeprefix("pg_catalog.").split("(")[0]
    with pytest.raises(errors.InsufficientPrivilege, match=f"function {name}$"):
        app_conn.execute(f"SELECT pg_catalog.{CALLS[function]}")


def test_the_app_role_may_not_create_temporary_tables(
    app_conn: psycopg.Connection[tuple[object]],
) -> None:
    with pytest.raises(errors.InsufficientPrivilege, match="temporary tables"):
        app_conn.execute("CREATE TEMP TABLE staging (x int)")


def test_the_app_role_may_not_update_pg_settings(
    app_conn: psycopg.Connection[tuple[object]],
) -> None:
    with pytest.raises(errors.InsufficientPrivilege, match="pg_settings"):
        app_conn.execute("UPDATE pg_settings SET setting = 'off' WHERE name = 'enable_seqscan'")
    assert app_conn.execute("SHOW enable_seqscan").fetchone() == ("on",)


def test_the_admin_role_keeps_plpgsql_and_the_sql_text_functions(
    admin_conn: psycopg.Connection[tuple[object]],
) -> None:
    admin_conn.execute("DO $$ BEGIN PERFORM 1; END $$")
    row = admin_conn.execute("SELECT query_to_xml('SELECT 1 AS one', true, false, '')::text")
    assert "<one>1</one>" in str(row.fetchone())
    for function in SQL_TEXT_FUNCTIONS + LARGE_OBJECT_WRITERS:
        allowed = admin_conn.execute(
            "SELECT has_function_privilege(%s, 'EXECUTE')", (function,)
        ).fetchone()
        assert allowed == (True,), function
    admin_conn.execute("CREATE TEMP TABLE scratch (x int)")


def test_nobody_gets_the_server_file_functions_back(
    admin_conn: psycopg.Connection[tuple[object]],
) -> None:
    for function in SERVER_FILE_FUNCTIONS:
        for role in ("crm_admin", "crm_owner", "crm_app"):
            allowed = admin_conn.execute(
                "SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, function)
            ).fetchone()
            assert allowed == (False,), (role, function)


def test_the_bootstrap_file_alone_then_migrations_give_a_database_the_client_accepts(
    pg_superuser_url: str,
) -> None:
    """What a superuser does by hand, as docs/operations.md says: run the file (twice, it is
    re-runnable), create the login roles, migrate, start the client. No other step."""
    suffix = secrets.token_hex(6)
    database = f"crm_test_by_hand_{suffix}"
    passwords = {"app": secrets.token_urlsafe(24), "admin": secrets.token_urlsafe(24)}
    made = BootstrappedDatabase(
        database=database,
        app_role=f"{database}_app",
        admin_role=f"{database}_admin",
        app_url=make_conninfo(
            pg_superuser_url, dbname=database, user=f"{database}_app", password=passwords["app"]
        ),
        admin_url=make_conninfo(
            pg_superuser_url,
            dbname=database,
            user=f"{database}_admin",
            password=passwords["admin"],
        ),
        superuser_url=pg_superuser_url,
    )
    try:
        with psycopg.connect(pg_superuser_url, autocommit=True) as su:
            su.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(made.database)))
        target = make_conninfo(pg_superuser_url, dbname=made.database)
        with psycopg.connect(target, autocommit=True) as su:
            for _ in range(2):
                su.execute(bootstrap_roles_file().read_text(encoding="utf-8"))
            for role, password, flags in (
                (made.app_role, passwords["app"], "NOBYPASSRLS IN ROLE crm_app"),
                (made.admin_role, passwords["admin"], "BYPASSRLS IN ROLE crm_admin"),
            ):
                su.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER " + flags).format(
                        sql.Identifier(role), sql.Literal(password)
                    )
                )
        with PostgresClient(
            made.app_url, 1, admin_connection_url=made.admin_url, min_pool_size=0
        ) as client:
            apply_migrations(client)
        with PostgresClient(made.app_url, 1, min_pool_size=0) as client:
            assert client.health_check()
        with (
            psycopg.connect(made.app_url, autocommit=True) as app,
            pytest.raises(errors.InsufficientPrivilege),
        ):
            app.execute("CREATE TEMP TABLE staging (x int)")
    finally:
        drop_database(made)
