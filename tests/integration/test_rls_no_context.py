"""With no user set, row-level security shows nothing and refuses every write: fail closed.

The port never sends a query without a user (it raises before any I/O), so these tests use
the raw application-role connection, as code that bypassed the port would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from crm_infra.adapters import PostgresClient


@pytest.fixture
def raw(pg_db: PostgresClient) -> Iterator[psycopg.Connection[Any]]:
    """An application-role connection with no user set, in autocommit."""
    conn = pg_db.pool.getconn()
    try:
        yield conn
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        pg_db.pool.putconn(conn)


@pytest.fixture
def alice_contact(pg_db: PostgresClient) -> tuple[UUID, UUID]:
    user: UUID = pg_db.execute_admin(
        "INSERT INTO users (email) VALUES ('a@example.com') RETURNING id"
    )[0]["id"]
    contact: UUID = pg_db.execute_scalar(
        "INSERT INTO contacts (name) VALUES ('Ann') RETURNING id", user_id=user
    )
    pg_db.execute(
        "INSERT INTO addresses (contact_id, city) VALUES (%s, 'Oslo')", (contact,), user_id=user
    )
    pg_db.execute("INSERT INTO tickets (contact_id) VALUES (%s)", (contact,), user_id=user)
    return user, contact


@pytest.mark.parametrize("table", ["contacts", "addresses", "tickets"])
def test_no_context_sees_no_rows(
    raw: psycopg.Connection[Any], alice_contact: tuple[UUID, UUID], table: str
) -> None:
    assert raw.execute(f"SELECT * FROM {table}").fetchall() == []


def test_an_empty_context_sees_no_rows(
    raw: psycopg.Connection[Any], alice_contact: tuple[UUID, UUID]
) -> None:
    raw.execute("SELECT set_config('app.current_user_id', '', false)")
    try:
        assert raw.execute("SELECT * FROM contacts").fetchall() == []
    finally:
        raw.execute("RESET app.current_user_id")


def test_no_context_insert_is_refused_by_rls(
    raw: psycopg.Connection[Any], alice_contact: tuple[UUID, UUID]
) -> None:
    """user_id defaults to NULL without a user; the policy, checked before NOT NULL, refuses."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        raw.execute("INSERT INTO contacts (name) VALUES ('x')")
    user, _ = alice_contact
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        raw.execute("INSERT INTO contacts (user_id, name) VALUES (%s, 'x')", (user,))


def test_no_context_update_and_delete_touch_nothing(
    raw: psycopg.Connection[Any], pg_db: PostgresClient, alice_contact: tuple[UUID, UUID]
) -> None:
    assert raw.execute("UPDATE contacts SET name = 'x'").rowcount == 0
    assert raw.execute("DELETE FROM contacts").rowcount == 0
    assert pg_db.execute_admin("SELECT name FROM contacts") == [{"name": "Ann"}]


def test_a_garbage_context_is_an_error_not_a_leak(
    raw: psycopg.Connection[Any], alice_contact: tuple[UUID, UUID]
) -> None:
    raw.execute("SELECT set_config('app.current_user_id', 'not-a-uuid', false)")
    try:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            raw.execute("SELECT * FROM contacts")
    finally:
        raw.execute("RESET app.current_user_id")


def test_another_users_context_sees_nothing_of_alice(
    pg_db: PostgresClient, alice_contact: tuple[UUID, UUID]
) -> None:
    stranger = uuid4()
    for table in ("contacts", "addresses", "tickets"):
        assert pg_db.execute(f"SELECT * FROM {table}", user_id=stranger) == []
