"""How server errors are classified: by signals that do not depend on the server's language."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from crm_infra import ConfigError, DatabaseError, RowSecurityError
from crm_infra.adapters import PostgresClient, PostgresError
from crm_infra.bootstrap import create_database


def make_user(db: PostgresClient) -> UUID:
    user_id: UUID = db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid4()}@example.com",)
    )[0]["id"]
    return user_id


def test_a_write_refused_by_a_policy_is_a_row_security_error(pg_db: PostgresClient) -> None:
    alice, bob = make_user(pg_db), make_user(pg_db)
    with pytest.raises(RowSecurityError) as caught:
        pg_db.execute(
            "INSERT INTO contacts (user_id, name) VALUES (%s, 'x')", (bob,), user_id=alice
        )
    assert isinstance(caught.value, DatabaseError)
    assert getattr(caught.value, "sqlstate", None) == "42501"


def test_the_message_text_alone_does_not_make_a_row_security_error(
    pg_db: PostgresClient,
) -> None:
    # The same SQLSTATE and the same English words, raised by something other than a policy:
    # only where the server raised it (not its translatable text) tells the two apart. (The
    # admin path may run a DO block; user-scoped SQL may not.)
    with pytest.raises(DatabaseError) as caught:
        pg_db.execute_admin(
            "DO $$ BEGIN RAISE EXCEPTION 'new row violates row-level security policy for "
            "table \"contacts\"' USING ERRCODE = '42501'; END $$"
        )
    assert not isinstance(caught.value, RowSecurityError)
    assert getattr(caught.value, "sqlstate", None) == "42501"


def test_a_missing_privilege_is_not_a_row_security_error(pg_db: PostgresClient) -> None:
    with pytest.raises(DatabaseError) as caught:
        pg_db.execute("INSERT INTO users (email) VALUES ('x@example.com')", user_id=uuid4())
    assert not isinstance(caught.value, RowSecurityError)
    assert getattr(caught.value, "sqlstate", None) == "42501"


def test_a_url_that_cannot_be_encoded_never_shows_its_password() -> None:
    url = "postgresql://postgres:s3cr\udcffet@127.0.0.1:1/postgres"
    with pytest.raises(PostgresError) as caught:
        create_database(url)
    assert "s3cr" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_a_database_name_prefix_must_be_a_plain_name() -> None:
    with pytest.raises(ConfigError, match="prefix"):
        create_database("postgresql://postgres@127.0.0.1:1/postgres", prefix="crm\x00x")
