"""The start-up role check, and the roles the test database really runs with."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from crm_infra import UnsafeRoleError
from crm_infra.adapters import PostgresClient, PostgresError
from crm_infra.bootstrap import BootstrappedDatabase


@pytest.fixture
def make_login_role(pg_database: BootstrappedDatabase) -> Iterator[Callable[[str], str]]:
    """Create throwaway login roles with given options; return a URL into the test database."""
    created: list[str] = []

    def make(options: str) -> str:
        role = f"crm_test_role_{secrets.token_hex(5)}"
        with psycopg.connect(pg_database.superuser_url, autocommit=True) as su:
            su.execute(sql.SQL("CREATE ROLE {} LOGIN " + options).format(sql.Identifier(role)))
        created.append(role)
        return make_conninfo(pg_database.superuser_url, user=role, dbname=pg_database.database)

    yield make
    with psycopg.connect(pg_database.superuser_url, autocommit=True) as su:
        for role in created:
            su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_superuser_is_refused(pg_database: BootstrappedDatabase) -> None:
    url = make_conninfo(pg_database.superuser_url, dbname=pg_database.database)
    with pytest.raises(UnsafeRoleError, match="superuser") as caught:
        PostgresClient(url, 1)
    assert isinstance(caught.value, PostgresError)


def test_the_admin_role_is_refused_for_user_facing_work(
    pg_database: BootstrappedDatabase,
) -> None:
    with pytest.raises(UnsafeRoleError, match="BYPASSRLS"):
        PostgresClient(pg_database.admin_url, 1)


def test_a_member_of_the_table_owner_is_refused(make_login_role: Callable[[str], str]) -> None:
    url = make_login_role("NOBYPASSRLS IN ROLE crm_owner")
    with pytest.raises(UnsafeRoleError, match=r"owner.*contacts"):
        PostgresClient(url, 1)


def test_a_role_that_may_become_a_bypassrls_role_is_refused(
    make_login_role: Callable[[str], str],
) -> None:
    url = make_login_role("NOBYPASSRLS IN ROLE crm_admin")
    with pytest.raises(UnsafeRoleError, match="crm_admin"):
        PostgresClient(url, 1)


def test_a_bypassrls_role_is_refused(make_login_role: Callable[[str], str]) -> None:
    url = make_login_role("BYPASSRLS IN ROLE crm_app")
    with pytest.raises(UnsafeRoleError, match="BYPASSRLS"):
        PostgresClient(url, 1)


def test_the_app_role_lacks_bypassrls_superuser_and_ownership(
    pg_db: PostgresClient, pg_database: BootstrappedDatabase
) -> None:
    role = pg_db.execute_admin(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s",
        (pg_database.app_role,),
    )
    assert role == [{"rolsuper": False, "rolbypassrls": False}]
    owned = pg_db.execute_admin(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND pg_has_role(%s, c.relowner, 'MEMBER')",
        (pg_database.app_role,),
    )
    assert owned == []
    owners = pg_db.execute_admin(
        "SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class "
        "WHERE relname IN ('users', 'contacts', 'addresses', 'tickets')"
    )
    assert owners == [{"owner": "crm_owner"}]
    # And the client agrees: what it runs as is that role.
    assert pg_db.execute_scalar("SELECT current_user", user_id=uuid4()) == pg_database.app_role


def test_the_app_role_cannot_switch_rls_off(pg_db: PostgresClient) -> None:
    user = uuid4()
    for statement in (
        "ALTER TABLE contacts DISABLE ROW LEVEL SECURITY",
        "SET ROLE crm_owner",
        "SET row_security = off; SELECT * FROM contacts",
    ):
        with pytest.raises(PostgresError):
            pg_db.execute(statement, user_id=user)


def test_the_admin_path_sees_everything(pg_db: PostgresClient) -> None:
    users = [
        pg_db.execute_admin(
            "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid4()}@example.com",)
        )[0]["id"]
        for _ in range(3)
    ]
    for user in users:
        pg_db.execute("INSERT INTO contacts (name) VALUES ('c')", user_id=user)
    assert pg_db.execute_admin("SELECT count(*) AS n FROM contacts") == [{"n": 3}]
    assert pg_db.execute_admin("SELECT current_setting('row_security') AS v") == [{"v": "on"}]


def test_a_superuser_that_sets_the_app_role_is_refused(
    pg_database: BootstrappedDatabase,
) -> None:
    url = make_conninfo(
        pg_database.superuser_url, dbname=pg_database.database, options="-c role=crm_app"
    )
    with psycopg.connect(url) as probe:  # the disguise works on current_user
        assert probe.execute("SELECT current_user").fetchone() == ("crm_app",)
    with pytest.raises(UnsafeRoleError, match=r"login \(session\) role.*superuser") as caught:
        PostgresClient(url, 1)
    assert isinstance(caught.value, PostgresError)


def test_a_safe_login_role_with_a_role_setting_is_refused(
    make_login_role: Callable[[str], str],
) -> None:
    url = make_conninfo(make_login_role("NOBYPASSRLS IN ROLE crm_app"), options="-c role=crm_app")
    with pytest.raises(UnsafeRoleError, match="differs from the current role 'crm_app'"):
        PostgresClient(url, 1)


def test_a_plain_member_of_the_app_role_is_accepted(
    make_login_role: Callable[[str], str],
) -> None:
    with PostgresClient(make_login_role("NOBYPASSRLS IN ROLE crm_app"), 1) as client:
        assert client.execute("SELECT 1 AS one", user_id=uuid4()) == [{"one": 1}]


def test_a_role_that_may_create_temporary_tables_is_refused(
    pg_database: BootstrappedDatabase,
) -> None:
    superuser = make_conninfo(pg_database.superuser_url, dbname=pg_database.database)
    grant = sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(
        sql.Identifier(pg_database.database), sql.Identifier(pg_database.app_role)
    )
    with psycopg.connect(superuser, autocommit=True) as su:
        su.execute(grant)
        try:
            with pytest.raises(UnsafeRoleError, match="temporary tables"):
                PostgresClient(pg_database.app_url, 1)
        finally:
            su.execute(
                sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM {}").format(
                    sql.Identifier(pg_database.database), sql.Identifier(pg_database.app_role)
                )
            )
