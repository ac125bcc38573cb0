"""InMemoryUserScopedDB on its own: row-level security, grants, transactions, threads, types."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from crm_infra import (
    DatabaseError,
    IntegrityError,
    InvalidUserIdError,
    MissingUserContextError,
    NoRowsError,
    RowSecurityError,
    TransactionUsageError,
    UnsafeQueryError,
    UnsupportedQueryError,
    user_context,
)
from crm_infra.fakes import InMemoryUserScopedDB
from crm_infra.schema_files import default_sql_dir

ALICE = UUID("00000000-0000-4000-8000-00000000000a")
BOB = UUID("00000000-0000-4000-8000-00000000000b")


@pytest.fixture
def db() -> Iterator[InMemoryUserScopedDB]:
    fake = InMemoryUserScopedDB()
    for user, email in ((ALICE, "alice@example.com"), (BOB, "bob@example.com")):
        fake.execute_admin("INSERT INTO users (id, email) VALUES (%s, %s)", (user, email))
    yield fake
    fake.close()


def add_contact(db: InMemoryUserScopedDB, user: UUID, name: str) -> UUID:
    contact_id: UUID = db.execute_scalar(
        "INSERT INTO contacts (name) VALUES (%s) RETURNING id", (name,), user_id=user
    )
    return contact_id


# --- row-level security ----------------------------------------------------------------------


def test_a_user_sees_only_their_own_rows(db: InMemoryUserScopedDB) -> None:
    add_contact(db, ALICE, "Ann")
    add_contact(db, BOB, "Ben")
    assert [r["name"] for r in db.execute("SELECT name FROM contacts", user_id=ALICE)] == ["Ann"]
    assert [r["name"] for r in db.execute("SELECT name FROM contacts", user_id=BOB)] == ["Ben"]


def test_the_admin_path_sees_every_users_rows(db: InMemoryUserScopedDB) -> None:
    add_contact(db, ALICE, "Ann")
    add_contact(db, BOB, "Ben")
    names = db.execute_admin("SELECT name FROM contacts ORDER BY name")
    assert [r["name"] for r in names] == ["Ann", "Ben"]


def test_user_id_defaults_to_the_current_rls_user(db: InMemoryUserScopedDB) -> None:
    row = db.execute_one("INSERT INTO contacts (name) VALUES ('Ann') RETURNING user_id", (), ALICE)
    assert row == {"user_id": ALICE}


def test_inserting_a_row_for_another_user_is_refused(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(RowSecurityError, match="row-level security"):
        db.execute("INSERT INTO contacts (user_id, name) VALUES (%s, 'x')", (BOB,), user_id=ALICE)
    assert db.execute_admin("SELECT count(*) AS n FROM contacts") == [{"n": 0}]


def test_moving_a_row_to_another_user_is_refused(db: InMemoryUserScopedDB) -> None:
    contact = add_contact(db, ALICE, "Ann")
    with pytest.raises(RowSecurityError):
        db.execute("UPDATE contacts SET user_id = %s WHERE id = %s", (BOB, contact), ALICE)


def test_updates_and_deletes_do_not_reach_other_users_rows(db: InMemoryUserScopedDB) -> None:
    contact = add_contact(db, ALICE, "Ann")
    assert db.execute("UPDATE contacts SET name = 'x' RETURNING id", user_id=BOB) == []
    assert db.execute("DELETE FROM contacts WHERE id = %s RETURNING id", (contact,), BOB) == []
    assert db.execute_scalar("SELECT name FROM contacts", user_id=ALICE) == "Ann"


def test_an_upsert_onto_another_users_row_is_refused(db: InMemoryUserScopedDB) -> None:
    contact = add_contact(db, ALICE, "Ann")
    upsert = (
        "INSERT INTO contacts (id, name) VALUES (%s, 'x') "
        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name"
    )
    with pytest.raises(RowSecurityError):
        db.execute(upsert, (contact,), user_id=BOB)
    nothing = "INSERT INTO contacts (id, name) VALUES (%s, 'x') ON CONFLICT (id) DO NOTHING"
    assert db.execute(nothing, (contact,), user_id=BOB) == []
    assert db.execute_scalar("SELECT name FROM contacts", user_id=ALICE) == "Ann"


def test_a_child_row_cannot_point_at_another_users_contact(db: InMemoryUserScopedDB) -> None:
    contact = add_contact(db, BOB, "Ben")
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        db.execute(
            "INSERT INTO tickets (contact_id, subject) VALUES (%s, 'hi')", (contact,), ALICE
        )


def test_subqueries_and_joins_see_only_the_users_rows(db: InMemoryUserScopedDB) -> None:
    add_contact(db, BOB, "Ben")
    assert db.execute_scalar("SELECT (SELECT count(*) FROM contacts) AS n", (), ALICE) == 0
    joined = "SELECT c.name FROM contacts c JOIN contacts d ON d.id = c.id"
    assert db.execute(joined, user_id=ALICE) == []


def test_the_base_tables_are_not_reachable_by_name(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(UnsafeQueryError, match="may not use _t_contacts: it is a name internal"):
        db.execute("SELECT * FROM _t_contacts", user_id=ALICE)
    with pytest.raises(DatabaseError, match="_t_contacts is a name internal"):
        db.execute_admin("SELECT * FROM _t_contacts")


def test_the_app_role_may_read_but_not_write_users(db: InMemoryUserScopedDB) -> None:
    assert db.execute_scalar("SELECT count(*) FROM users", user_id=ALICE) == 2
    for statement in (
        "INSERT INTO users (email) VALUES ('c@example.com')",
        "UPDATE users SET display_name = 'x'",
        "DELETE FROM users",
    ):
        with pytest.raises(DatabaseError, match="permission denied for table users") as caught:
            db.execute(statement, user_id=ALICE)
        # PostgreSQL reports a missing grant as SQLSTATE 42501 without "row-level security".
        assert not isinstance(caught.value, RowSecurityError)


def test_no_user_means_an_error_before_any_work(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(MissingUserContextError):
        db.execute("SELECT * FROM contacts")
    with pytest.raises(InvalidUserIdError):
        db.execute("SELECT * FROM contacts", user_id="")
    with pytest.raises(MissingUserContextError):
        db.transaction()


def test_the_current_user_context_is_used(db: InMemoryUserScopedDB) -> None:
    add_contact(db, BOB, "Ben")
    with user_context(BOB):
        assert db.execute_scalar("SELECT name FROM contacts") == "Ben"


def test_admin_writes_need_an_explicit_user_id(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(IntegrityError, match="NOT NULL"):
        db.execute_admin("INSERT INTO contacts (name) VALUES ('orphan')")


# --- constraints and types -------------------------------------------------------------------


def test_constraint_violations_are_integrity_errors(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(IntegrityError, match="UNIQUE"):
        db.execute_admin("INSERT INTO users (email) VALUES ('alice@example.com')")
    with pytest.raises(IntegrityError, match="CHECK"):
        db.execute("INSERT INTO tickets (subject, status) VALUES ('s', 'lost')", user_id=ALICE)
    with pytest.raises(IntegrityError, match="NOT NULL"):
        db.execute("INSERT INTO tickets (subject, status) VALUES ('s', NULL)", user_id=ALICE)


def test_rows_have_psycopgs_python_types(db: InMemoryUserScopedDB) -> None:
    contact = add_contact(db, ALICE, "Ann")
    row = db.execute_one(
        "INSERT INTO tickets (contact_id, subject, estimated_value, priority) "
        "VALUES (%s, 'hi', %s, 2) RETURNING *",
        (contact, Decimal("10.5")),
        user_id=ALICE,
    )
    assert row is not None
    assert row["id"].version == 4
    assert row["user_id"] == ALICE
    assert row["contact_id"] == contact
    assert row["estimated_value"] == Decimal("10.50")
    assert str(row["estimated_value"]) == "10.50"
    assert row["urgent"] is False
    assert row["priority"] == 2
    assert row["closed_at"] is None
    created = row["created_at"]
    assert isinstance(created, datetime)
    assert created.utcoffset() == timedelta(0)


def test_numeric_rounds_to_its_scale_and_refuses_overflow(db: InMemoryUserScopedDB) -> None:
    insert = (
        "INSERT INTO tickets (subject, estimated_value) VALUES ('s', %s) "
        "RETURNING estimated_value"
    )
    assert db.execute_scalar(insert, (Decimal("1.005"),), ALICE) == Decimal("1.01")
    with pytest.raises(DatabaseError, match="overflow"):
        db.execute(insert, (Decimal("10000000000"),), user_id=ALICE)


def test_sum_of_numeric_is_exact(db: InMemoryUserScopedDB) -> None:
    insert = "INSERT INTO tickets (subject, estimated_value) VALUES ('s', %s)"
    for value in ("0.10", "0.20", "0.30"):
        db.execute(insert, (Decimal(value),), user_id=ALICE)
    assert db.execute_scalar("SELECT sum(estimated_value) FROM tickets", (), ALICE) == Decimal(
        "0.60"
    )


def test_timestamps_round_trip_as_aware_utc(db: InMemoryUserScopedDB) -> None:
    local = datetime(2024, 3, 1, 9, 30, tzinfo=UTC).astimezone()
    closed = db.execute_scalar(
        "INSERT INTO tickets (subject, closed_at) VALUES ('s', %s) RETURNING closed_at",
        (local,),
        ALICE,
    )
    assert closed == local
    assert closed.tzinfo is UTC


def test_naive_datetimes_are_refused(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(UnsupportedQueryError, match="naive datetime"):
        db.execute("SELECT id FROM tickets WHERE closed_at < %s", (datetime(2024, 1, 1),), ALICE)


def test_now_is_frozen_for_the_whole_transaction(db: InMemoryUserScopedDB) -> None:
    ticks = iter(datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=s) for s in range(100))
    fake = InMemoryUserScopedDB(clock=lambda: next(ticks))
    fake.execute_admin("INSERT INTO users (id, email) VALUES (%s, 'a@example.com')", (ALICE,))
    with fake.transaction(ALICE) as tx:
        first = tx.execute_scalar("SELECT now()")
        created = tx.execute_scalar("INSERT INTO contacts (name) VALUES ('a') RETURNING created_at")
        assert tx.execute_scalar("SELECT now()") == first == created
    assert fake.execute_scalar("SELECT now()", user_id=ALICE) > first


def test_malformed_uuid_parameters_fail_like_postgresql(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(DatabaseError, match="invalid input syntax for type uuid"):
        db.execute("SELECT * FROM contacts WHERE id = %s", ("nope",), user_id=ALICE)
    contact = add_contact(db, ALICE, "Ann")
    found = db.execute("SELECT name FROM contacts WHERE id = %s", (str(contact).upper(),), ALICE)
    assert found == [{"name": "Ann"}]


# --- transactions ----------------------------------------------------------------------------


def test_a_transaction_commits_on_normal_exit(db: InMemoryUserScopedDB) -> None:
    with db.transaction(ALICE) as tx:
        tx.execute("INSERT INTO contacts (name) VALUES ('a')")
        assert tx.execute_scalar("SELECT count(*) FROM contacts") == 1
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=ALICE) == 1


def test_a_transaction_rolls_back_on_an_exception(db: InMemoryUserScopedDB) -> None:
    def fail_inside() -> None:
        with db.transaction(ALICE) as tx:
            tx.execute("INSERT INTO contacts (name) VALUES ('a')")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_inside()
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=ALICE) == 0


def test_a_failed_statement_aborts_the_transaction(db: InMemoryUserScopedDB) -> None:
    def swallow_an_error() -> None:
        with db.transaction(ALICE) as tx:
            tx.execute("INSERT INTO contacts (name) VALUES ('a')")
            with pytest.raises(IntegrityError):
                tx.execute("INSERT INTO tickets (subject, priority) VALUES ('s', 99)")
            with pytest.raises(DatabaseError, match="current transaction is aborted"):
                tx.execute("SELECT 1")

    with pytest.raises(TransactionUsageError, match="rolled back"):
        swallow_an_error()
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=ALICE) == 0


def test_a_parameter_count_mismatch_aborts_the_transaction(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(TransactionUsageError), db.transaction(ALICE) as tx:  # noqa: PT012 - the transaction body is what is tested
        tx.execute("INSERT INTO contacts (name) VALUES ('a')")
        with pytest.raises(DatabaseError, match="placeholders"):
            tx.execute("SELECT %s", (1, 2))
        with pytest.raises(DatabaseError, match="current transaction is aborted"):
            tx.execute("INSERT INTO contacts (name) VALUES ('b')")
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=ALICE) == 0


def test_params_of_the_wrong_kind_raise_type_error_and_do_not_abort(
    db: InMemoryUserScopedDB,
) -> None:
    with db.transaction(ALICE) as tx:
        tx.execute("INSERT INTO contacts (name) VALUES ('a')")
        with pytest.raises(TypeError, match="sequence or a mapping"):
            tx.execute("SELECT %s", "b")
        tx.execute("INSERT INTO contacts (name) VALUES ('b')")
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=ALICE) == 2


def test_an_admin_savepoint_left_aborted_fails_on_exit(db: InMemoryUserScopedDB) -> None:
    with db.admin_transaction() as outer:
        outer.execute("INSERT INTO users (email) VALUES ('c@example.com')")
        with (
            pytest.raises(TransactionUsageError),
            db.admin_transaction() as inner,
            pytest.raises(IntegrityError),
        ):
            inner.execute("INSERT INTO users (email) VALUES ('c@example.com')")
        outer.execute("INSERT INTO users (email) VALUES ('d@example.com')")
    assert db.execute_admin("SELECT count(*) AS n FROM users") == [{"n": 4}]


def test_nesting_for_the_same_user_is_a_savepoint(db: InMemoryUserScopedDB) -> None:
    with db.transaction(ALICE) as outer:
        outer.execute("INSERT INTO contacts (name) VALUES ('kept')")

        def fail_inside() -> None:
            with db.transaction(ALICE) as inner:
                inner.execute("INSERT INTO contacts (name) VALUES ('dropped')")
                inner.execute("INSERT INTO tickets (subject, priority) VALUES ('s', 99)")

        with pytest.raises(IntegrityError):
            fail_inside()
        outer.execute("INSERT INTO contacts (name) VALUES ('after')")
    names = db.execute("SELECT name FROM contacts ORDER BY name", user_id=ALICE)
    assert names == [{"name": "after"}, {"name": "kept"}]


def test_nesting_for_another_user_is_refused(db: InMemoryUserScopedDB) -> None:
    with db.transaction(ALICE), pytest.raises(TransactionUsageError):
        db.transaction(BOB).__enter__()
    with db.admin_transaction(), pytest.raises(TransactionUsageError):
        db.transaction(ALICE).__enter__()


def test_autocommit_calls_inside_a_transaction_are_refused(db: InMemoryUserScopedDB) -> None:
    with db.transaction(ALICE), pytest.raises(TransactionUsageError, match="handle"):
        db.execute("SELECT 1", user_id=ALICE)


def test_a_handle_is_dead_after_its_block(db: InMemoryUserScopedDB) -> None:
    with db.transaction(ALICE) as tx:
        pass
    with pytest.raises(TransactionUsageError):
        tx.execute("SELECT 1")


def test_execute_scalar_without_rows_raises_no_rows(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(NoRowsError) as caught:
        db.execute_scalar("SELECT id FROM contacts", user_id=ALICE)
    assert isinstance(caught.value, ValueError)
    assert db.execute_one("SELECT id FROM contacts", user_id=ALICE) is None


def test_statements_without_a_result_return_an_empty_list(db: InMemoryUserScopedDB) -> None:
    assert db.execute("INSERT INTO contacts (name) VALUES ('a')", user_id=ALICE) == []


def test_concurrent_transactions_from_threads_all_commit(db: InMemoryUserScopedDB) -> None:
    errors: list[BaseException] = []

    def work(user: UUID) -> None:
        try:
            for i in range(20):
                with db.transaction(user) as tx:
                    tx.execute("INSERT INTO contacts (name) VALUES (%s)", (f"c{i}",))
                    tx.execute_scalar("SELECT count(*) FROM contacts")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in (ALICE, BOB, ALICE, BOB)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=ALICE) == 40
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=BOB) == 40


# --- schema loading and lifecycle ------------------------------------------------------------


def test_the_schema_comes_from_a_given_directory(tmp_path: Path) -> None:
    for source in sorted(default_sql_dir().glob("*.sql")):
        (tmp_path / source.name).write_text(source.read_text())
    (tmp_path / "004_view.sql").write_text("CREATE VIEW v AS SELECT 1;")
    with pytest.raises(UnsupportedQueryError, match=r"004_view\.sql"):
        InMemoryUserScopedDB(tmp_path)


def test_a_schema_without_grants_refuses_the_app_role(tmp_path: Path) -> None:
    for source in sorted(default_sql_dir().glob("00[12]_*.sql")):
        (tmp_path / source.name).write_text(source.read_text())
    fake = InMemoryUserScopedDB(tmp_path)
    with pytest.raises(DatabaseError, match="permission denied for table contacts"):
        fake.execute("SELECT * FROM contacts", user_id=ALICE)


def test_health_check_answers_until_closed() -> None:
    fake = InMemoryUserScopedDB()
    assert fake.health_check() is True
    fake.close()
    with pytest.raises(DatabaseError):
        fake.health_check()


def test_each_instance_is_a_separate_database(db: InMemoryUserScopedDB) -> None:
    add_contact(db, ALICE, "Ann")
    other = InMemoryUserScopedDB()
    assert other.execute_admin("SELECT count(*) AS n FROM contacts") == [{"n": 0}]
    assert uuid4() != ALICE


def test_a_savepoints_handle_is_dead_after_its_block(db: InMemoryUserScopedDB) -> None:
    with db.transaction(ALICE) as outer:
        with db.transaction(ALICE) as inner:
            inner.execute("INSERT INTO contacts (name) VALUES ('a')")
        with pytest.raises(TransactionUsageError):
            inner.execute("SELECT 1")
        assert outer.execute_scalar("SELECT count(*) FROM contacts") == 1


def test_an_unsupported_statement_does_not_abort_the_transaction(
    db: InMemoryUserScopedDB,
) -> None:
    with db.transaction(ALICE) as tx:
        tx.execute("INSERT INTO contacts (name) VALUES ('a')")
        with pytest.raises(UnsupportedQueryError):
            tx.execute("SELECT id FROM contacts FOR UPDATE")
        tx.execute("INSERT INTO contacts (name) VALUES ('b')")
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=ALICE) == 2


def test_waiting_on_another_threads_transaction_times_out(db: InMemoryUserScopedDB) -> None:
    fake = InMemoryUserScopedDB(lock_timeout=0.2)
    fake.execute_admin("INSERT INTO users (id, email) VALUES (%s, 'a@example.com')", (ALICE,))
    outcome: list[BaseException] = []

    def other_thread() -> None:
        try:
            fake.execute("SELECT 1", user_id=ALICE)
        except BaseException as exc:  # collected and asserted below
            outcome.append(exc)

    with fake.transaction(ALICE) as tx:
        tx.execute("SELECT 1")
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(outcome) == 1
    assert isinstance(outcome[0], TransactionUsageError)
    assert "one at a time" in str(outcome[0])


def test_the_fakes_package_exports_the_database() -> None:
    import crm_infra.fakes

    assert crm_infra.fakes.__all__ == sorted(crm_infra.fakes.__all__)
    assert "InMemoryUserScopedDB" in crm_infra.fakes.__all__


def test_the_admin_path_may_truncate_tables(db: InMemoryUserScopedDB) -> None:
    contact = add_contact(db, ALICE, "Ann")
    db.execute("INSERT INTO tickets (contact_id, subject) VALUES (%s, 's')", (contact,), ALICE)
    with pytest.raises(DatabaseError, match="referenced in a foreign key"):
        db.execute_admin("TRUNCATE contacts")
    with pytest.raises(UnsafeQueryError, match="TRUNCATE"):
        db.execute("TRUNCATE tickets, addresses, contacts", user_id=ALICE)
    db.execute_admin("TRUNCATE users CASCADE")
    counts = "SELECT (SELECT count(*) FROM users) AS u, (SELECT count(*) FROM tickets) AS t"
    assert db.execute_admin(counts) == [{"u": 0, "t": 0}]
