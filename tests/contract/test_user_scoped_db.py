"""The UserScopedDB / AdminDB contract, run on every backend in ``conftest.DB_BACKENDS``.

Only port methods are used; users are created through the admin path, as the application
role may only read ``users``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from crm_infra import (
    DatabaseError,
    DatabaseInputError,
    IntegrityError,
    InvalidUserIdError,
    MissingUserContextError,
    NoRowsError,
    RowSecurityError,
    TransactionUsageError,
    UnsafeQueryError,
    user_context,
)
from crm_infra.ports import Params
from tests.contract.conftest import ContractDB


def make_user(db: ContractDB, email: str | None = None) -> UUID:
    user_id: UUID = db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (email or f"{uuid4()}@example.com",)
    )[0]["id"]
    return user_id


def add_contact(db: ContractDB, user: UUID, name: str) -> UUID:
    contact_id: UUID = db.execute_scalar(
        "INSERT INTO contacts (name) VALUES (%s) RETURNING id", (name,), user_id=user
    )
    return contact_id


@pytest.fixture
def alice(db: ContractDB) -> UUID:
    return make_user(db, "alice@example.com")


@pytest.fixture
def bob(db: ContractDB) -> UUID:
    return make_user(db, "bob@example.com")


# --- results ------------------------------------------------------------------------------


def test_execute_returns_rows_as_dicts(db: ContractDB, alice: UUID) -> None:
    add_contact(db, alice, "Ann")
    add_contact(db, alice, "Ben")
    rows = db.execute("SELECT name FROM contacts ORDER BY name", user_id=alice)
    assert rows == [{"name": "Ann"}, {"name": "Ben"}]


def test_execute_returns_empty_list_for_a_statement_without_result(
    db: ContractDB, alice: UUID
) -> None:
    assert db.execute("INSERT INTO contacts (name) VALUES (%s)", ("Ann",), user_id=alice) == []
    assert db.execute("SELECT name FROM contacts", user_id=alice) == [{"name": "Ann"}]


def test_execute_returns_empty_list_when_nothing_matches(db: ContractDB, alice: UUID) -> None:
    assert db.execute("SELECT * FROM contacts WHERE name = %s", ("x",), user_id=alice) == []


def test_insert_returning_fills_defaults_with_the_current_user(db: ContractDB, alice: UUID) -> None:
    row = db.execute_one(
        "INSERT INTO contacts (name) VALUES (%s) RETURNING id, user_id, created_at",
        ("Ann",),
        user_id=alice,
    )
    assert row is not None
    assert isinstance(row["id"], UUID)
    assert row["user_id"] == alice
    assert isinstance(row["created_at"], dt.datetime)
    assert row["created_at"].tzinfo is not None


def test_named_parameters(db: ContractDB, alice: UUID) -> None:
    add_contact(db, alice, "Ann")
    rows = db.execute(
        "SELECT name FROM contacts WHERE name = %(n)s OR name = %(n)s", {"n": "Ann"}, user_id=alice
    )
    assert rows == [{"name": "Ann"}]


def test_execute_one_returns_first_row_or_none(db: ContractDB, alice: UUID) -> None:
    add_contact(db, alice, "Ann")
    assert db.execute_one("SELECT name FROM contacts", user_id=alice) == {"name": "Ann"}
    assert db.execute_one("SELECT name FROM contacts WHERE false", user_id=alice) is None


def test_execute_scalar_returns_first_column(db: ContractDB, alice: UUID) -> None:
    add_contact(db, alice, "Ann")
    assert db.execute_scalar("SELECT count(*) AS n, 'x' AS y FROM contacts", user_id=alice) == 1


def test_execute_scalar_without_rows_raises_no_rows_error(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(NoRowsError) as caught:
        db.execute_scalar("SELECT name FROM contacts", user_id=alice)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, DatabaseError)


def test_returned_values_have_python_types(db: ContractDB, alice: UUID) -> None:
    row = db.execute_one(
        "INSERT INTO tickets (subject, urgent, estimated_value, priority) "
        "VALUES (%s, %s, %s, %s) RETURNING *",
        ("Hi", True, Decimal("12.50"), 2),
        user_id=alice,
    )
    assert row is not None
    assert isinstance(row["id"], UUID)
    assert row["urgent"] is True
    assert row["estimated_value"] == Decimal("12.50")
    assert isinstance(row["estimated_value"], Decimal)
    assert row["priority"] == 2
    assert row["status"] == "open"
    assert row["contact_id"] is None
    assert row["closed_at"] is None
    assert row["created_at"].utcoffset() is not None


# --- isolation ------------------------------------------------------------------------------


def test_a_user_sees_only_their_own_rows(db: ContractDB, alice: UUID, bob: UUID) -> None:
    add_contact(db, alice, "Ann")
    add_contact(db, bob, "Bea")
    assert db.execute("SELECT name FROM contacts", user_id=alice) == [{"name": "Ann"}]
    assert db.execute("SELECT name FROM contacts", user_id=bob) == [{"name": "Bea"}]


def test_a_user_cannot_read_another_users_row_by_id(db: ContractDB, alice: UUID, bob: UUID) -> None:
    bobs = add_contact(db, bob, "Bea")
    assert db.execute_one("SELECT * FROM contacts WHERE id = %s", (bobs,), user_id=alice) is None


def test_a_user_cannot_update_another_users_rows(db: ContractDB, alice: UUID, bob: UUID) -> None:
    bobs = add_contact(db, bob, "Bea")
    assert db.execute("UPDATE contacts SET name = 'x' RETURNING id", user_id=alice) == []
    db.execute("UPDATE contacts SET name = 'x' WHERE id = %s", (bobs,), user_id=alice)
    assert db.execute_admin("SELECT name FROM contacts WHERE id = %s", (bobs,)) == [{"name": "Bea"}]


def test_a_user_cannot_delete_another_users_rows(db: ContractDB, alice: UUID, bob: UUID) -> None:
    bobs = add_contact(db, bob, "Bea")
    assert db.execute("DELETE FROM contacts RETURNING id", user_id=alice) == []
    assert db.execute_admin("SELECT id FROM contacts") == [{"id": bobs}]


def test_a_user_cannot_insert_a_row_for_another_user(
    db: ContractDB, alice: UUID, bob: UUID
) -> None:
    with pytest.raises(RowSecurityError):
        db.execute(
            "INSERT INTO contacts (user_id, name) VALUES (%s, %s)", (bob, "Bea"), user_id=alice
        )
    assert db.execute_admin("SELECT * FROM contacts") == []


def test_an_explicit_null_user_id_is_refused_by_row_security(
    db: ContractDB, alice: UUID
) -> None:
    """The policy is checked before NOT NULL: the error is RowSecurityError, not Integrity."""
    with pytest.raises(RowSecurityError):
        db.execute("INSERT INTO contacts (user_id, name) VALUES (NULL, 'x')", user_id=alice)
    ann = add_contact(db, alice, "Ann")
    with pytest.raises(RowSecurityError):
        db.execute("UPDATE contacts SET user_id = NULL WHERE id = %s", (ann,), user_id=alice)


def test_another_users_row_id_cannot_be_reused(db: ContractDB, alice: UUID, bob: UUID) -> None:
    """Primary keys are unique across users (the row stays invisible and untouched)."""
    bobs = add_contact(db, bob, "Bea")
    with pytest.raises(IntegrityError):
        db.execute("INSERT INTO contacts (id, name) VALUES (%s, 'x')", (bobs,), user_id=alice)
    assert db.execute_admin("SELECT user_id, name FROM contacts") == [
        {"user_id": bob, "name": "Bea"}
    ]


def test_the_users_directory_is_read_only_for_users(db: ContractDB, alice: UUID) -> None:
    """Writing to ``users`` is refused by privileges: a plain DatabaseError."""
    for statement in (
        "INSERT INTO users (email) VALUES ('mallory@example.com')",
        "UPDATE users SET email = 'mallory@example.com'",
        "DELETE FROM users",
    ):
        with pytest.raises(DatabaseError) as caught:
            db.execute(statement, user_id=alice)
        assert not isinstance(caught.value, (RowSecurityError, IntegrityError))
    assert db.execute_admin("SELECT email FROM users") == [{"email": "alice@example.com"}]


def test_a_user_cannot_move_a_row_to_another_user(db: ContractDB, alice: UUID, bob: UUID) -> None:
    ann = add_contact(db, alice, "Ann")
    with pytest.raises(RowSecurityError):
        db.execute("UPDATE contacts SET user_id = %s WHERE id = %s", (bob, ann), user_id=alice)
    assert db.execute_admin("SELECT user_id FROM contacts") == [{"user_id": alice}]


def test_a_user_cannot_attach_an_address_to_another_users_contact(
    db: ContractDB, alice: UUID, bob: UUID
) -> None:
    bobs = add_contact(db, bob, "Bea")
    with pytest.raises(IntegrityError):
        db.execute(
            "INSERT INTO addresses (contact_id, city) VALUES (%s, %s)",
            (bobs, "Oslo"),
            user_id=alice,
        )
    assert db.execute_admin("SELECT * FROM addresses") == []


def test_a_user_cannot_attach_a_ticket_to_another_users_contact(
    db: ContractDB, alice: UUID, bob: UUID
) -> None:
    bobs = add_contact(db, bob, "Bea")
    with pytest.raises(IntegrityError):
        db.execute(
            "INSERT INTO tickets (contact_id, subject) VALUES (%s, %s)", (bobs, "Hi"), user_id=alice
        )
    assert db.execute_admin("SELECT * FROM tickets") == []


def test_joins_see_only_the_users_rows(db: ContractDB, alice: UUID, bob: UUID) -> None:
    for user, name, city in ((alice, "Ann", "Oslo"), (bob, "Bea", "Rome")):
        contact = add_contact(db, user, name)
        db.execute(
            "INSERT INTO addresses (contact_id, city) VALUES (%s, %s)",
            (contact, city),
            user_id=user,
        )
    rows = db.execute(
        "SELECT c.name, a.city FROM contacts c JOIN addresses a ON a.contact_id = c.id",
        user_id=alice,
    )
    assert rows == [{"name": "Ann", "city": "Oslo"}]
    assert db.execute_scalar("SELECT count(*) FROM addresses", user_id=alice) == 1


def test_every_user_may_read_the_users_directory(db: ContractDB, alice: UUID, bob: UUID) -> None:
    emails = db.execute("SELECT email FROM users ORDER BY email", user_id=alice)
    assert emails == [{"email": "alice@example.com"}, {"email": "bob@example.com"}]


def test_the_admin_path_sees_every_users_rows(db: ContractDB, alice: UUID, bob: UUID) -> None:
    add_contact(db, alice, "Ann")
    add_contact(db, bob, "Bea")
    rows = db.execute_admin("SELECT name FROM contacts ORDER BY name")
    assert rows == [{"name": "Ann"}, {"name": "Bea"}]


# --- the current user -------------------------------------------------------------------------


def test_no_user_and_no_context_raises_before_any_query(db: ContractDB, alice: UUID) -> None:
    add_contact(db, alice, "Ann")
    with pytest.raises(MissingUserContextError) as caught:
        db.execute("SELECT * FROM contacts")
    assert isinstance(caught.value, LookupError)
    with pytest.raises(MissingUserContextError), db.transaction():
        pass  # pragma: no cover - never entered


def test_user_context_is_the_default_user(db: ContractDB, alice: UUID, bob: UUID) -> None:
    add_contact(db, bob, "Bea")
    with user_context(alice):
        add_contact_no_user = db.execute_scalar(
            "INSERT INTO contacts (name) VALUES ('Ann') RETURNING user_id"
        )
        assert add_contact_no_user == alice
        assert db.execute("SELECT name FROM contacts") == [{"name": "Ann"}]
        with db.transaction() as tx:
            assert tx.execute("SELECT name FROM contacts") == [{"name": "Ann"}]


def test_an_explicit_user_wins_over_the_context(db: ContractDB, alice: UUID, bob: UUID) -> None:
    add_contact(db, bob, "Bea")
    with user_context(alice):
        assert db.execute("SELECT name FROM contacts", user_id=bob) == [{"name": "Bea"}]


@pytest.mark.parametrize("bad", ["", "not-a-uuid", "12345", 42])
def test_an_invalid_user_id_is_refused(db: ContractDB, bad: object) -> None:
    with pytest.raises(InvalidUserIdError) as caught:
        db.execute("SELECT 1", user_id=bad)  # type: ignore[arg-type]  # deliberately wrong
    assert isinstance(caught.value, ValueError)
    with pytest.raises(InvalidUserIdError), db.transaction(bad):  # type: ignore[arg-type]
        pass  # pragma: no cover - never entered


def test_a_user_id_string_works_like_the_uuid(db: ContractDB, alice: UUID) -> None:
    add_contact(db, alice, "Ann")
    assert db.execute("SELECT name FROM contacts", user_id=str(alice).upper()) == [{"name": "Ann"}]


def test_a_user_missing_from_the_directory_cannot_write(db: ContractDB) -> None:
    with pytest.raises(IntegrityError):
        db.execute("INSERT INTO contacts (name) VALUES ('Ann')", user_id=uuid4())


# --- constraint errors --------------------------------------------------------------------------


def test_not_null_violation_is_an_integrity_error(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(IntegrityError):
        db.execute("INSERT INTO tickets (subject, status) VALUES ('Hi', NULL)", user_id=alice)
    with pytest.raises(IntegrityError):
        db.execute_admin("INSERT INTO users (email) VALUES (NULL)")


def test_unique_violation_is_an_integrity_error(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(IntegrityError):
        db.execute_admin("INSERT INTO users (email) VALUES ('alice@example.com')")


def test_foreign_key_violation_is_an_integrity_error(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(IntegrityError):
        db.execute(
            "INSERT INTO addresses (contact_id, city) VALUES (%s, 'Oslo')",
            (uuid4(),),
            user_id=alice,
        )


def test_check_violation_is_an_integrity_error(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(IntegrityError):
        db.execute("INSERT INTO tickets (subject, status) VALUES ('Hi', 'bogus')", user_id=alice)


def test_closed_is_an_allowed_ticket_status(db: ContractDB, alice: UUID) -> None:
    ticket = db.execute_scalar(
        "INSERT INTO tickets (subject) VALUES ('Hi') RETURNING id", user_id=alice
    )
    db.execute("UPDATE tickets SET status = 'closed' WHERE id = %s", (ticket,), user_id=alice)
    assert db.execute_scalar("SELECT status FROM tickets", user_id=alice) == "closed"


# --- transactions ---------------------------------------------------------------------------------


def test_a_transaction_commits_on_normal_exit(db: ContractDB, alice: UUID) -> None:
    with db.transaction(alice) as tx:
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        tx.execute("INSERT INTO contacts (name) VALUES ('Ben')")
        assert tx.execute_scalar("SELECT count(*) FROM contacts") == 2
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=alice) == 2


def test_a_transaction_rolls_back_on_an_exception(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(RuntimeError, match="boom"), db.transaction(alice) as tx:  # noqa: PT012 - the transaction body is what is tested
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        raise RuntimeError("boom")
    assert db.execute("SELECT * FROM contacts", user_id=alice) == []


def test_a_failed_statement_rolls_back_the_whole_transaction(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(IntegrityError), db.transaction(alice) as tx:  # noqa: PT012 - the transaction body is what is tested
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        tx.execute("INSERT INTO tickets (subject, status) VALUES ('Hi', 'bogus')")
    assert db.execute("SELECT * FROM contacts", user_id=alice) == []


def test_transaction_handle_offers_one_and_scalar(db: ContractDB, alice: UUID) -> None:
    with db.transaction(alice) as tx:
        assert tx.execute_one("SELECT name FROM contacts") is None
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        assert tx.execute_one("SELECT name FROM contacts") == {"name": "Ann"}
        with pytest.raises(NoRowsError):
            tx.execute_scalar("SELECT name FROM contacts WHERE false")


def test_a_transaction_sees_only_its_users_rows(db: ContractDB, alice: UUID, bob: UUID) -> None:
    add_contact(db, bob, "Bea")
    with db.transaction(alice) as tx:
        assert tx.execute("SELECT * FROM contacts") == []
        with pytest.raises(RowSecurityError), db.transaction(alice) as inner:
            inner.execute("INSERT INTO contacts (user_id, name) VALUES (%s, 'x')", (bob,))
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
    assert db.execute("SELECT name FROM contacts", user_id=alice) == [{"name": "Ann"}]


def test_an_error_swallowed_without_a_savepoint_aborts_the_transaction(
    db: ContractDB, alice: UUID
) -> None:
    """After a failed statement only a savepoint can recover; the block's exit says so."""
    with pytest.raises(TransactionUsageError), db.transaction(alice) as tx:  # noqa: PT012 - the transaction body is what is tested
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(IntegrityError):
            tx.execute("INSERT INTO tickets (subject, status) VALUES ('Hi', 'bogus')")
        with pytest.raises(DatabaseError):
            tx.execute("SELECT 1")
    assert db.execute("SELECT * FROM contacts", user_id=alice) == []


def test_nesting_for_the_same_user_is_a_savepoint(db: ContractDB, alice: UUID) -> None:
    with db.transaction(alice) as outer:
        outer.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(RuntimeError), db.transaction(alice) as inner:  # noqa: PT012 - the transaction body is what is tested
            inner.execute("INSERT INTO contacts (name) VALUES ('Ben')")
            raise RuntimeError("inner fails")
        with db.transaction(alice) as inner:
            inner.execute("INSERT INTO contacts (name) VALUES ('Cid')")
        assert outer.execute("SELECT name FROM contacts ORDER BY name") == [
            {"name": "Ann"},
            {"name": "Cid"},
        ]
    rows = db.execute("SELECT name FROM contacts ORDER BY name", user_id=alice)
    assert rows == [{"name": "Ann"}, {"name": "Cid"}]


def test_a_savepoint_recovers_from_a_failed_statement(db: ContractDB, alice: UUID) -> None:
    with db.transaction(alice) as outer:
        outer.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(IntegrityError), db.transaction(alice) as inner:
            inner.execute("INSERT INTO tickets (subject, status) VALUES ('Hi', 'bogus')")
        outer.execute("INSERT INTO contacts (name) VALUES ('Ben')")
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=alice) == 2


def test_nesting_for_another_user_is_refused(db: ContractDB, alice: UUID, bob: UUID) -> None:
    with db.transaction(alice) as outer:
        outer.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(TransactionUsageError), db.transaction(bob):
            pass  # pragma: no cover - never entered
        outer.execute("INSERT INTO contacts (name) VALUES ('Ben')")
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=alice) == 2
    assert db.execute("SELECT * FROM contacts", user_id=bob) == []


def test_a_handle_cannot_be_used_after_its_block(db: ContractDB, alice: UUID) -> None:
    with db.transaction(alice) as tx:
        tx.execute("SELECT 1")
    with pytest.raises(TransactionUsageError):
        tx.execute("SELECT 1")


def test_an_empty_transaction_is_fine(db: ContractDB, alice: UUID) -> None:
    with db.transaction(alice):
        pass
    assert db.execute("SELECT * FROM contacts", user_id=alice) == []


# --- the admin path -----------------------------------------------------------------------------


def test_admin_transaction_commits_and_rolls_back(db: ContractDB) -> None:
    with db.admin_transaction() as tx:
        tx.execute("INSERT INTO users (email) VALUES ('a@example.com')")
    with pytest.raises(RuntimeError), db.admin_transaction() as tx:  # noqa: PT012 - the transaction body is what is tested
        tx.execute("INSERT INTO users (email) VALUES ('b@example.com')")
        raise RuntimeError("boom")
    assert db.execute_admin("SELECT email FROM users") == [{"email": "a@example.com"}]


def test_admin_execute_returns_empty_list_without_result(db: ContractDB) -> None:
    assert db.execute_admin("INSERT INTO users (email) VALUES (%s)", ("a@example.com",)) == []


def test_health_check_returns_true(db: ContractDB) -> None:
    assert db.health_check() is True


# --- statement text -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix",
    [
        " -- a trailing line comment",
        "\n-- a comment on its own line",
        " /* a block comment */",
        " /* a block comment */ -- and a line comment",
        "",  # no trailing newline, no comment
        ";  -- after a semicolon",
    ],
)
def test_a_trailing_comment_does_not_drop_the_statement(
    db: ContractDB, alice: UUID, suffix: str
) -> None:
    # The same text twice: the first call may prepare it, the second reuses the plan.
    for name in ("Ann", "Ben"):
        rows = db.execute(
            "INSERT INTO contacts (name) VALUES (%s) RETURNING name" + suffix,
            (name,),
            user_id=alice,
        )
        assert rows == [{"name": name}]
    assert db.execute("SELECT name FROM contacts ORDER BY name" + suffix, user_id=alice) == [
        {"name": "Ann"},
        {"name": "Ben"},
    ]
    with db.transaction(alice) as tx:
        assert tx.execute("SELECT count(*) AS n FROM contacts" + suffix) == [{"n": 2}]
        tx.execute("INSERT INTO contacts (name) VALUES (%s)" + suffix, ("Cid",))
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=alice) == 3


# --- transactions whose statements fail ------------------------------------------------------


def test_a_savepoint_rolled_back_last_keeps_the_outer_work(db: ContractDB, alice: UUID) -> None:
    with db.transaction(alice) as outer:
        outer.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(IntegrityError), db.transaction(alice) as inner:
            inner.execute("INSERT INTO tickets (subject, status) VALUES ('Hi', 'bogus')")
    assert db.execute("SELECT name FROM contacts", user_id=alice) == [{"name": "Ann"}]


def test_a_savepoint_left_by_an_exception_last_keeps_the_outer_work(
    db: ContractDB, alice: UUID
) -> None:
    with db.transaction(alice) as outer:
        outer.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(RuntimeError), db.transaction(alice) as inner:  # noqa: PT012 - the transaction body is what is tested
            inner.execute("INSERT INTO contacts (name) VALUES ('Ben')")
            raise RuntimeError("inner fails")
    assert db.execute("SELECT name FROM contacts", user_id=alice) == [{"name": "Ann"}]


def test_outer_work_around_a_failed_savepoint_is_all_committed(
    db: ContractDB, alice: UUID
) -> None:
    with db.transaction(alice) as outer:
        outer.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(IntegrityError), db.transaction(alice) as inner:
            inner.execute("INSERT INTO tickets (subject, status) VALUES ('Hi', 'bogus')")
        outer.execute("INSERT INTO contacts (name) VALUES ('Ben')")
    rows = db.execute("SELECT name FROM contacts ORDER BY name", user_id=alice)
    assert rows == [{"name": "Ann"}, {"name": "Ben"}]


# Rejected before it runs: a syntax error (the server parses the whole message first) and a
# parameter count that does not match (refused by the client).
_REFUSED_FIRST = [
    pytest.param("SELEC name FROM contacts", (), id="syntax-error"),
    pytest.param("SELECT name FROM contacts WHERE name = %s", ("a", "b"), id="param-count"),
]


@pytest.mark.parametrize(("query", "params"), _REFUSED_FIRST)
def test_a_failed_first_statement_aborts_the_transaction(
    db: ContractDB, alice: UUID, bob: UUID, query: str, params: tuple[str, ...]
) -> None:
    add_contact(db, alice, "Ann")
    add_contact(db, bob, "Bea")
    with pytest.raises(TransactionUsageError), db.transaction(alice) as tx:  # noqa: PT012 - the transaction body is what is tested
        with pytest.raises(DatabaseError):
            tx.execute(query, params)
        # Nothing later runs: not outside the transaction, not without the user.
        with pytest.raises(DatabaseError):
            tx.execute("SELECT name FROM contacts")
        with pytest.raises(DatabaseError):
            tx.execute("INSERT INTO contacts (name) VALUES ('Cid')")
    assert db.execute("SELECT name FROM contacts", user_id=alice) == [{"name": "Ann"}]
    assert db.execute("SELECT name FROM contacts", user_id=bob) == [{"name": "Bea"}]


@pytest.mark.parametrize(("query", "params"), _REFUSED_FIRST)
def test_a_savepoint_recovers_from_a_failed_first_statement(
    db: ContractDB, alice: UUID, bob: UUID, query: str, params: tuple[str, ...]
) -> None:
    add_contact(db, bob, "Bea")
    with db.transaction(alice) as outer:
        with pytest.raises(DatabaseError), db.transaction(alice) as inner:
            inner.execute(query, params)
        assert outer.execute("SELECT name FROM contacts") == []
        outer.execute("INSERT INTO contacts (name) VALUES ('Ann')")
    assert db.execute("SELECT name FROM contacts", user_id=alice) == [{"name": "Ann"}]


# Refused by psycopg before anything is sent (its ProgrammingError): the client treats each
# like a failed statement.
_REFUSED_BY_PSYCOPG = [
    pytest.param("SELECT %s, %(n)s", {"n": 1}, id="mixed-placeholders"),
    pytest.param("SELECT %(n)s, %(m)s", {"n": 1}, id="missing-key"),
    pytest.param("SELECT %d", (1,), id="bad-placeholder"),
    pytest.param("SELECT %s", ({"a": 1},), id="unadaptable-dict"),
    pytest.param("SELECT %s", (object(),), id="unadaptable-object"),
]


@pytest.mark.parametrize(("query", "params"), [*_REFUSED_FIRST, *_REFUSED_BY_PSYCOPG])
def test_a_refused_statement_aborts_a_begun_transaction(
    db: ContractDB, alice: UUID, query: str, params: Params
) -> None:
    with pytest.raises(TransactionUsageError), db.transaction(alice) as tx:  # noqa: PT012 - the transaction body is what is tested
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(DatabaseError):
            tx.execute(query, params)
        with pytest.raises(DatabaseError):
            tx.execute("SELECT 1")
    assert db.execute("SELECT name FROM contacts", user_id=alice) == []


@pytest.mark.parametrize(("query", "params"), [*_REFUSED_FIRST, *_REFUSED_BY_PSYCOPG])
def test_a_refused_statement_aborts_only_its_savepoint(
    db: ContractDB, alice: UUID, query: str, params: Params
) -> None:
    with db.transaction(alice) as outer:
        outer.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(DatabaseError), db.transaction(alice) as inner:
            inner.execute(query, params)
        outer.execute("INSERT INTO contacts (name) VALUES ('Ben')")
    rows = db.execute("SELECT name FROM contacts ORDER BY name", user_id=alice)
    assert rows == [{"name": "Ann"}, {"name": "Ben"}]


# Parameters of the wrong kind for the placeholders: psycopg raises TypeError before
# anything is sent, and the transaction goes on.
_WRONG_KIND_OF_PARAMS = [
    pytest.param("SELECT %s", {"n": 1}, id="mapping-for-positional"),
    pytest.param("SELECT %(n)s", (1,), id="sequence-for-named"),
    pytest.param("SELECT %s", "b", id="string-as-params"),
]


@pytest.mark.parametrize(("query", "params"), _WRONG_KIND_OF_PARAMS)
def test_parameters_of_the_wrong_kind_do_not_abort_a_begun_transaction(
    db: ContractDB, alice: UUID, query: str, params: Params
) -> None:
    with db.transaction(alice) as tx:
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(TypeError):
            tx.execute(query, params)
        tx.execute("INSERT INTO contacts (name) VALUES ('Ben')")
    rows = db.execute("SELECT name FROM contacts ORDER BY name", user_id=alice)
    assert rows == [{"name": "Ann"}, {"name": "Ben"}]


@pytest.mark.parametrize(("query", "params"), _WRONG_KIND_OF_PARAMS)
def test_parameters_of_the_wrong_kind_first_do_not_break_the_transaction(
    db: ContractDB, alice: UUID, query: str, params: Params
) -> None:
    # Nothing was sent, so the transaction has not begun: the next statement begins it, as
    # this user, and both inserts commit together.
    with db.transaction(alice) as tx:
        with pytest.raises(TypeError):
            tx.execute(query, params)
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        tx.execute("INSERT INTO contacts (name) VALUES ('Ben')")
    rows = db.execute("SELECT name FROM contacts ORDER BY name", user_id=alice)
    assert rows == [{"name": "Ann"}, {"name": "Ben"}]


def test_a_string_as_params_is_refused_outside_a_transaction(
    db: ContractDB, alice: UUID
) -> None:
    with pytest.raises(TypeError):
        db.execute("SELECT %s AS v", "b", user_id=alice)


def test_a_savepoint_recovers_from_a_statement_refused_by_the_client(
    db: ContractDB, alice: UUID
) -> None:
    with db.transaction(alice) as outer:
        outer.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(DatabaseError), db.transaction(alice) as inner:  # noqa: PT012 - the transaction body is what is tested
            inner.execute("INSERT INTO contacts (name) VALUES ('Ben')")
            inner.execute("SELECT name FROM contacts WHERE name = %s", ("a", "b"))
        outer.execute("INSERT INTO contacts (name) VALUES ('Cid')")
    rows = db.execute("SELECT name FROM contacts ORDER BY name", user_id=alice)
    assert rows == [{"name": "Ann"}, {"name": "Cid"}]


# SQL that would change who the statement runs as: the client sets the user itself, so
# user-scoped SQL that sets it again (or switches roles) is refused before any I/O; inside a
# transaction the refusal aborts it, as a failed statement would.
_IDENTITY_CHANGES = [
    "SELECT set_config('app.current_user_id', %s, false), (SELECT count(*) FROM contacts)",
    "SELECT SET_CONFIG('app.current_user_id', %s, true) AS x",
    "SET app.current_user_id = %s",
    "SET LOCAL app.current_user_id TO %s",
    "SET SESSION app.current_user_id = %s",
    'SELECT "set_config"(\'app.current_user_id\', %s, true) AS x',
    "SELECT pg_catalog.\"set_config\"('app.current_user_id', %s, true) AS x",
    "DO $$BEGIN PERFORM set_config('app.current_user_id', %s, true); END$$",
]


@pytest.mark.parametrize("query", _IDENTITY_CHANGES)
def test_user_scoped_sql_cannot_set_the_user_itself(
    db: ContractDB, alice: UUID, bob: UUID, query: str
) -> None:
    add_contact(db, bob, "Bea")
    with pytest.raises(UnsafeQueryError):
        db.execute(query, (str(bob),), user_id=alice)
    with (
        pytest.raises(TransactionUsageError),
        db.transaction(alice) as tx,
        pytest.raises(UnsafeQueryError),
    ):
        tx.execute(query, (str(bob),))
    assert db.execute("SELECT name FROM contacts", user_id=alice) == []


def test_reading_the_current_user_setting_is_allowed(db: ContractDB, alice: UUID) -> None:
    value = db.execute_scalar(
        "SELECT current_setting('app.current_user_id', true) AS me", user_id=alice
    )
    assert value == str(alice)


def test_text_that_only_mentions_set_config_in_a_literal_is_fine(
    db: ContractDB, alice: UUID
) -> None:
    db.execute("INSERT INTO contacts (name) VALUES ('set_config(x)')", user_id=alice)
    assert db.execute("SELECT name FROM contacts", user_id=alice) == [{"name": "set_config(x)"}]


# libpq ends SQL text at a NUL byte: "DELETE FROM contacts\0 WHERE ..." would delete every
# row. Such text is refused before anything runs.
def test_sql_text_with_a_nul_byte_is_refused_and_changes_nothing(
    db: ContractDB, alice: UUID
) -> None:
    keep = add_contact(db, alice, "Ann")
    other = add_contact(db, alice, "Ben")
    with pytest.raises(DatabaseInputError, match="NUL"):
        db.execute("DELETE FROM contacts\x00 WHERE id = %s", (other,), user_id=alice)
    rows = db.execute("SELECT id FROM contacts ORDER BY name", user_id=alice)
    assert [r["id"] for r in rows] == [keep, other]


def test_a_nul_byte_in_sql_text_aborts_the_transaction_it_is_sent_in(
    db: ContractDB, alice: UUID
) -> None:
    with pytest.raises(TransactionUsageError), db.transaction(alice) as tx:  # noqa: PT012 - the block body is what is tested
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(DatabaseInputError):
            tx.execute("DELETE FROM contacts\x00 WHERE name = 'Ann'")
    assert db.execute("SELECT name FROM contacts", user_id=alice) == []


# What user-scoped SQL would leave on a pooled connection for the next user is refused before
# any I/O: temporary tables have no row-level security, and a session-level SET outlives the
# call. Session control of any kind (SET LOCAL too) is not user-scoped SQL.
@pytest.mark.parametrize(
    "query",
    [
        "CREATE TEMP TABLE staging (name text)",
        "CREATE TEMPORARY TABLE staging AS SELECT name FROM contacts",
        "DECLARE held CURSOR WITH HOLD FOR SELECT name FROM contacts",
        'DECLARE "h;x" CURSOR WITH HOLD FOR SELECT name FROM contacts',
        "PREPARE mine AS SELECT name FROM contacts",
        "DEALLOCATE ALL",
        "LISTEN crm_events",
        "SELECT pg_advisory_lock(42)",
        "SET statement_timeout = 0",
        "SET SESSION search_path = public",
    ],
)
def test_user_scoped_sql_cannot_leave_state_for_the_next_user(
    db: ContractDB, alice: UUID, query: str
) -> None:
    with pytest.raises(UnsafeQueryError):
        db.execute(query, user_id=alice)
    with (
        pytest.raises(TransactionUsageError),
        db.transaction(alice) as tx,
        pytest.raises(UnsafeQueryError),
    ):
        tx.execute(query)
