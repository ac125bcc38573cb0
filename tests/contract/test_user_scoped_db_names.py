"""Names resolved as PostgreSQL resolves them, and never a way to another user's rows.

Runs on every backend in ``conftest.DB_BACKENDS``. Alice writes the SQL (hostile, as from an
injection); Bob owns a contact and a ticket marked ``BOB_SECRET``. Whatever the statement, both
backends give the same answer, and neither ever reads, changes or copies Bob's rows: WITH
queries that shadow tables or each other, aliases named like tables, comments PostgreSQL nests,
upserts onto Bob's row, and the names the in-memory fake keeps for itself (its base tables
behind the views, its functions, SQLite's own tables), which PostgreSQL does not have.
"""

from __future__ import annotations

import contextlib
from typing import Any
from uuid import UUID

import pytest

from crm_infra import DatabaseError, RowSecurityError
from tests.contract.conftest import ContractDB

SECRET = "BOB_SECRET"


def make_user(db: ContractDB, email: str) -> UUID:
    user_id: UUID = db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (email,)
    )[0]["id"]
    return user_id


@pytest.fixture
def alice(db: ContractDB) -> UUID:
    user = make_user(db, "alice@example.com")
    db.execute("INSERT INTO contacts (name) VALUES ('Ann')", user_id=user)
    return user


@pytest.fixture
def bobs_contact(db: ContractDB) -> UUID:
    bob = make_user(db, "bob@example.com")
    contact: UUID = db.execute_scalar(
        "INSERT INTO contacts (name) VALUES (%s) RETURNING id", (SECRET,), user_id=bob
    )
    db.execute(
        "INSERT INTO tickets (contact_id, subject) VALUES (%s, %s)", (contact, SECRET), user_id=bob
    )
    return contact


def snapshot(db: ContractDB) -> list[Any]:
    return [
        db.execute_admin("SELECT id, user_id, name, email FROM contacts ORDER BY id"),
        db.execute_admin("SELECT id, user_id, contact_id, subject FROM tickets ORDER BY id"),
    ]


def run_as(db: ContractDB, user: UUID, query: str, params: Any = ()) -> Any:
    """Run ``query`` as ``user``; assert it crossed to nobody else's rows; return the rows."""
    before = snapshot(db)
    rows = db.execute(query, params, user_id=user)
    assert SECRET not in repr(rows)
    after = snapshot(db)
    others = [[r for r in table if r["user_id"] != user] for table in after]
    assert others == [[r for r in table if r["user_id"] != user] for table in before]
    assert SECRET not in repr([[r for r in table if r["user_id"] == user] for table in after])
    return rows


def refused_as(db: ContractDB, user: UUID, query: str, params: Any = ()) -> DatabaseError:
    before = snapshot(db)
    with pytest.raises(DatabaseError) as caught:
        db.execute(query, params, user_id=user)
    assert snapshot(db) == before
    return caught.value


# --- the fake's own names do not exist, in any spelling --------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        # The reproductions of issue 11: a WITH query named like the fake's base table, in a
        # subquery, made the base table (every user's rows) reachable outside it.
        (
            "SELECT name FROM _t_contacts WHERE EXISTS "
            "(WITH _t_contacts AS (SELECT 1) SELECT 1 FROM _t_contacts)"
        ),
        (
            "INSERT INTO contacts (name) SELECT name FROM _t_contacts WHERE EXISTS "
            "(WITH _t_contacts AS (SELECT 1) SELECT 1 FROM _t_contacts)"
        ),
        "SELECT name FROM _t_contacts",
        'SELECT name FROM "_t_contacts"',
        "SELECT name FROM public._t_contacts",
        'SELECT name FROM U&"\\005Ft_contacts"',
        "SELECT _t_contacts.name FROM contacts",
        "SELECT subject FROM _t_tickets t WHERE t.subject IS NOT NULL",
        "UPDATE contacts SET name = b.name FROM _t_contacts AS b WHERE true",
        "DELETE FROM tickets WHERE id IN (SELECT id FROM _t_tickets)",
        "SELECT sql FROM sqlite_master",
        "SELECT crm_rls_active() AS active",
        "SELECT pg_now() AS now",
    ],
)
def test_the_fakes_internal_names_exist_on_no_backend(
    db: ContractDB, alice: UUID, bobs_contact: UUID, query: str
) -> None:
    refused_as(db, alice, query)


@pytest.mark.parametrize(
    "query",
    [
        # PostgreSQL nests block comments; SQLite does not.
        "SELECT name /* /* */ FROM _t_contacts -- */ FROM contacts",
        "SELECT name FROM contacts /* /* */ , _t_contacts -- */",
        "SELECT name FROM contacts /* /* */ WHERE false UNION SELECT name FROM _t_contacts -- */",
    ],
)
def test_nested_comments_hide_nothing(
    db: ContractDB, alice: UUID, bobs_contact: UUID, query: str
) -> None:
    assert run_as(db, alice, query) == [{"name": "Ann"}]


# --- WITH queries and aliases resolve as in PostgreSQL ----------------------------------------


@pytest.mark.parametrize(
    ("query", "rows"),
    [
        ("WITH contacts AS (SELECT 'cte' AS name) SELECT name FROM contacts", [{"name": "cte"}]),
        (
            "WITH contacts AS (SELECT name FROM contacts) SELECT name FROM contacts",
            [{"name": "Ann"}],
        ),
        (
            (
                "SELECT name FROM contacts WHERE EXISTS "
                "(WITH contacts AS (SELECT 1 AS x) SELECT x FROM contacts)"
            ),
            [{"name": "Ann"}],
        ),
        (
            (
                "WITH a AS (SELECT 1 AS x) "
                "SELECT x FROM (WITH a AS (SELECT 'z' AS x) SELECT x FROM a) s"
            ),
            [{"x": "z"}],
        ),
        (
            (
                "WITH a AS (SELECT 1 AS x) "
                "SELECT x FROM a WHERE EXISTS (WITH a AS (SELECT 'z' AS x) SELECT x FROM a)"
            ),
            [{"x": 1}],
        ),
        (
            (
                "WITH a AS (SELECT 1 AS x) "
                "SELECT x FROM (WITH a AS (SELECT x + 1 AS x FROM a) SELECT x FROM a) s"
            ),
            [{"x": 2}],
        ),
        ("WITH a (p, q) AS (SELECT 1, 'x') SELECT * FROM a", [{"p": 1, "q": "x"}]),
        (
            "WITH tickets AS (SELECT name AS subject FROM contacts) SELECT subject FROM tickets",
            [{"subject": "Ann"}],
        ),
        ("SELECT tickets.name FROM contacts AS tickets", [{"name": "Ann"}]),
        ("SELECT count(*) AS n FROM tickets AS contacts", [{"n": 0}]),
    ],
)
def test_with_queries_and_aliases_resolve_as_in_postgresql(
    db: ContractDB, alice: UUID, bobs_contact: UUID, query: str, rows: list[dict[str, Any]]
) -> None:
    assert run_as(db, alice, query) == rows


@pytest.mark.parametrize(
    "query",
    [
        "SELECT x FROM a WHERE EXISTS (WITH a AS (SELECT 1 AS x) SELECT 1 FROM a)",
        "WITH a AS (SELECT x FROM b), b AS (SELECT 1 AS x) SELECT x FROM a",
        "WITH a AS (SELECT 1 AS x), a AS (SELECT 2 AS x) SELECT x FROM a",
        "WITH a (p, q) AS (SELECT 1) SELECT p FROM a",
        "UPDATE contacts c SET name = 'Ann' RETURNING contacts.name",
    ],
)
def test_names_out_of_scope_fail_on_every_backend(
    db: ContractDB, alice: UUID, bobs_contact: UUID, query: str
) -> None:
    refused_as(db, alice, query)


@pytest.mark.parametrize(
    ("query", "rows"),
    [
        # What INSERT, UPDATE and DELETE write is the table, never a WITH query of its name.
        (
            (
                "WITH contacts AS (SELECT %s AS name) INSERT INTO contacts (name) "
                "SELECT name FROM contacts RETURNING name"
            ),
            [{"name": "Amy"}],
        ),
        (
            (
                "WITH contacts AS (SELECT %s AS name) UPDATE contacts SET name = 'Ann' "
                "WHERE name IN (SELECT name FROM contacts) RETURNING name"
            ),
            [],
        ),
        (
            (
                "WITH contacts AS (SELECT %s AS name) DELETE FROM contacts "
                "WHERE name NOT IN (SELECT name FROM contacts) RETURNING name"
            ),
            [{"name": "Ann"}],
        ),
        # Aliases named like other tables retarget nothing.
        (
            (
                "UPDATE contacts AS c SET name = 'Ann' FROM contacts AS contacts "
                "WHERE c.id = contacts.id AND %s::text IS NOT NULL RETURNING c.name"
            ),
            [{"name": "Ann"}],
        ),
        (
            "DELETE FROM contacts AS tickets WHERE tickets.name <> %s RETURNING tickets.name",
            [{"name": "Ann"}],
        ),
        (
            (
                "INSERT INTO tickets (subject) SELECT subject FROM tickets WHERE subject <> %s "
                "RETURNING subject"
            ),
            [],
        ),
    ],
)
def test_writes_go_to_the_table_written_and_only_the_users_rows(
    db: ContractDB, alice: UUID, bobs_contact: UUID, query: str, rows: list[dict[str, Any]]
) -> None:
    assert run_as(db, alice, query, ("Amy",)) == rows


@pytest.mark.parametrize("where", ["contacts.name LIKE 'A%%'", "contacts.name LIKE 'B%%'", "false"])
def test_an_upsert_onto_another_users_row_fails_whatever_its_where(
    db: ContractDB, alice: UUID, bobs_contact: UUID, where: str
) -> None:
    # PostgreSQL checks the existing row against the policy before DO UPDATE's WHERE, so the
    # WHERE cannot tell what the row holds.
    query = (
        "INSERT INTO contacts (id, name) VALUES (%s, 'x') "
        f"ON CONFLICT (id) DO UPDATE SET name = 'y' WHERE {where}"
    )
    before = snapshot(db)
    with pytest.raises(RowSecurityError):
        db.execute(query, (bobs_contact,), user_id=alice)
    assert snapshot(db) == before


def test_a_with_query_named_like_a_table_works_on_the_admin_path(
    db: ContractDB, alice: UUID, bobs_contact: UUID
) -> None:
    query = "WITH contacts AS (SELECT name FROM contacts) SELECT count(*) AS n FROM contacts"
    assert db.execute_admin(query) == [{"n": 2}]


def test_the_next_call_for_another_user_is_unaffected(
    db: ContractDB, alice: UUID, bobs_contact: UUID
) -> None:
    bob = db.execute_admin("SELECT user_id FROM contacts WHERE id = %s", (bobs_contact,))[0][
        "user_id"
    ]
    for query in (
        "SELECT name FROM _t_contacts",
        "WITH contacts AS (SELECT 'cte' AS name) SELECT name FROM contacts",
        "SELECT name /* /* */ FROM _t_contacts -- */ FROM contacts",
    ):
        with contextlib.suppress(DatabaseError):
            db.execute(query, user_id=alice)
        assert db.execute("SELECT name FROM contacts", user_id=bob) == [{"name": SECRET}]
