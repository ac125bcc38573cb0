"""apply_migrations and audit_rls on fresh databases of their own."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from crm_infra import MigrationError
from crm_infra.adapters import PostgresClient
from crm_infra.bootstrap import BootstrappedDatabase, create_database, drop_database
from crm_infra.migrations import MIGRATIONS_TABLE, RlsFinding, apply_migrations, audit_rls
from crm_infra.schema_files import bootstrap_roles_file, default_sql_dir, migration_files
from tests.fixtures.psql import run_as_superuser

SHIPPED = [p.name for p in migration_files()]

PROTECTED_TABLE = """
SET ROLE crm_owner;
CREATE TABLE notes (
    id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL DEFAULT NULLIF(current_setting('app.current_user_id', true), '')::uuid
            REFERENCES users (id),
    body    text
);
CREATE INDEX notes_user_id_idx ON notes (user_id);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY notes_user_isolation ON notes
    USING (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO crm_app;
RESET ROLE;
"""


@pytest.fixture
def fresh(pg_superuser_url: str) -> Iterator[BootstrappedDatabase]:
    created = create_database(pg_superuser_url, prefix="crm_test_mig")
    try:
        yield created
    finally:
        drop_database(created)


@pytest.fixture
def admin(fresh: BootstrappedDatabase) -> Iterator[PostgresClient]:
    with PostgresClient(
        fresh.app_url, 1, min_pool_size=0, admin_connection_url=fresh.admin_url
    ) as client:
        yield client


@pytest.fixture
def sql_dir(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(default_sql_dir(), target)
    return target


def test_applies_every_file_once_and_records_checksums(admin: PostgresClient) -> None:
    assert apply_migrations(admin) == SHIPPED
    assert apply_migrations(admin) == []
    recorded = admin.execute_admin(
        f"SELECT filename, checksum FROM {MIGRATIONS_TABLE} ORDER BY filename"
    )
    assert recorded == [
        {"filename": p.name, "checksum": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in migration_files()
    ]
    assert audit_rls(admin) == []


def test_a_database_without_the_bootstrap_is_named_with_the_command_that_fixes_it(
    fresh: BootstrappedDatabase, admin: PostgresClient
) -> None:
    # What the bootstrap file gives each database and a hand-made one lacks (PostgreSQL 15
    # grants no CREATE on schema public): migrations fail with "permission denied for schema
    # public" until it has run there.
    with psycopg.connect(fresh.superuser_url, dbname=fresh.database, autocommit=True) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM crm_owner")
    with pytest.raises(MigrationError) as caught:
        apply_migrations(admin)
    message = str(caught.value)
    assert message.startswith(
        f"migrations: database {fresh.database} has not been bootstrapped: role crm_owner may "
        "not create tables in schema public (the server said: "
    )
    assert "permission denied for schema public" in message
    command = message.rpartition("then migrate again: ")[2]
    assert command == (
        f"psql -v ON_ERROR_STOP=1 -d {fresh.database} -f {bootstrap_roles_file().resolve()}"
    )

    run_as_superuser(command, fresh.superuser_url)
    assert apply_migrations(admin) == SHIPPED


def test_an_admin_role_outside_the_owner_role_is_named_with_the_grant_it_lacks(
    fresh: BootstrappedDatabase,
) -> None:
    with psycopg.connect(fresh.superuser_url, dbname=fresh.database, autocommit=True) as conn:
        conn.execute(
            sql.SQL("REVOKE crm_admin FROM {}").format(sql.Identifier(fresh.admin_role))
        )
    with PostgresClient(
        fresh.app_url, 1, min_pool_size=0, admin_connection_url=fresh.admin_url
    ) as client, pytest.raises(MigrationError) as caught:
        apply_migrations(client)
    message = str(caught.value)
    assert message.startswith(
        f"migrations: the admin login role {fresh.admin_role} is not a member of crm_owner"
    )
    assert message.endswith(f"as a superuser, run: GRANT crm_admin TO {fresh.admin_role};")


def test_applies_only_new_files(admin: PostgresClient, sql_dir: Path) -> None:
    apply_migrations(admin, sql_dir)
    (sql_dir / "004_notes.sql").write_text(PROTECTED_TABLE)
    assert apply_migrations(admin, sql_dir) == ["004_notes.sql"]
    assert admin.execute_admin("SELECT count(*) AS n FROM notes") == [{"n": 0}]


def test_refuses_an_edited_applied_file(admin: PostgresClient, sql_dir: Path) -> None:
    apply_migrations(admin, sql_dir)
    edited = sql_dir / "002_row_level_security.sql"
    edited.write_text(edited.read_text() + "\n-- a harmless-looking edit\n")
    (sql_dir / "004_notes.sql").write_text(PROTECTED_TABLE)
    with pytest.raises(MigrationError, match=r"002_row_level_security\.sql"):
        apply_migrations(admin, sql_dir)
    assert admin.execute_admin("SELECT to_regclass('notes') AS t") == [{"t": None}]


def test_a_failing_file_is_rolled_back_and_named(admin: PostgresClient, sql_dir: Path) -> None:
    apply_migrations(admin, sql_dir)
    (sql_dir / "004_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nCREATE TABLEE oops (id int);\n"
    )
    with pytest.raises(MigrationError, match=r"004_broken\.sql"):
        apply_migrations(admin, sql_dir)
    assert admin.execute_admin("SELECT to_regclass('half_done') AS t") == [{"t": None}]
    done = admin.execute_admin(f"SELECT filename FROM {MIGRATIONS_TABLE} ORDER BY 1")
    assert [r["filename"] for r in done] == SHIPPED


def test_an_unprotected_table_fails_the_run_until_fixed(
    admin: PostgresClient, sql_dir: Path
) -> None:
    apply_migrations(admin, sql_dir)
    (sql_dir / "004_leaky.sql").write_text(
        "SET ROLE crm_owner;\n"
        "CREATE TABLE leaky (id serial PRIMARY KEY, user_id uuid, secret text);\n"
        "RESET ROLE;\n"
    )
    with pytest.raises(MigrationError, match="leaky"):
        apply_migrations(admin, sql_dir)
    with pytest.raises(MigrationError, match="leaky"):
        apply_migrations(admin, sql_dir)  # nothing new to apply, still refused
    (sql_dir / "005_protect_leaky.sql").write_text(
        "SET ROLE crm_owner;\n"
        "CREATE INDEX leaky_user_id_idx ON leaky (user_id);\n"
        "ALTER TABLE leaky ENABLE ROW LEVEL SECURITY;\n"
        "ALTER TABLE leaky FORCE ROW LEVEL SECURITY;\n"
        "CREATE POLICY leaky_user_isolation ON leaky\n"
        "    USING (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid)\n"
        "    WITH CHECK (user_id = NULLIF(current_setting('app.current_user_id', true), '')"
        "::uuid);\n"
        "RESET ROLE;\n"
    )
    assert apply_migrations(admin, sql_dir) == ["005_protect_leaky.sql"]


def test_audit_lists_every_gap_of_an_unprotected_table(admin: PostgresClient) -> None:
    apply_migrations(admin)
    admin.execute_admin("CREATE TABLE leaky (id serial PRIMARY KEY, user_id uuid)")
    findings = audit_rls(admin)
    assert all(isinstance(f, RlsFinding) for f in findings)
    assert {f.relation for f in findings} == {"leaky"}
    problems = " | ".join(f.problem for f in findings)
    for expected in ("not enabled", "not FORCEd", "no row-level security policy", "no index"):
        assert expected in problems


def test_audit_flags_policies_that_do_not_fail_closed(admin: PostgresClient) -> None:
    apply_migrations(admin)
    admin.execute_admin(
        """
        CREATE TABLE open_notes (id serial PRIMARY KEY, user_id uuid);
        CREATE INDEX ON open_notes (user_id);
        ALTER TABLE open_notes ENABLE ROW LEVEL SECURITY;
        ALTER TABLE open_notes FORCE ROW LEVEL SECURITY;
        CREATE POLICY everyone ON open_notes USING (true);
        CREATE POLICY strict_setting ON open_notes FOR SELECT
            USING (user_id = current_setting('app.current_user_id')::uuid);
        CREATE POLICY widened ON open_notes
            USING (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid
                   OR user_id IS NULL)
            WITH CHECK (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid);
        """
    )
    findings = [str(f) for f in audit_rls(admin)]
    assert any("everyone: USING is not exactly" in f for f in findings)
    assert any("everyone: WITH CHECK missing" in f for f in findings)
    assert any("strict_setting: USING is not exactly" in f for f in findings)
    assert any("widened: USING contains OR" in f for f in findings)
    assert all(f.startswith("open_notes:") for f in findings)


def test_audit_flags_a_view_without_security_invoker(admin: PostgresClient) -> None:
    apply_migrations(admin)
    admin.execute_admin(
        """
        SET ROLE crm_owner;
        CREATE VIEW contact_names AS SELECT name FROM contacts;
        CREATE VIEW safe_contact_names WITH (security_invoker = true) AS
            SELECT name FROM contacts;
        CREATE VIEW names_of_names AS SELECT * FROM safe_contact_names;
        CREATE VIEW user_emails AS SELECT email FROM users;
        RESET ROLE;
        """
    )
    findings = {f.relation: f.problem for f in audit_rls(admin)}
    assert set(findings) == {"contact_names", "names_of_names"}
    assert "security_invoker" in findings["contact_names"]


def test_concurrent_runners_apply_each_file_once(fresh: BootstrappedDatabase) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def run() -> None:
        try:
            with PostgresClient(
                fresh.app_url, 1, min_pool_size=0, admin_connection_url=fresh.admin_url
            ) as client:
                start.wait()
                results.append(apply_migrations(client))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = sorted(name for result in results for name in result)
    assert applied == SHIPPED


_CANONICAL = "user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid"


@pytest.mark.parametrize(
    ("using", "check", "flagged"),
    [
        # Every row when no user is set: NULL IS NOT FALSE is true.
        pytest.param(f"({_CANONICAL}) IS NOT FALSE", _CANONICAL, "USING", id="is-not-false"),
        pytest.param(f"COALESCE({_CANONICAL}, true)", _CANONICAL, "USING", id="coalesce"),
        # Writes for every user but the current one.
        pytest.param(_CANONICAL, f"NOT ({_CANONICAL})", "WITH CHECK", id="not"),
        pytest.param(_CANONICAL, f"{_CANONICAL} IS NULL", "WITH CHECK", id="is-null"),
        # Another column that merely ends in user_id.
        pytest.param(f"owner_{_CANONICAL}", _CANONICAL, "USING", id="other-column-using"),
        pytest.param(_CANONICAL, f"owner_{_CANONICAL}", "WITH CHECK", id="other-column-check"),
        # The setting read without the missing-ok flag, or compared as text.
        pytest.param(
            "user_id = NULLIF(current_setting('app.current_user_id'), '')::uuid",
            _CANONICAL,
            "USING",
            id="setting-must-exist",
        ),
        pytest.param(
            "user_id::text = NULLIF(current_setting('app.current_user_id', true), '')",
            _CANONICAL,
            "USING",
            id="text-comparison",
        ),
    ],
)
def test_audit_requires_the_policy_expression_exactly(
    admin: PostgresClient, using: str, check: str, flagged: str
) -> None:
    apply_migrations(admin)
    admin.execute_admin(
        f"""
        CREATE TABLE bent (id serial PRIMARY KEY, user_id uuid, owner_user_id uuid);
        CREATE INDEX ON bent (user_id);
        ALTER TABLE bent ENABLE ROW LEVEL SECURITY;
        ALTER TABLE bent FORCE ROW LEVEL SECURITY;
        CREATE POLICY bent_policy ON bent USING ({using}) WITH CHECK ({check});
        """
    )
    findings = [str(f) for f in audit_rls(admin)]
    expected = (
        f"bent: policy bent_policy: {flagged} is not exactly user_id = "
        "NULLIF(current_setting('app.current_user_id', true), '')::uuid"
    )
    assert findings == [expected]


@pytest.mark.parametrize(
    "written",
    [
        pytest.param(_CANONICAL, id="as-shipped"),
        pytest.param(f"(({_CANONICAL}))", id="parenthesised"),
        pytest.param(
            "user_id = (NULLIF(current_setting('app.current_user_id'::text, true), ''::text))"
            "::uuid",
            id="as-printed",
        ),
        pytest.param(
            "user_id=nullif(current_setting('app.current_user_id',true),'')::uuid", id="terse"
        ),
    ],
)
def test_audit_accepts_the_canonical_policy_however_written(
    admin: PostgresClient, written: str
) -> None:
    apply_migrations(admin)
    admin.execute_admin(
        f"""
        CREATE TABLE fine (id serial PRIMARY KEY, user_id uuid);
        CREATE INDEX ON fine (user_id);
        ALTER TABLE fine ENABLE ROW LEVEL SECURITY;
        ALTER TABLE fine FORCE ROW LEVEL SECURITY;
        CREATE POLICY fine_policy ON fine USING ({written}) WITH CHECK ({written});
        """
    )
    assert audit_rls(admin) == []


_OWNED_BY_LOGIN_ROLES = """
SELECT c.relname::text AS name, r.rolname::text AS owner
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_roles r ON r.oid = c.relowner
WHERE n.nspname = 'public' AND r.rolcanlogin
ORDER BY 1
"""


def test_no_login_role_owns_anything_after_migrating(admin: PostgresClient) -> None:
    apply_migrations(admin)
    assert admin.execute_admin(_OWNED_BY_LOGIN_ROLES) == []
    owner = admin.execute_admin(
        "SELECT pg_get_userbyid(relowner)::text AS owner FROM pg_class WHERE relname = %s",
        (MIGRATIONS_TABLE,),
    )
    assert owner == [{"owner": "crm_owner"}]


def test_a_migrations_table_made_by_the_login_role_is_handed_to_the_owner(
    admin: PostgresClient,
) -> None:
    admin.execute_admin(
        f"CREATE TABLE {MIGRATIONS_TABLE} (filename text PRIMARY KEY, checksum text NOT NULL, "
        "applied_at timestamptz NOT NULL DEFAULT now())"
    )
    assert admin.execute_admin(_OWNED_BY_LOGIN_ROLES) != []
    assert apply_migrations(admin) == SHIPPED
    assert admin.execute_admin(_OWNED_BY_LOGIN_ROLES) == []


_ROLE_PREFIX = f"crm_test_definer_{secrets.token_hex(4)}_"


@pytest.fixture
def superuser(fresh: BootstrappedDatabase) -> Iterator[psycopg.Connection[tuple[object]]]:
    """A superuser connection into the fresh database; roles it made are dropped afterwards."""
    with psycopg.connect(
        make_conninfo(fresh.superuser_url, dbname=fresh.database), autocommit=True
    ) as conn:
        yield conn
        for (role,) in conn.execute(
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE %s", (f"{_ROLE_PREFIX}%",)
        ).fetchall():
            conn.execute(sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(role)))


EVERY_CONTACT = (
    "CREATE FUNCTION every_contact() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER "
    "AS 'SELECT name FROM contacts ORDER BY name'"
)


def _definer_owner(su: psycopg.Connection[tuple[object]], options: str) -> str:
    role = f"{_ROLE_PREFIX}{secrets.token_hex(3)}"
    su.execute(sql.SQL("CREATE ROLE {} NOLOGIN " + options).format(sql.Identifier(role)))
    su.execute(
        sql.SQL("GRANT USAGE ON SCHEMA public TO {0}; GRANT SELECT ON contacts TO {0}").format(
            sql.Identifier(role)
        )
    )
    return role


def test_audit_flags_a_security_definer_function_that_returns_every_users_rows(
    admin: PostgresClient,
    fresh: BootstrappedDatabase,
    superuser: psycopg.Connection[tuple[object]],
    sql_dir: Path,
) -> None:
    """The reproduction: owned by a BYPASSRLS role, executable by PUBLIC, it leaks every row."""
    apply_migrations(admin, sql_dir)
    ann, bob = (
        admin.execute_admin("INSERT INTO users (email) VALUES (%s) RETURNING id", (email,))[0]["id"]
        for email in ("ann@example.com", "bob@example.com")
    )
    for user, name in ((ann, "Ann's contact"), (bob, "Bob's contact")):
        admin.execute_admin("INSERT INTO contacts (user_id, name) VALUES (%s, %s)", (user, name))
    owner = _definer_owner(superuser, "BYPASSRLS")
    superuser.execute(EVERY_CONTACT)
    superuser.execute(
        sql.SQL("ALTER FUNCTION every_contact() OWNER TO {}").format(sql.Identifier(owner))
    )
    with psycopg.connect(fresh.app_url, autocommit=True) as app, app.transaction():
        app.execute("SELECT set_config('app.current_user_id', %s, true)", (str(ann),))
        assert app.execute("SELECT name FROM contacts").fetchall() == [("Ann's contact",)]
        leaked = app.execute("SELECT * FROM every_contact()").fetchall()
        assert leaked == [("Ann's contact",), ("Bob's contact",)]  # what the audit is for

    findings = audit_rls(admin)
    assert [f.relation for f in findings] == ["public.every_contact()"]
    problem = findings[0].problem
    assert f"runs as its owner {owner}" in problem
    assert "has BYPASSRLS" in problem
    assert "REVOKE EXECUTE ON FUNCTION public.every_contact() FROM PUBLIC, crm_app" in problem
    with pytest.raises(MigrationError, match=r"public\.every_contact\(\)"):
        apply_migrations(admin, sql_dir)

    superuser.execute("REVOKE EXECUTE ON FUNCTION every_contact() FROM PUBLIC")
    assert audit_rls(admin) == []
    (sql_dir / "004_notes.sql").write_text(PROTECTED_TABLE)
    assert apply_migrations(admin, sql_dir) == ["004_notes.sql"]


@pytest.mark.parametrize(
    ("owner_options", "said"),
    [
        pytest.param(None, "is a superuser", id="superuser"),
        pytest.param("BYPASSRLS", "has BYPASSRLS", id="bypassrls"),
        pytest.param("IN ROLE crm_admin", "is a member of crm_admin", id="member-of-admin"),
        pytest.param("IN ROLE crm_owner", "owner of, user-scoped tables", id="table-owner"),
    ],
)
def test_audit_flags_a_definer_whose_owner_bypasses_rls_or_owns_user_tables(
    admin: PostgresClient,
    superuser: psycopg.Connection[tuple[object]],
    owner_options: str | None,
    said: str,
) -> None:
    apply_migrations(admin)
    superuser.execute(EVERY_CONTACT.replace("every_contact()", "every_contact(uuid, text[])"))
    if owner_options is not None:
        owner = _definer_owner(superuser, owner_options)
        superuser.execute(
            sql.SQL("ALTER FUNCTION every_contact(uuid, text[]) OWNER TO {}").format(
                sql.Identifier(owner)
            )
        )
    findings = audit_rls(admin)
    assert [f.relation for f in findings] == ["public.every_contact(uuid, text[])"]
    assert said in findings[0].problem


def test_audit_flags_a_definer_granted_to_one_login_role(
    admin: PostgresClient,
    fresh: BootstrappedDatabase,
    superuser: psycopg.Connection[tuple[object]],
) -> None:
    apply_migrations(admin)
    superuser.execute(EVERY_CONTACT)
    superuser.execute("REVOKE EXECUTE ON FUNCTION every_contact() FROM PUBLIC")
    superuser.execute(
        sql.SQL("GRANT EXECUTE ON FUNCTION every_contact() TO {}").format(
            sql.Identifier(fresh.app_role)
        )
    )
    findings = audit_rls(admin)
    assert [f.relation for f in findings] == ["public.every_contact()"]
    assert f"FROM PUBLIC, {fresh.app_role} " in findings[0].problem


def test_audit_accepts_functions_that_cannot_bypass_rls_for_the_app_role(
    admin: PostgresClient, superuser: psycopg.Connection[tuple[object]]
) -> None:
    apply_migrations(admin)
    # Runs as the caller: row-level security applies.
    superuser.execute(
        EVERY_CONTACT.replace("every_contact()", "invoker()").replace(
            "SECURITY DEFINER", "SECURITY INVOKER"
        )
    )
    # The application role may not execute it.
    superuser.execute(EVERY_CONTACT.replace("every_contact()", "admins_only()"))
    superuser.execute("REVOKE EXECUTE ON FUNCTION admins_only() FROM PUBLIC")
    # Its owner is bound by row-level security and owns no user-scoped table.
    plain = _definer_owner(superuser, "NOBYPASSRLS")
    superuser.execute(EVERY_CONTACT.replace("every_contact()", "bound()"))
    superuser.execute(sql.SQL("ALTER FUNCTION bound() OWNER TO {}").format(sql.Identifier(plain)))
    assert audit_rls(admin) == []
