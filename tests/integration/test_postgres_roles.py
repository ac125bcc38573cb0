"""The start-up role check, and the roles the test database really runs with."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from crm_infra import UnsafeRoleError
from crm_infra.adapters import PostgresClient, PostgresError
from crm_infra.adapters.postgres.roles import REVOKED_FUNCTIONS
from crm_infra.bootstrap import BootstrappedDatabase, create_database, drop_database
from tests.fixtures.postgres import login_role


@pytest.fixture
def make_login_role(pg_database: BootstrappedDatabase) -> Iterator[Callable[[str], str]]:
    """Create throwaway login roles with given options; return a URL into the test database."""
    with contextlib.ExitStack() as roles:

        def make(options: str) -> str:
            return roles.enter_context(login_role(pg_database, options)).url

        yield make


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


def test_a_member_of_the_admin_role_is_told_to_leave_it_not_to_strip_the_admin_role(
    make_login_role: Callable[[str], str],
) -> None:
    """What crm_admin may (plpgsql, query_to_xml, TEMPORARY) is the membership's problem."""
    url = make_login_role("NOBYPASSRLS IN ROLE crm_admin")
    role = str(psycopg.conninfo.conninfo_to_dict(url)["user"])
    with pytest.raises(UnsafeRoleError) as caught:
        PostgresClient(url, 1)
    message = str(caught.value)
    assert "2 problem(s)" in message  # a member of a BYPASSRLS role, of the tables' owner
    assert f"fix: REVOKE crm_admin FROM {role}" in message
    assert "FROM crm_admin" not in message
    assert "FROM crm_owner" not in message


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


@pytest.fixture
def own_db(pg_superuser_url: str) -> Iterator[BootstrappedDatabase]:
    """A throwaway database of this test's own (bootstrapped, not migrated), and its roles.

    Tests that change privileges do it here: grants to PUBLIC stay in this database, and its
    login roles (with their attributes and memberships) are dropped with it.
    """
    created = create_database(pg_superuser_url, prefix="crm_test_rolechk")
    try:
        yield created
    finally:
        drop_database(created)


def _as_superuser(db: BootstrappedDatabase, *statements: sql.Composed | sql.SQL | str) -> None:
    with psycopg.connect(
        make_conninfo(db.superuser_url, dbname=db.database), autocommit=True
    ) as su:
        for statement in statements:
            su.execute(statement)


def _refusal(db: BootstrappedDatabase) -> str:
    with pytest.raises(UnsafeRoleError) as caught:
        PostgresClient(db.app_url, 1, min_pool_size=0)
    return str(caught.value)


def test_a_freshly_bootstrapped_role_is_accepted(own_db: BootstrappedDatabase) -> None:
    with PostgresClient(own_db.app_url, 1, min_pool_size=0) as client:
        assert client.health_check()


def test_a_role_that_may_create_temporary_tables_is_refused(
    own_db: BootstrappedDatabase,
) -> None:
    database = sql.Identifier(own_db.database)
    _as_superuser(own_db, sql.SQL("GRANT TEMPORARY ON DATABASE {} TO PUBLIC").format(database))
    message = _refusal(own_db)
    fix = (
        f"REVOKE TEMPORARY ON DATABASE {own_db.database} FROM PUBLIC; "
        f"GRANT TEMPORARY ON DATABASE {own_db.database} TO crm_admin"
    )
    assert "rule 'no temporary tables'" in message
    assert fix in message


def test_a_role_with_createrole_is_refused(own_db: BootstrappedDatabase) -> None:
    role = sql.Identifier(own_db.app_role)
    _as_superuser(own_db, sql.SQL("ALTER ROLE {} CREATEROLE").format(role))
    message = _refusal(own_db)
    assert "rule 'no CREATEROLE'" in message
    assert f"ALTER ROLE {own_db.app_role} NOCREATEROLE" in message


@pytest.mark.parametrize(
    "server_role",
    ["pg_execute_server_program", "pg_read_server_files", "pg_write_server_files"],
)
def test_a_member_of_a_server_access_role_is_refused(
    own_db: BootstrappedDatabase, server_role: str
) -> None:
    # Through a group in between: membership counts however deep.
    group = f"crm_test_group_{secrets.token_hex(5)}"
    _as_superuser(own_db, sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
    try:
        _as_superuser(
            own_db,
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(server_role), sql.Identifier(group)),
            sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(group), sql.Identifier(own_db.app_role)
            ),
        )
        message = _refusal(own_db)
    finally:
        _as_superuser(own_db, sql.SQL("DROP ROLE {}").format(sql.Identifier(group)))
    assert f"rule 'no member of {server_role}'" in message
    assert f"REVOKE {group} FROM {own_db.app_role}" in message


@pytest.mark.parametrize("grantee", ["PUBLIC", "crm_app"])
def test_a_role_that_may_use_plpgsql_is_refused(own_db: BootstrappedDatabase, grantee: str) -> None:
    _as_superuser(own_db, f"GRANT USAGE ON LANGUAGE plpgsql TO {grantee}")
    message = _refusal(own_db)
    assert "rule 'no procedural language'" in message
    assert f"REVOKE USAGE ON LANGUAGE plpgsql FROM {grantee}" in message


def test_a_role_that_may_execute_query_to_xml_is_refused(own_db: BootstrappedDatabase) -> None:
    _as_superuser(
        own_db, "GRANT EXECUTE ON FUNCTION query_to_xml(text, bool, bool, text) TO PUBLIC"
    )
    message = _refusal(own_db)
    assert "rule 'no function that runs SQL text or writes large objects'" in message
    assert (
        "REVOKE EXECUTE ON FUNCTION pg_catalog.query_to_xml(text, boolean, boolean, text) "
        "FROM PUBLIC"
    ) in message


def test_every_revoked_function_is_checked(own_db: BootstrappedDatabase) -> None:
    _as_superuser(
        own_db,
        *(f"GRANT EXECUTE ON FUNCTION {function} TO PUBLIC" for function in REVOKED_FUNCTIONS),
    )
    message = _refusal(own_db)
    fix = f"REVOKE EXECUTE ON FUNCTION {', '.join(sorted(REVOKED_FUNCTIONS))} FROM PUBLIC"
    assert fix in message


def test_create_on_a_schema_in_the_search_path_is_refused(own_db: BootstrappedDatabase) -> None:
    _as_superuser(own_db, "GRANT CREATE ON SCHEMA public TO PUBLIC")
    message = _refusal(own_db)
    assert "rule 'no CREATE on a schema in its search_path'" in message
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in message


def test_create_on_a_schema_counts_only_once_it_is_in_the_search_path(
    own_db: BootstrappedDatabase,
) -> None:
    _as_superuser(
        own_db, "CREATE SCHEMA scratch", "GRANT USAGE, CREATE ON SCHEMA scratch TO crm_app"
    )
    with PostgresClient(own_db.app_url, 1, min_pool_size=0) as client:
        assert client.health_check()
    _as_superuser(
        own_db,
        sql.SQL("ALTER ROLE {} SET search_path = scratch, public").format(
            sql.Identifier(own_db.app_role)
        ),
    )
    message = _refusal(own_db)
    assert "REVOKE CREATE ON SCHEMA scratch FROM crm_app" in message


def test_create_on_the_database_is_refused(own_db: BootstrappedDatabase) -> None:
    database = sql.Identifier(own_db.database)
    _as_superuser(own_db, sql.SQL("GRANT CREATE ON DATABASE {} TO crm_app").format(database))
    message = _refusal(own_db)
    assert "rule 'no CREATE on the database'" in message
    assert f"REVOKE CREATE ON DATABASE {own_db.database} FROM crm_app" in message


def test_update_on_pg_settings_is_refused(own_db: BootstrappedDatabase) -> None:
    _as_superuser(own_db, "GRANT UPDATE ON pg_catalog.pg_settings TO PUBLIC")
    message = _refusal(own_db)
    assert "rule 'no UPDATE on pg_settings'" in message
    assert "REVOKE UPDATE ON pg_catalog.pg_settings FROM PUBLIC" in message


def test_every_problem_is_reported_at_once(own_db: BootstrappedDatabase) -> None:
    database = sql.Identifier(own_db.database)
    _as_superuser(
        own_db,
        sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(own_db.app_role)),
        "GRANT USAGE ON LANGUAGE plpgsql TO PUBLIC",
        sql.SQL("GRANT TEMPORARY ON DATABASE {} TO PUBLIC").format(database),
        "GRANT UPDATE ON pg_catalog.pg_settings TO PUBLIC",
    )
    message = _refusal(own_db)
    assert "4 problem(s)" in message
    for rule in (
        "no CREATEROLE",
        "no procedural language",
        "no temporary tables",
        "no UPDATE on pg_settings",
    ):
        assert f"rule '{rule}'" in message


def test_the_login_role_is_checked_as_well_as_the_current_role(
    own_db: BootstrappedDatabase,
) -> None:
    """A login role with plpgsql that sets role crm_app is refused for what the login role may."""
    _as_superuser(
        own_db,
        sql.SQL("GRANT USAGE ON LANGUAGE plpgsql TO {}").format(sql.Identifier(own_db.app_role)),
    )
    url = make_conninfo(own_db.app_url, options="-c role=crm_app")
    with pytest.raises(UnsafeRoleError) as caught:
        PostgresClient(url, 1, min_pool_size=0)
    message = str(caught.value)
    assert f"login role {own_db.app_role!r}: rule 'no procedural language'" in message, message
