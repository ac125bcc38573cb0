"""The fake builds its tables from schema files, and refuses what it cannot reproduce."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest

from crm_infra import DatabaseError, IntegrityError, RowSecurityError, UnsupportedQueryError
from crm_infra.fakes import InMemoryUserScopedDB
from crm_infra.schema_files import default_sql_dir

ALICE = UUID("00000000-0000-4000-8000-00000000000a")
BOB = UUID("00000000-0000-4000-8000-00000000000b")


def schema_with(tmp_path: Path, extra: str) -> Path:
    """Copy the package's schema into ``tmp_path`` and add ``extra`` as the next migration."""
    for source in sorted(default_sql_dir().glob("*.sql")):
        (tmp_path / source.name).write_text(source.read_text())
    (tmp_path / "900_extra.sql").write_text(extra)
    return tmp_path


def fake_with(tmp_path: Path, extra: str) -> InMemoryUserScopedDB:
    fake = InMemoryUserScopedDB(schema_with(tmp_path, extra))
    for user, email in ((ALICE, "a@example.com"), (BOB, "b@example.com")):
        fake.execute_admin("INSERT INTO users (id, email) VALUES (%s, %s)", (user, email))
    return fake


def test_added_columns_are_usable(tmp_path: Path) -> None:
    fake = fake_with(
        tmp_path,
        "ALTER TABLE contacts ADD COLUMN IF NOT EXISTS notes varchar(5) NOT NULL DEFAULT '';\n"
        "ALTER TABLE contacts ADD COLUMN IF NOT EXISTS notes text;",
    )
    row = fake.execute_one(
        "INSERT INTO contacts (name) VALUES ('Ann') RETURNING name, notes", (), ALICE
    )
    assert row == {"name": "Ann", "notes": ""}
    with pytest.raises(DatabaseError, match="too long"):
        fake.execute("UPDATE contacts SET notes = %s", ("123456",), user_id=ALICE)


def test_a_table_whose_policies_are_dropped_shows_and_takes_nothing(tmp_path: Path) -> None:
    fake = fake_with(tmp_path, "DROP POLICY contacts_user_isolation ON contacts;")
    fake.execute_admin("INSERT INTO contacts (user_id, name) VALUES (%s, 'Ann')", (ALICE,))
    assert fake.execute("SELECT * FROM contacts", user_id=ALICE) == []
    with pytest.raises(RowSecurityError):
        fake.execute("INSERT INTO contacts (name) VALUES ('x')", user_id=ALICE)


def test_a_policy_without_with_check_checks_writes_with_using(tmp_path: Path) -> None:
    fake = fake_with(
        tmp_path,
        "DROP POLICY contacts_user_isolation ON contacts;\n"
        "CREATE POLICY mine ON contacts USING "
        "(user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid);",
    )
    with pytest.raises(RowSecurityError):
        fake.execute("INSERT INTO contacts (user_id, name) VALUES (%s, 'x')", (BOB,), ALICE)
    fake.execute("INSERT INTO contacts (name) VALUES ('Ann')", user_id=ALICE)
    assert fake.execute_scalar("SELECT count(*) FROM contacts", user_id=ALICE) == 1


def test_disabling_row_level_security_shows_every_row(tmp_path: Path) -> None:
    fake = fake_with(tmp_path, "ALTER TABLE contacts DISABLE ROW LEVEL SECURITY;")
    fake.execute_admin("INSERT INTO contacts (user_id, name) VALUES (%s, 'Bea')", (BOB,))
    assert fake.execute("SELECT name FROM contacts", user_id=ALICE) == [{"name": "Bea"}]


def test_revoked_privileges_are_refused(tmp_path: Path) -> None:
    fake = fake_with(
        tmp_path,
        "GRANT USAGE ON SCHEMA public TO crm_app;\nREVOKE DELETE ON tickets FROM crm_app;",
    )
    with pytest.raises(DatabaseError, match="permission denied for table tickets"):
        fake.execute("DELETE FROM tickets", user_id=ALICE)
    assert fake.execute("SELECT * FROM tickets", user_id=ALICE) == []


def test_a_new_table_with_a_unique_index(tmp_path: Path) -> None:
    fake = fake_with(
        tmp_path,
        "CREATE TABLE tags (id bigint PRIMARY KEY, label text NOT NULL, weight double precision);"
        "\nCREATE UNIQUE INDEX tags_label ON tags (label);"
        "\nGRANT SELECT, INSERT ON tags TO crm_app;",
    )
    fake.execute("INSERT INTO tags (id, label, weight) VALUES (1, 'a', 0.5)", user_id=ALICE)
    with pytest.raises(IntegrityError):
        fake.execute("INSERT INTO tags (id, label) VALUES (2, 'a')", user_id=ALICE)
    assert fake.execute("SELECT * FROM tags", user_id=BOB) == [
        {"id": 1, "label": "a", "weight": 0.5}
    ]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("CREATE VIEW v AS SELECT 1;", "statement not understood"),
        ("CREATE TABLE j (doc jsonb);", "has type"),
        ("CREATE TABLE s (id serial);", "has type"),
        ("CREATE POLICY p ON contacts AS RESTRICTIVE USING (true);", "permissive"),
        ("CREATE POLICY p ON contacts FOR SELECT USING (true);", "FOR ALL"),
        ("GRANT SELECT (name) ON contacts TO crm_app;", "not understood"),
        ("ALTER TABLE contacts DROP COLUMN phone;", "statement not understood"),
        ("CREATE POLICY contacts_user_isolation ON contacts USING (true);", "already exists"),
        ("ALTER TABLE nowhere ENABLE ROW LEVEL SECURITY;", "does not exist"),
    ],
)
def test_schema_statements_the_fake_cannot_reproduce_are_refused(
    tmp_path: Path, extra: str, reason: str
) -> None:
    with pytest.raises(UnsupportedQueryError) as caught:
        InMemoryUserScopedDB(schema_with(tmp_path, extra))
    assert "900_extra.sql" in str(caught.value)
    assert reason in str(caught.value)
