"""The SQL that domain code writes day to day, with the same answers on every backend.

Runs on every backend in ``conftest.DB_BACKENDS`` (the in-memory fake and PostgreSQL): row-level
security in reads, writes and upserts; placeholders; filtering, ordering, paging, grouping,
joins; RETURNING; ON CONFLICT; LIKE/ILIKE; ``= ANY(%s)``; defaults; constraint errors; the
Python types of results. The last section pins the fake's promise for SQL it does not
support: PostgreSQL answers, the fake refuses by name; neither answers differently.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from crm_infra import (
    DatabaseError,
    IntegrityError,
    RowSecurityError,
    TransactionUsageError,
    UnsafeQueryError,
    UnsupportedQueryError,
)
from tests.contract.conftest import ContractDB


def make_user(db: ContractDB, email: str) -> UUID:
    user_id: UUID = db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (email,)
    )[0]["id"]
    return user_id


def add_contact(db: ContractDB, user: UUID, name: str | None, email: str | None = None) -> UUID:
    contact_id: UUID = db.execute_scalar(
        "INSERT INTO contacts (name, email) VALUES (%s, %s) RETURNING id",
        (name, email),
        user_id=user,
    )
    return contact_id


def add_ticket(db: ContractDB, user: UUID, subject: str, **columns: Any) -> UUID:
    names = ["subject", *columns]
    placeholders = ", ".join(["%s"] * len(names))
    ticket_id: UUID = db.execute_scalar(
        f"INSERT INTO tickets ({', '.join(names)}) VALUES ({placeholders}) RETURNING id",
        (subject, *columns.values()),
        user_id=user,
    )
    return ticket_id


@pytest.fixture
def alice(db: ContractDB) -> UUID:
    return make_user(db, "alice@example.com")


@pytest.fixture
def bob(db: ContractDB) -> UUID:
    return make_user(db, "bob@example.com")


@pytest.fixture
def people(db: ContractDB, alice: UUID) -> UUID:
    """Alice with four contacts, one without a name and one without an email."""
    for name, email in (
        ("Ann", "ann@example.com"),
        ("bea", None),
        ("Cid", "cid@example.com"),
        (None, "anon@example.com"),
    ):
        add_contact(db, alice, name, email)
    return alice


def names(rows: list[dict[str, Any]]) -> list[Any]:
    return [row["name"] for row in rows]


# --- row-level security beyond plain reads ----------------------------------------------------


def test_an_upsert_cannot_take_over_another_users_row(
    db: ContractDB, alice: UUID, bob: UUID
) -> None:
    bobs = add_contact(db, bob, "Bea")
    with pytest.raises(RowSecurityError):
        db.execute(
            "INSERT INTO contacts (id, name) VALUES (%s, 'Mine') "
            "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
            (bobs,),
            user_id=alice,
        )
    assert db.execute_admin("SELECT name, user_id FROM contacts") == [
        {"name": "Bea", "user_id": bob}
    ]


def test_on_conflict_do_nothing_skips_another_users_row(
    db: ContractDB, alice: UUID, bob: UUID
) -> None:
    bobs = add_contact(db, bob, "Bea")
    rows = db.execute(
        "INSERT INTO contacts (id, name) VALUES (%s, 'Mine') ON CONFLICT (id) DO NOTHING "
        "RETURNING id",
        (bobs,),
        user_id=alice,
    )
    assert rows == []
    assert db.execute("SELECT * FROM contacts", user_id=alice) == []


def test_subqueries_see_only_the_users_rows(db: ContractDB, alice: UUID, bob: UUID) -> None:
    add_contact(db, bob, "Bea")
    add_contact(db, alice, "Ann")
    row = db.execute_one(
        "SELECT (SELECT count(*) FROM contacts) AS n, "
        "EXISTS (SELECT 1 FROM contacts WHERE name = 'Bea') AS sees_bea",
        user_id=alice,
    )
    assert row == {"n": 1, "sees_bea": False}


def test_updates_filtered_by_a_subquery_stay_within_the_user(
    db: ContractDB, alice: UUID, bob: UUID
) -> None:
    add_contact(db, bob, "Bea")
    ann = add_contact(db, alice, "Ann")
    rows = db.execute(
        "UPDATE contacts SET company = 'Acme' WHERE id IN (SELECT id FROM contacts) RETURNING id",
        user_id=alice,
    )
    assert rows == [{"id": ann}]
    companies = db.execute_admin("SELECT name, company FROM contacts ORDER BY name")
    assert companies == [{"name": "Ann", "company": "Acme"}, {"name": "Bea", "company": None}]


def test_the_app_role_may_not_write_the_users_directory(db: ContractDB, alice: UUID) -> None:
    for statement in (
        "INSERT INTO users (email) VALUES ('eve@example.com')",
        "UPDATE users SET display_name = 'x'",
        "DELETE FROM users",
    ):
        with pytest.raises(DatabaseError) as caught:
            db.execute(statement, user_id=alice)
        assert not isinstance(caught.value, RowSecurityError)  # a missing grant, not a policy
    assert db.execute_admin("SELECT count(*) AS n FROM users") == [{"n": 1}]


def test_deleting_a_contact_cascades_to_its_addresses(db: ContractDB, alice: UUID) -> None:
    ann = add_contact(db, alice, "Ann")
    db.execute("INSERT INTO addresses (contact_id, city) VALUES (%s, 'Oslo')", (ann,), alice)
    db.execute("DELETE FROM contacts WHERE id = %s", (ann,), user_id=alice)
    assert db.execute_admin("SELECT * FROM addresses") == []


def test_a_contact_with_tickets_cannot_be_deleted(db: ContractDB, alice: UUID) -> None:
    ann = add_contact(db, alice, "Ann")
    add_ticket(db, alice, "Hi", contact_id=ann)
    with pytest.raises(IntegrityError):
        db.execute("DELETE FROM contacts WHERE id = %s", (ann,), user_id=alice)
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=alice) == 1


def test_truncate_is_for_the_admin_path_and_respects_references(
    db: ContractDB, alice: UUID
) -> None:
    ann = add_contact(db, alice, "Ann")
    add_ticket(db, alice, "t", contact_id=ann)
    with pytest.raises(DatabaseError):
        db.execute("TRUNCATE tickets", user_id=alice)
    with pytest.raises(DatabaseError):
        db.execute_admin("TRUNCATE contacts")
    db.execute_admin("TRUNCATE contacts CASCADE")
    assert db.execute_admin("SELECT count(*) AS n FROM tickets") == [{"n": 0}]
    assert db.execute_admin("SELECT count(*) AS n FROM users") == [{"n": 1}]


def test_the_admin_path_may_write_any_users_rows(db: ContractDB, alice: UUID, bob: UUID) -> None:
    db.execute_admin("INSERT INTO contacts (user_id, name) VALUES (%s, 'Bea')", (bob,))
    db.execute_admin("UPDATE contacts SET user_id = %s", (alice,))
    assert db.execute("SELECT name FROM contacts", user_id=alice) == [{"name": "Bea"}]


# --- placeholders ---------------------------------------------------------------------------


def test_percent_signs_are_doubled_only_with_params(db: ContractDB, alice: UUID) -> None:
    with_params = db.execute("SELECT '100%%' AS pct, %s AS n", (3,), user_id=alice)
    assert with_params == [{"pct": "100%", "n": 3}]
    assert db.execute("SELECT '100%' AS pct", user_id=alice) == [{"pct": "100%"}]


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("INSERT INTO contacts (name) VALUES (%s); SELECT name FROM contacts", ("Ann",)),
        ("INSERT INTO contacts (name) VALUES ('Ann'); SELECT 1 AS one", ()),
        ("SELECT 1 AS one;; SELECT 2 AS two", ()),
    ],
)
def test_several_statements_in_one_call_are_refused_and_nothing_runs(
    db: ContractDB, alice: UUID, query: str, params: tuple[str, ...]
) -> None:
    # One call is one statement: several go through transaction(), so their values never
    # travel inside SQL text.
    with pytest.raises(UnsafeQueryError, match=r"2 statements.*transaction\(\)"):
        db.execute(query, params, user_id=alice)
    assert db.execute("SELECT name FROM contacts", user_id=alice) == []


def test_a_named_parameter_may_repeat(db: ContractDB, people: UUID) -> None:
    rows = db.execute(
        "SELECT name FROM contacts WHERE name = %(n)s OR lower(name) = lower(%(n)s) "
        "ORDER BY name",
        {"n": "BEA"},
        user_id=people,
    )
    assert rows == [{"name": "bea"}]


def test_a_parameter_count_mismatch_is_a_database_error(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(DatabaseError):
        db.execute("SELECT %s AS a", (1, 2), user_id=alice)


# --- filtering, ordering, paging, grouping, joins -----------------------------------------------


def test_order_by_puts_nulls_last_ascending_and_first_descending(
    db: ContractDB, people: UUID
) -> None:
    ascending = db.execute("SELECT email FROM contacts ORDER BY email", user_id=people)
    descending = db.execute("SELECT email FROM contacts ORDER BY email DESC", user_id=people)
    assert [r["email"] for r in ascending][-1] is None
    assert descending[0]["email"] is None
    nulls_first = db.execute("SELECT name FROM contacts ORDER BY name NULLS FIRST", (), people)
    assert names(nulls_first) == [None, "Ann", "Cid", "bea"]


def test_text_is_ordered_by_code_point(db: ContractDB, people: UUID) -> None:
    rows = db.execute("SELECT name FROM contacts WHERE name IS NOT NULL ORDER BY name", (), people)
    assert names(rows) == ["Ann", "Cid", "bea"]


def test_limit_and_offset_page_through_rows(db: ContractDB, people: UUID) -> None:
    query = "SELECT name FROM contacts ORDER BY name LIMIT %s OFFSET %s"
    pages = [names(db.execute(query, (2, offset), user_id=people)) for offset in (0, 2, 4)]
    assert pages == [["Ann", "Cid"], ["bea", None], []]


def test_count_and_group_by_with_having(db: ContractDB, alice: UUID) -> None:
    for subject, status in (("a", "open"), ("b", "open"), ("c", "closed"), ("d", "pending")):
        add_ticket(db, alice, subject, status=status)
    rows = db.execute(
        "SELECT status, count(*) AS n FROM tickets GROUP BY status HAVING count(*) >= %s "
        "ORDER BY n DESC, status",
        (1,),
        user_id=alice,
    )
    assert rows == [
        {"status": "open", "n": 2},
        {"status": "closed", "n": 1},
        {"status": "pending", "n": 1},
    ]
    assert db.execute_scalar("SELECT count(DISTINCT status) FROM tickets", (), alice) == 3


def test_a_left_join_counts_children_per_parent(db: ContractDB, alice: UUID) -> None:
    ann = add_contact(db, alice, "Ann")
    add_contact(db, alice, "Ben")
    for subject in ("x", "y"):
        add_ticket(db, alice, subject, contact_id=ann)
    rows = db.execute(
        "SELECT c.name, count(t.id) AS tickets FROM contacts c "
        "LEFT JOIN tickets t ON t.contact_id = c.id GROUP BY c.name ORDER BY c.name",
        user_id=alice,
    )
    assert rows == [{"name": "Ann", "tickets": 2}, {"name": "Ben", "tickets": 0}]


def test_where_with_in_between_and_is_null(db: ContractDB, alice: UUID) -> None:
    for subject, priority in (("a", 0), ("b", 1), ("c", 2), ("d", 3)):
        add_ticket(db, alice, subject, priority=priority)
    rows = db.execute(
        "SELECT subject FROM tickets WHERE priority BETWEEN %s AND %s "
        "AND status IN ('open', 'pending') AND closed_at IS NULL ORDER BY subject",
        (1, 2),
        user_id=alice,
    )
    assert rows == [{"subject": "b"}, {"subject": "c"}]


def test_ranking_and_counting_windows(db: ContractDB, alice: UUID) -> None:
    for subject, priority in (("a", 1), ("b", 2), ("c", 2), ("d", 0)):
        add_ticket(db, alice, subject, priority=priority)
    rows = db.execute(
        "SELECT subject, row_number() OVER (ORDER BY subject DESC) AS n, "
        "rank() OVER (ORDER BY priority DESC) AS r, "
        "dense_rank() OVER (ORDER BY priority DESC) AS d, "
        "count(*) OVER (PARTITION BY priority) AS peers FROM tickets ORDER BY subject",
        user_id=alice,
    )
    assert rows == [
        {"subject": "a", "n": 4, "r": 3, "d": 2, "peers": 1},
        {"subject": "b", "n": 3, "r": 1, "d": 1, "peers": 2},
        {"subject": "c", "n": 2, "r": 1, "d": 1, "peers": 2},
        {"subject": "d", "n": 1, "r": 4, "d": 3, "peers": 1},
    ]
    top = db.execute(
        "SELECT subject FROM (SELECT subject, row_number() OVER (ORDER BY subject) AS r "
        "FROM tickets) ranked WHERE r <= 2 ORDER BY r",
        user_id=alice,
    )
    assert top == [{"subject": "a"}, {"subject": "b"}]


def test_with_queries_and_union(db: ContractDB, people: UUID) -> None:
    rows = db.execute(
        "WITH named AS (SELECT name FROM contacts WHERE name IS NOT NULL) "
        "SELECT name FROM named UNION SELECT 'Zed' ORDER BY 1",
        user_id=people,
    )
    assert names(rows) == ["Ann", "Cid", "Zed", "bea"]


def test_like_is_case_sensitive_and_ilike_is_not(db: ContractDB, people: UUID) -> None:
    def matching(operator: str, pattern: str) -> list[Any]:
        query = f"SELECT name FROM contacts WHERE name {operator} %s ORDER BY name"
        return names(db.execute(query, (pattern,), user_id=people))

    assert matching("LIKE", "b%") == ["bea"]
    assert matching("LIKE", "B%") == []
    assert matching("ILIKE", "B%") == ["bea"]
    assert matching("ILIKE", "%I%") == ["Cid"]
    assert matching("NOT ILIKE", "a%") == ["Cid", "bea"]


def test_like_escapes_wildcards_with_a_backslash(db: ContractDB, alice: UUID) -> None:
    add_contact(db, alice, "50%_off")
    add_contact(db, alice, "50xyoff")
    rows = db.execute("SELECT name FROM contacts WHERE name LIKE %s", ("50\\%\\_%",), alice)
    assert rows == [{"name": "50%_off"}]


def test_any_takes_a_list_of_ids(db: ContractDB, alice: UUID) -> None:
    ann = add_contact(db, alice, "Ann")
    add_contact(db, alice, "Ben")
    cid = add_contact(db, alice, "Cid")
    rows = db.execute(
        "SELECT name FROM contacts WHERE id = ANY(%s) ORDER BY name", ([ann, cid, uuid4()],), alice
    )
    assert names(rows) == ["Ann", "Cid"]
    assert db.execute("SELECT name FROM contacts WHERE id = ANY(%s)", ([],), alice) == []
    others = db.execute("SELECT name FROM contacts WHERE id <> ALL(%s)", ([ann, cid],), alice)
    assert names(others) == ["Ben"]


def test_any_takes_a_list_of_strings(db: ContractDB, people: UUID) -> None:
    rows = db.execute(
        "SELECT name FROM contacts WHERE name = ANY(%s) ORDER BY name",
        (["bea", "Ann", "x"],),
        people,
    )
    assert names(rows) == ["Ann", "bea"]


# --- writes ----------------------------------------------------------------------------------


def test_update_returning_gives_the_new_values(db: ContractDB, alice: UUID) -> None:
    ticket = add_ticket(db, alice, "Hi")
    row = db.execute_one(
        "UPDATE tickets SET status = 'closed', priority = priority + 1 WHERE id = %s "
        "RETURNING id, status, priority",
        (ticket,),
        user_id=alice,
    )
    assert row == {"id": ticket, "status": "closed", "priority": 1}


def test_delete_returning_gives_the_deleted_rows(db: ContractDB, people: UUID) -> None:
    rows = db.execute(
        "DELETE FROM contacts WHERE email IS NULL OR name IS NULL RETURNING name, email",
        user_id=people,
    )
    assert sorted(rows, key=lambda r: r["email"] or "") == [
        {"name": "bea", "email": None},
        {"name": None, "email": "anon@example.com"},
    ]
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=people) == 2


def test_insert_many_rows_returning(db: ContractDB, alice: UUID) -> None:
    rows = db.execute(
        "INSERT INTO contacts (name) VALUES (%s), (%s) RETURNING name", ("A", "B"), alice
    )
    assert sorted(names(rows)) == ["A", "B"]


def test_insert_from_a_select_of_the_users_rows(db: ContractDB, alice: UUID, bob: UUID) -> None:
    add_contact(db, bob, "Bea")
    add_contact(db, alice, "Ann")
    rows = db.execute(
        "INSERT INTO tickets (subject, contact_id) SELECT 'for ' || name, id FROM contacts "
        "RETURNING subject",
        user_id=alice,
    )
    assert rows == [{"subject": "for Ann"}]


def test_update_from_a_join(db: ContractDB, alice: UUID, bob: UUID) -> None:
    ann = add_contact(db, alice, "Ann")
    add_ticket(db, alice, "x", contact_id=ann)
    bea = add_contact(db, bob, "Bea")
    add_ticket(db, bob, "y", contact_id=bea)
    query = (
        "UPDATE tickets t SET body = c.name FROM contacts c WHERE c.id = t.contact_id "
        "RETURNING t.subject, t.body"
    )
    assert db.execute(query, user_id=alice) == [{"subject": "x", "body": "Ann"}]
    assert db.execute_admin("SELECT body FROM tickets ORDER BY subject") == [
        {"body": "Ann"},
        {"body": None},
    ]


def test_correlated_subqueries(db: ContractDB, alice: UUID) -> None:
    ann = add_contact(db, alice, "Ann")
    add_contact(db, alice, "Ben")
    add_ticket(db, alice, "x", contact_id=ann)
    rows = db.execute(
        "SELECT name, (SELECT count(*) FROM tickets t WHERE t.contact_id = c.id) AS n, "
        "EXISTS (SELECT 1 FROM tickets t WHERE t.contact_id = c.id) AS busy "
        "FROM contacts c ORDER BY name",
        user_id=alice,
    )
    assert rows == [{"name": "Ann", "n": 1, "busy": True}, {"name": "Ben", "n": 0, "busy": False}]


def test_numeric_arithmetic_is_decimal(db: ContractDB, alice: UUID) -> None:
    add_ticket(db, alice, "x", estimated_value=Decimal("1.10"))
    row = db.execute_one(
        "SELECT estimated_value + 2.2 AS plus, estimated_value * 3 AS times, "
        "1.1 + 2.2 AS literal, 7 / 2 AS int_div, -7 % 3 AS int_mod FROM tickets",
        user_id=alice,
    )
    assert row == {
        "plus": Decimal("3.3"),
        "times": Decimal("3.3"),
        "literal": Decimal("3.3"),
        "int_div": 3,
        "int_mod": -1,
    }


def test_avg_and_numeric_division_have_postgresqls_digits(db: ContractDB, alice: UUID) -> None:
    for priority, value in ((1, "10.50"), (2, "2.25"), (2, None), (0, "0.01")):
        add_ticket(
            db, alice, "x", priority=priority, estimated_value=value and Decimal(value)
        )
    rows = db.execute(
        "SELECT priority, avg(estimated_value) AS mean, avg(priority) AS p, "
        "sum(estimated_value) / count(*) AS per_ticket, max(estimated_value / 3) AS third "
        "FROM tickets GROUP BY priority HAVING avg(priority) >= %s ORDER BY mean DESC",
        (1,),
        user_id=alice,
    )
    assert [{k: str(v) for k, v in row.items()} for row in rows] == [
        {
            "priority": "1",
            "mean": "10.5000000000000000",
            "p": "1.00000000000000000000",
            "per_ticket": "10.5000000000000000",
            "third": "3.5000000000000000",
        },
        {
            "priority": "2",
            "mean": "2.2500000000000000",
            "p": "2.0000000000000000",
            "per_ticket": "1.12500000000000000000",
            "third": "0.75000000000000000000",
        },
    ]
    with pytest.raises(DatabaseError):
        db.execute("SELECT priority / 0 FROM tickets", user_id=alice)


def test_greatest_least_concat_and_round(db: ContractDB, alice: UUID) -> None:
    for subject, priority, value in (("a", 1, "10.55"), ("b", 3, None), (None, 0, "-2.50")):
        add_ticket(
            db, alice, subject or "", priority=priority, estimated_value=value and Decimal(value)
        )
    rows = db.execute(
        "SELECT greatest(priority, 2) AS g, least(priority, 2, NULL) AS l, "
        "concat(subject, '#', priority, NULL) AS c, round(estimated_value, 1) AS r, "
        "round(estimated_value) AS r0 FROM tickets ORDER BY priority",
        user_id=alice,
    )
    assert rows == [
        {"g": 2, "l": 0, "c": "#0", "r": Decimal("-2.5"), "r0": Decimal("-3")},
        {"g": 2, "l": 1, "c": "a#1", "r": Decimal("10.6"), "r0": Decimal("11")},
        {"g": 3, "l": 2, "c": "b#3", "r": None, "r0": None},
    ]


def test_like_with_an_escape_clause(db: ContractDB, alice: UUID) -> None:
    add_contact(db, alice, "A%")
    add_contact(db, alice, "Ab")
    # Without params the text is sent as written: `A!%%` is A, a literal %, then anything.
    rows = db.execute("SELECT name FROM contacts WHERE name LIKE 'A!%%' ESCAPE '!'", (), alice)
    assert rows == [{"name": "A%"}]
    rows = db.execute("SELECT name FROM contacts WHERE name LIKE %s ESCAPE '!'", ("A!%",), alice)
    assert rows == [{"name": "A%"}]


def test_upsert_updates_the_users_own_row(db: ContractDB, alice: UUID) -> None:
    ann = add_contact(db, alice, "Ann")
    upsert = (
        "INSERT INTO contacts (id, name) VALUES (%s, %s) "
        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name || ' (updated)' RETURNING id, name"
    )
    assert db.execute(upsert, (ann, "Anna"), user_id=alice) == [
        {"id": ann, "name": "Anna (updated)"}
    ]
    fresh = uuid4()
    assert db.execute(upsert, (fresh, "Ben"), user_id=alice) == [{"id": fresh, "name": "Ben"}]
    assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=alice) == 2


def test_schema_qualified_and_quoted_names(db: ContractDB, alice: UUID) -> None:
    ann = add_contact(db, alice, "Ann")
    rows = db.execute('SELECT "name" FROM public.contacts WHERE "id" = %s', (ann,), alice)
    assert rows == [{"name": "Ann"}]
    updated = db.execute(
        "UPDATE public.contacts SET phone = '1' WHERE contacts.id = %s RETURNING contacts.phone",
        (ann,),
        user_id=alice,
    )
    assert updated == [{"phone": "1"}]


def test_insert_default_values_and_a_targetless_do_nothing(db: ContractDB, alice: UUID) -> None:
    row = db.execute_one(
        "INSERT INTO contacts DEFAULT VALUES RETURNING id, name, user_id", (), alice
    )
    assert row is not None
    assert (row["name"], row["user_id"]) == (None, alice)
    again = db.execute(
        "INSERT INTO contacts (id, name) VALUES (%s, 'x') ON CONFLICT DO NOTHING RETURNING id",
        (row["id"],),
        user_id=alice,
    )
    assert again == []


def test_upsert_on_a_unique_column_through_the_admin_path(db: ContractDB) -> None:
    upsert = (
        "INSERT INTO users (email, display_name) VALUES (%s, %s) "
        "ON CONFLICT (email) DO UPDATE SET display_name = EXCLUDED.display_name "
        "RETURNING email, display_name"
    )
    db.execute_admin(upsert, ("a@example.com", "A"))
    assert db.execute_admin(upsert, ("a@example.com", "B")) == [
        {"email": "a@example.com", "display_name": "B"}
    ]


def test_defaults_fill_ids_timestamps_and_status(db: ContractDB, alice: UUID) -> None:
    with db.transaction(alice) as tx:
        first = tx.execute_one("INSERT INTO tickets (subject) VALUES ('a') RETURNING *")
        second = tx.execute_one("INSERT INTO tickets (subject) VALUES ('b') RETURNING *")
        now = tx.execute_scalar("SELECT now()")
    assert first is not None
    assert second is not None
    assert first["id"] != second["id"]
    assert first["id"].version == 4
    # now() is the transaction's start time: the same for every statement in it.
    assert first["created_at"] == second["created_at"] == now
    assert (first["status"], first["priority"], first["urgent"]) == ("open", 0, False)


def test_now_moves_on_between_transactions(db: ContractDB, alice: UUID) -> None:
    first = db.execute_scalar("SELECT now()", user_id=alice)
    second = db.execute_scalar("SELECT now()", user_id=alice)
    assert second >= first
    assert abs(first - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)


# --- errors ------------------------------------------------------------------------------------


def test_a_check_on_a_range_is_an_integrity_error(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(IntegrityError):
        add_ticket(db, alice, "Hi", priority=4)
    add_ticket(db, alice, "Hi")
    with pytest.raises(IntegrityError):
        db.execute("UPDATE tickets SET priority = -1", user_id=alice)
    assert db.execute("SELECT priority FROM tickets", user_id=alice) == [{"priority": 0}]


def test_a_duplicate_primary_key_is_an_integrity_error(db: ContractDB, alice: UUID) -> None:
    ann = add_contact(db, alice, "Ann")
    with pytest.raises(IntegrityError) as caught:
        db.execute("INSERT INTO contacts (id, name) VALUES (%s, 'x')", (ann,), user_id=alice)
    assert "contacts" in str(caught.value)
    assert "_t_" not in str(caught.value)  # the fake's own table names stay inside it


def test_a_malformed_uuid_is_a_database_error_not_a_silent_miss(
    db: ContractDB, alice: UUID
) -> None:
    with pytest.raises(DatabaseError):
        db.execute("SELECT * FROM contacts WHERE id = %s", ("not-a-uuid",), user_id=alice)


@pytest.mark.parametrize(
    ("query", "value"),
    [
        ("SELECT name FROM contacts WHERE name = %s", 5),
        ("SELECT name FROM contacts WHERE name = %s", True),
        ("SELECT id FROM tickets WHERE urgent = %s", 1),
        ("SELECT id FROM tickets WHERE priority = %s", True),
        ("SELECT name FROM contacts WHERE id = %s", 7),
    ],
)
def test_a_parameter_of_an_unrelated_type_is_refused_not_coerced(
    db: ContractDB, alice: UUID, query: str, value: object
) -> None:
    add_contact(db, alice, "5")
    add_ticket(db, alice, "t", urgent=True, priority=1)
    with pytest.raises(DatabaseError):
        db.execute(query, (value,), user_id=alice)


def test_values_written_to_text_columns_become_their_text(db: ContractDB, alice: UUID) -> None:
    rows = db.execute(
        "INSERT INTO contacts (name, phone, company) VALUES (%s, %s, %s) "
        "RETURNING name, phone, company",
        (True, 12345, alice),
        user_id=alice,
    )
    assert rows == [{"name": "true", "phone": "12345", "company": str(alice)}]


def test_strings_are_parsed_as_the_columns_type(db: ContractDB, alice: UUID) -> None:
    row = db.execute_one(
        "INSERT INTO tickets (subject, priority, urgent, estimated_value) "
        "VALUES ('s', %s, %s, %s) RETURNING priority, urgent, estimated_value",
        ("2", "yes", "12.345"),
        user_id=alice,
    )
    assert row == {"priority": 2, "urgent": True, "estimated_value": Decimal("12.35")}
    with pytest.raises(DatabaseError):
        add_ticket(db, alice, "s", urgent="maybe")


def test_an_integer_beyond_the_column_is_a_database_error(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(DatabaseError):
        add_ticket(db, alice, "s", priority=2**31)


def test_an_unknown_table_or_column_is_a_database_error(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(DatabaseError):
        db.execute("SELECT * FROM no_such_table", user_id=alice)
    with pytest.raises(DatabaseError):
        db.execute("SELECT no_such_column FROM contacts", user_id=alice)


def test_a_value_beyond_a_numeric_column_is_a_database_error(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(DatabaseError):
        add_ticket(db, alice, "Big", estimated_value=Decimal("12345678901.00"))


def test_a_failed_write_inside_a_transaction_leaves_nothing(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(RowSecurityError), db.transaction(alice) as tx:  # noqa: PT012 - the transaction body is what is tested
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        tx.execute("INSERT INTO contacts (user_id, name) VALUES (%s, 'x')", (uuid4(),))
    assert db.execute("SELECT * FROM contacts", user_id=alice) == []


def test_statements_after_a_swallowed_error_fail(db: ContractDB, alice: UUID) -> None:
    with pytest.raises(TransactionUsageError), db.transaction(alice) as tx:  # noqa: PT012 - the transaction body is what is tested
        with pytest.raises(IntegrityError):
            tx.execute("INSERT INTO tickets (subject, priority) VALUES ('x', 9)")
        with pytest.raises(DatabaseError):
            tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
    assert db.execute("SELECT * FROM contacts", user_id=alice) == []


# --- Python types ------------------------------------------------------------------------------


def test_numeric_values_come_back_as_decimals_at_the_column_scale(
    db: ContractDB, alice: UUID
) -> None:
    for value in (Decimal("10.5"), Decimal("1.005"), 7, 0.25):
        add_ticket(db, alice, "v", estimated_value=value)
    rows = db.execute(
        "SELECT estimated_value FROM tickets ORDER BY estimated_value", user_id=alice
    )
    values = [r["estimated_value"] for r in rows]
    assert values == [Decimal("0.25"), Decimal("1.01"), Decimal("7.00"), Decimal("10.50")]
    assert [str(v) for v in values] == ["0.25", "1.01", "7.00", "10.50"]


def test_sums_of_numeric_are_exact_and_counts_are_ints(db: ContractDB, alice: UUID) -> None:
    for value in ("0.10", "0.20", "0.30"):
        add_ticket(db, alice, "v", estimated_value=Decimal(value))
    row = db.execute_one(
        "SELECT sum(estimated_value) AS total, count(*) AS n, sum(priority) AS p, "
        "max(estimated_value) AS top FROM tickets",
        user_id=alice,
    )
    assert row == {"total": Decimal("0.60"), "n": 3, "p": 0, "top": Decimal("0.30")}
    assert isinstance(row["n"], int)
    empty = db.execute_one(
        "SELECT sum(estimated_value) AS total FROM tickets WHERE false", (), alice
    )
    assert empty == {"total": None}


def test_timestamps_come_back_aware_and_equal_to_what_was_stored(
    db: ContractDB, alice: UUID
) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    closed = dt.datetime(2024, 6, 1, 14, 30, 5, 123456, tzinfo=paris)
    ticket = add_ticket(db, alice, "t", closed_at=closed)
    row = db.execute_one("SELECT closed_at FROM tickets WHERE id = %s", (ticket,), alice)
    assert row is not None
    assert row["closed_at"] == closed
    assert row["closed_at"].utcoffset() == dt.timedelta(0)
    later = db.execute(
        "SELECT id FROM tickets WHERE closed_at > %s", (closed - dt.timedelta(seconds=1),), alice
    )
    assert later == [{"id": ticket}]


def test_fixed_intervals_move_timestamps(db: ContractDB, alice: UUID) -> None:
    closed = dt.datetime(2024, 3, 31, 0, 30, tzinfo=dt.UTC)
    add_ticket(db, alice, "t", closed_at=closed)
    row = db.execute_one(
        "SELECT closed_at + interval '90 minutes' AS later, closed_at - INTERVAL '2 hours' AS "
        "earlier, closed_at > %s - interval '1 hour' AS recent FROM tickets",
        (closed,),
        user_id=alice,
    )
    assert row == {
        "later": closed + dt.timedelta(minutes=90),
        "earlier": closed - dt.timedelta(hours=2),
        "recent": True,
    }
    fresh = db.execute_scalar(
        "SELECT count(*) FROM tickets WHERE created_at > now() - interval '5 minutes'", (), alice
    )
    assert fresh == 1


def test_booleans_and_nulls(db: ContractDB, alice: UUID) -> None:
    add_ticket(db, alice, "u", urgent=True)
    add_ticket(db, alice, "n")
    rows = db.execute(
        "SELECT subject, urgent, NOT urgent AS calm, body FROM tickets ORDER BY subject", (), alice
    )
    assert rows == [
        {"subject": "n", "urgent": False, "calm": True, "body": None},
        {"subject": "u", "urgent": True, "calm": False, "body": None},
    ]
    assert db.execute("SELECT subject FROM tickets WHERE urgent", user_id=alice) == [
        {"subject": "u"}
    ]
    assert db.execute("SELECT subject FROM tickets WHERE urgent = %s", (False,), alice) == [
        {"subject": "n"}
    ]


def test_uuids_compare_whatever_their_text_case(db: ContractDB, alice: UUID) -> None:
    ann = add_contact(db, alice, "Ann")
    by_upper = db.execute("SELECT id FROM contacts WHERE id = %s", (str(ann).upper(),), alice)
    assert by_upper == [{"id": ann}]
    as_text = db.execute_one("SELECT id::text AS t FROM contacts", user_id=alice)
    assert as_text == {"t": str(ann)}


def test_parameters_come_back_with_their_types(db: ContractDB, alice: UUID) -> None:
    value = Decimal("3.10")
    row = db.execute_one("SELECT %s AS u, %s AS d, %s AS t", (alice, value, "x"), user_id=alice)
    assert row == {"u": alice, "d": value, "t": "x"}
    assert isinstance(row["u"], UUID)


def test_column_names_follow_postgresql(db: ContractDB, alice: UUID) -> None:
    add_contact(db, alice, "Ann")
    row = db.execute_one(
        "SELECT count(*), max(name), lower(name), name::text, 1 + 1, c.id IS NULL AS missing "
        "FROM contacts c GROUP BY c.id, name",
        user_id=alice,
    )
    assert row is not None
    assert list(row) == ["count", "max", "lower", "name", "?column?", "missing"]


def test_unquoted_names_fold_to_lower_case(db: ContractDB, alice: UUID) -> None:
    add_contact(db, alice, "Ann")
    row = db.execute_one(
        'SELECT count(*) AS Total, Name, 1 AS "Exact" FROM contacts GROUP BY Name', (), alice
    )
    assert row == {"total": 1, "name": "Ann", "Exact": 1}


def test_aggregate_filters(db: ContractDB, people: UUID) -> None:
    row = db.execute_one(
        "SELECT count(*) FILTER (WHERE email IS NULL) AS no_email, count(*) AS n FROM contacts",
        user_id=people,
    )
    assert row == {"no_email": 1, "n": 4}


def test_literals_are_read_as_the_columns_type(db: ContractDB, alice: UUID) -> None:
    ticket = add_ticket(db, alice, "t", urgent=True, priority=2)
    rows = db.execute(
        "SELECT id FROM tickets WHERE urgent = 't' AND priority > '1' "
        "AND created_at < '2999-01-01 00:00:00+00' AND id = %s",
        (str(ticket).upper(),),
        user_id=alice,
    )
    assert rows == [{"id": ticket}]


def test_limit_null_means_no_limit_and_negative_is_an_error(db: ContractDB, people: UUID) -> None:
    query = "SELECT name FROM contacts ORDER BY name LIMIT %s OFFSET %s"
    assert len(db.execute(query, (None, None), user_id=people)) == 4
    with pytest.raises(DatabaseError):
        db.execute(query, (-1, 0), user_id=people)
    with pytest.raises(DatabaseError):
        db.execute(query, (1, -1), user_id=people)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT name FROM contacts WHERE id LIKE '0%'",
        "SELECT lower(id) FROM contacts",
        "SELECT name FROM contacts WHERE id = name",
        "SELECT name FROM contacts WHERE created_at = 5",
        "SELECT 1 / 0",
    ],
)
def test_operations_postgresql_does_not_define_are_errors(
    db: ContractDB, people: UUID, query: str
) -> None:
    with pytest.raises(DatabaseError) as caught:
        db.execute(query, user_id=people)
    assert not isinstance(caught.value, UnsupportedQueryError)


def test_select_star_over_a_join_lists_both_tables_in_order(db: ContractDB, alice: UUID) -> None:
    ann = add_contact(db, alice, "Ann")
    db.execute("INSERT INTO addresses (contact_id, city) VALUES (%s, 'Oslo')", (ann,), alice)
    row = db.execute_one(
        "SELECT a.city, c.* FROM addresses a JOIN contacts c ON c.id = a.contact_id", (), alice
    )
    assert row is not None
    assert list(row) == ["city", "id", "user_id", "name", "email", "phone", "company", "created_at"]
    assert (row["city"], row["id"], row["user_id"]) == ("Oslo", ann, alice)


# --- what the fake refuses ----------------------------------------------------------------------

BOTH = [{"name": "Ann"}, {"name": "Ben"}]
REFUSED_OR_ANSWERED: list[tuple[str, str, list[dict[str, Any]]]] = [
    ("SELECT name FROM contacts ORDER BY name FOR UPDATE SKIP LOCKED", "FOR UPDATE", BOTH),
    ("SELECT name FROM contacts ORDER BY name FOR SHARE", "FOR SHARE", BOTH),
    (
        "SELECT name, lag(name) OVER (ORDER BY name) AS previous FROM contacts",
        "window functions",
        [{"name": "Ann", "previous": None}, {"name": "Ben", "previous": "Ann"}],
    ),
    (
        "SELECT DISTINCT ON (user_id) name FROM contacts ORDER BY user_id, name",
        "DISTINCT ON",
        [{"name": "Ann"}],
    ),
    (
        "SELECT name FROM contacts WHERE created_at > now() - interval '1 day' ORDER BY name",
        "intervals",
        BOTH,
    ),
    ("SELECT name FROM contacts WHERE name ~ '^A'", "regular expression", [{"name": "Ann"}]),
    ("SELECT avg(length(name)) AS a FROM contacts", "avg", [{"a": Decimal(3)}]),
    # Refusals name the function as written, not as the SQL parser renames it.
    (
        "SELECT concat_ws('-', name, NULL, 'x') AS c FROM contacts ORDER BY name",
        "concat_ws()",
        [{"c": "Ann-x"}, {"c": "Ben-x"}],
    ),
    (
        "SELECT count(date_trunc('day', created_at)) AS n FROM contacts",
        "date_trunc()",
        [{"n": 2}],
    ),
    (
        "SELECT string_agg(name, ',' ORDER BY name) AS s FROM contacts",
        "string_agg()",
        [{"s": "Ann,Ben"}],
    ),
    ("SELECT bool_or(name = 'Ann') AS b FROM contacts", "bool_or()", [{"b": True}]),
    ("SELECT to_char(2, 'FM9') AS t", "to_char()", [{"t": "2"}]),
]


@pytest.mark.parametrize(("query", "construct", "expected"), REFUSED_OR_ANSWERED)
def test_sql_outside_the_fake_is_answered_by_postgresql_or_refused_by_name(
    db: ContractDB, alice: UUID, query: str, construct: str, expected: list[dict[str, Any]]
) -> None:
    """Never a different answer: PostgreSQL's rows, or an error that names the construct."""
    add_contact(db, alice, "Ann")
    add_contact(db, alice, "Ben")
    outcome: list[dict[str, Any]] | UnsupportedQueryError
    try:
        outcome = db.execute(query, user_id=alice)
    except UnsupportedQueryError as refused:
        outcome = refused
    if isinstance(outcome, UnsupportedQueryError):
        assert construct in str(outcome)
        assert "test that query against PostgreSQL" in str(outcome)
    else:
        assert outcome == expected


# --- review fixes: placeholders, functions, overflow, stars, DEFAULT ----------------------------


def test_placeholders_need_no_space_after_a_comma(db: ContractDB, alice: UUID) -> None:
    assert db.execute("SELECT 1 AS x WHERE 'a' IN (%s,%s)", ("a", "b"), user_id=alice) == [
        {"x": 1}
    ]
    db.execute(
        "INSERT INTO contacts (name, email) VALUES (%s,%s),(%s,%s)", ("a", "b", "c", "d"), alice
    )
    assert names(db.execute("SELECT name FROM contacts ORDER BY name", user_id=alice)) == ["a", "c"]


def test_an_unterminated_string_is_a_database_error_that_aborts(
    db: ContractDB, alice: UUID
) -> None:
    with pytest.raises(DatabaseError):
        db.execute("SELECT 'abc", user_id=alice)
    with pytest.raises(TransactionUsageError), db.transaction(alice) as tx:  # noqa: PT012 - the transaction body is what is tested
        with pytest.raises(DatabaseError):
            tx.execute("SELECT 'abc")
        with pytest.raises(DatabaseError):
            tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
    assert db.execute("SELECT * FROM contacts", user_id=alice) == []


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("SELECT priority * 2147483647 * 2 AS p FROM tickets WHERE priority = 2", ()),
        ("SELECT priority + 2147483647 AS p FROM tickets", ()),
        ("SELECT -2147483647 - priority AS p FROM tickets", ()),
        ("SELECT priority * %s AS p FROM tickets", (2**62,)),
        ("SELECT count(*) * 9223372036854775807 * 2 AS p FROM tickets", ()),
    ],
)
def test_integer_overflow_is_a_database_error(
    db: ContractDB, alice: UUID, query: str, params: tuple[Any, ...]
) -> None:
    add_ticket(db, alice, "s", priority=2)
    with pytest.raises(DatabaseError, match="out of range") as caught:
        db.execute(query, params, user_id=alice)
    assert not isinstance(caught.value, UnsupportedQueryError)


def test_integer_arithmetic_widens_as_postgresql_types_it(db: ContractDB, alice: UUID) -> None:
    add_ticket(db, alice, "s", priority=2)
    row = db.execute_one(
        "SELECT priority * 2147483648 AS big, priority * %s AS param, priority + 1 - 3 AS small"
        " FROM tickets",
        (2**30,),  # the PostgreSQL client sends user-scoped int parameters as int8
        alice,
    )
    assert row == {"big": 2**32, "param": 2**31, "small": 0}
    assert db.execute_scalar("SELECT count(*) * 3000000000 FROM tickets", (), alice) == 3000000000
    assert db.execute_admin("SELECT 2 * %s AS p", (2**40,)) == [{"p": 2**41}]
    with pytest.raises(DatabaseError, match="out of range"):
        db.execute_admin("SELECT 2 * %s AS p", (2**30,))  # psycopg sends it as int4 here


def test_a_star_in_a_subquery_or_with_query_lists_its_sources_columns(
    db: ContractDB, people: UUID
) -> None:
    expected = ["Ann", "Cid", "bea"]
    for query in (
        "SELECT s.name FROM (SELECT * FROM contacts) s WHERE s.name IS NOT NULL ORDER BY s.name",
        (
            "WITH x AS (SELECT * FROM contacts) SELECT name FROM x WHERE name IS NOT NULL"
            " ORDER BY name"
        ),
        (
            "SELECT name FROM (SELECT c.* FROM contacts c) s WHERE user_id = %s"
            " AND name IS NOT NULL ORDER BY name"
        ),
    ):
        params = (people,) if "%s" in query else ()
        assert names(db.execute(query, params, user_id=people)) == expected
    row = db.execute_one(
        "SELECT s.* FROM (SELECT * FROM contacts WHERE name = 'Ann') s", (), people
    )
    assert row is not None
    assert list(row) == ["id", "user_id", "name", "email", "phone", "company", "created_at"]
    assert (row["user_id"], type(row["created_at"])) == (people, dt.datetime)


def test_update_may_set_a_column_to_its_default(db: ContractDB, alice: UUID) -> None:
    add_contact(db, alice, "Ann", "ann@example.com")
    rows = db.execute(
        "UPDATE contacts SET user_id = DEFAULT, email = DEFAULT RETURNING user_id, name, email",
        user_id=alice,
    )
    assert rows == [{"user_id": alice, "name": "Ann", "email": None}]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT coalesce(priority, 0) * 2147483647 AS p FROM tickets",
        "SELECT CASE WHEN priority > 0 THEN priority ELSE 1 END * 2147483647 AS p FROM tickets",
        "SELECT greatest(priority, 1) + 2147483647 AS p FROM tickets",
        "SELECT (SELECT max(priority) FROM tickets) * 2147483647 AS p",
    ],
)
def test_integer_overflow_through_functions_and_subqueries(
    db: ContractDB, alice: UUID, query: str
) -> None:
    add_ticket(db, alice, "s", priority=2)
    with pytest.raises(DatabaseError, match="out of range"):
        db.execute(query, user_id=alice)


# --- sums over bigints are numeric; counts and rankings are bigint ------------------------------


def test_a_sum_of_counts_is_numeric(db: ContractDB, alice: UUID, bob: UUID) -> None:
    """count() is bigint and sum(bigint) is numeric: psycopg gives a Decimal, not an int."""
    total = "SELECT sum(n) AS s FROM (SELECT count(*) AS n FROM contacts) t"
    per_user = "SELECT sum(n) AS s FROM (SELECT count(*) AS n FROM contacts GROUP BY user_id) t"
    zero = db.execute_admin(total)
    assert zero == [{"s": Decimal(0)}]
    assert type(zero[0]["s"]) is Decimal
    assert db.execute_admin(per_user) == [{"s": None}]  # the sum of no rows is NULL
    for user, name in ((alice, "Ann"), (alice, "Ben"), (bob, "Cid")):
        add_contact(db, user, name)
    rows = db.execute_admin(per_user)
    assert rows == [{"s": Decimal(3)}]
    assert type(rows[0]["s"]) is Decimal
    assert str(rows[0]["s"]) == "3"
    mine = db.execute_one(total, (), alice)
    assert mine == {"s": Decimal(2)}
    assert mine is not None
    assert type(mine["s"]) is Decimal


def test_sums_of_rankings_and_bigints_are_numeric(db: ContractDB, alice: UUID) -> None:
    for subject, priority in (("a", 1), ("b", 2), ("c", 2)):
        add_ticket(db, alice, subject, priority=priority)
    row = db.execute_one(
        "SELECT sum(n) AS n, sum(r) AS r, sum(d) AS d, sum(w) AS w FROM ("
        "SELECT row_number() OVER (ORDER BY subject) AS n, rank() OVER (ORDER BY priority) AS r,"
        " dense_rank() OVER (ORDER BY priority) AS d, count(*) OVER (PARTITION BY priority) AS w"
        " FROM tickets) t",
        (),
        alice,
    )
    assert row == {"n": Decimal(6), "r": Decimal(5), "d": Decimal(5), "w": Decimal(5)}
    assert row is not None
    assert {type(v) for v in row.values()} == {Decimal}
    big = db.execute_one("SELECT sum(priority::bigint) AS s FROM tickets", (), alice)
    assert big == {"s": Decimal(5)}
    assert big is not None
    assert type(big["s"]) is Decimal


def test_sums_of_smaller_integers_are_bigint(db: ContractDB, alice: UUID) -> None:
    """sum(integer) and sum(smallint) are bigint: ints, as psycopg gives them."""
    for subject, priority in (("a", 1), ("b", 2)):
        add_ticket(db, alice, subject, priority=priority)
    row = db.execute_one(
        "SELECT sum(priority) AS p, sum(priority::smallint) AS small, "
        "sum(length(subject)) AS chars FROM tickets",
        (),
        alice,
    )
    assert row == {"p": 3, "small": 3, "chars": 2}
    assert row is not None
    assert {type(v) for v in row.values()} == {int}
    of_sums = db.execute_one(
        "SELECT sum(s) AS s FROM (SELECT sum(priority) AS s FROM tickets) t", (), alice
    )
    assert of_sums == {"s": Decimal(3)}  # sum(integer) is bigint, and a sum of bigints numeric
    assert of_sums is not None
    assert type(of_sums["s"]) is Decimal


def test_a_sum_takes_the_width_of_a_user_scoped_parameter(db: ContractDB, alice: UUID) -> None:
    """The PostgreSQL client sends user-scoped int parameters as bigint (int8)."""
    add_ticket(db, alice, "a", priority=2)
    row = db.execute_one(
        "SELECT sum(coalesce(priority, %s)) AS wide, sum(greatest(priority, 1)) AS narrow "
        "FROM tickets",
        (0,),
        alice,
    )
    assert row == {"wide": Decimal(2), "narrow": 2}
    assert row is not None
    assert (type(row["wide"]), type(row["narrow"])) == (Decimal, int)
    product = "SELECT coalesce(priority, %s) * 2147483647 AS p FROM tickets"
    assert db.execute(product, (0,), user_id=alice) == [{"p": 2 * 2147483647}]


def test_arithmetic_on_a_count_from_a_subquery_is_bigint(db: ContractDB, alice: UUID) -> None:
    for subject in ("a", "b"):
        add_ticket(db, alice, subject)
    rows = db.execute(
        "SELECT n * 2000000000 AS p FROM (SELECT count(*) AS n FROM tickets) t", user_id=alice
    )
    assert rows == [{"p": 4000000000}]  # bigint: no "integer out of range"
    with pytest.raises(DatabaseError, match="bigint out of range") as caught:
        db.execute(
            "SELECT n * 4611686018427387904 AS p FROM (SELECT count(*) AS n FROM tickets) t",
            user_id=alice,
        )
    assert not isinstance(caught.value, UnsupportedQueryError)


BIG_SUM = (
    "SELECT sum(x) AS s FROM (SELECT 9223372036854775807::bigint AS x "
    "UNION ALL SELECT 9223372036854775807) t"
)
WIDENED_SUM = "SELECT sum(coalesce(priority, %s)) AS s FROM tickets"


@pytest.mark.parametrize(
    ("query", "params", "expected"),
    [
        (BIG_SUM, (), Decimal(2 * 9223372036854775807)),  # beyond what the fake holds exactly
        # The admin path's int parameter is int2, int4 or int8 as its value needs: the sum is
        # bigint or numeric depending on the value, which the fake cannot tell beforehand.
        (WIDENED_SUM, (1,), 2),
        (WIDENED_SUM, (2**40,), Decimal(2)),
    ],
)
def test_sums_the_fake_cannot_type_are_answered_by_postgresql_or_refused(
    db: ContractDB, alice: UUID, query: str, params: tuple[Any, ...], expected: Any
) -> None:
    """Never a different answer: PostgreSQL's value and type, or a refusal by name."""
    add_ticket(db, alice, "a", priority=2)
    outcome: list[dict[str, Any]] | UnsupportedQueryError
    try:
        outcome = db.execute_admin(query, params)
    except UnsupportedQueryError as refused:
        outcome = refused
    if isinstance(outcome, UnsupportedQueryError):
        assert "sum()" in str(outcome)
        assert "test that query against PostgreSQL" in str(outcome)
    else:
        assert outcome == [{"s": expected}]
        assert type(outcome[0]["s"]) is type(expected)


# --- a parameter's integer type follows how PostgresClient sends it -----------------------------
#
# Every user-scoped value travels as a protocol parameter of a declared type: an int is int8
# (numeric beyond), and None (like a str) is unknown, so the server gives it the type of what
# it meets (an integer column). A list (for `= ANY(%s)`) is an array and changes nothing of
# the other parameters.

ANY_SUBJECT = " AND subject = ANY(%s)"
SUBJECTS = ["a", "b", "c"]


@pytest.fixture
def ranked(db: ContractDB, alice: UUID) -> UUID:
    """Alice's tickets: two urgent ones (priorities 1 and 2), one not (priority 3)."""
    add_ticket(db, alice, "a", priority=1, urgent=True)
    add_ticket(db, alice, "b", priority=2, urgent=True)
    add_ticket(db, alice, "c", priority=3, urgent=False)
    return alice


@pytest.mark.parametrize(
    ("query", "params", "expected"),
    [
        # None is untyped: it takes the integer column's type, so the sum is bigint (an int).
        (
            "SELECT sum(CASE WHEN urgent THEN priority ELSE %s END) AS s FROM tickets",
            (None,),
            3,
        ),
        ("SELECT sum(coalesce(%s, priority)) AS s FROM tickets", (None,), 6),
        ("SELECT sum(coalesce(priority, %s)) AS s FROM tickets", (None,), 6),
        ("SELECT sum(greatest(%s, priority)) AS s FROM tickets", (None,), 6),
        # A prepared int is bigint: the sum is numeric (a Decimal).
        ("SELECT sum(CASE WHEN urgent THEN %s ELSE 0 END) AS s FROM tickets", (5,), Decimal(10)),
        ("SELECT sum(coalesce(%s, priority)) AS s FROM tickets", (0,), Decimal(0)),
        # A list beside them changes nothing: an int is still bigint.
        (
            "SELECT sum(CASE WHEN urgent THEN %s ELSE 0 END) AS s FROM tickets WHERE true"
            + ANY_SUBJECT,
            (5, SUBJECTS),
            Decimal(10),
        ),
        (
            "SELECT sum(coalesce(priority, %s)) AS s FROM tickets WHERE true" + ANY_SUBJECT,
            (0, SUBJECTS),
            Decimal(6),
        ),
        (
            "SELECT sum(coalesce(%s, priority)) AS s FROM tickets WHERE true" + ANY_SUBJECT,
            (None, SUBJECTS),
            6,
        ),
        (
            "SELECT sum(coalesce(priority, %s)) AS s FROM tickets WHERE true" + ANY_SUBJECT,
            (2**40, SUBJECTS),
            Decimal(6),
        ),
        (
            "SELECT sum(CASE WHEN urgent THEN %s ELSE 0 END) AS s FROM tickets WHERE true"
            + ANY_SUBJECT,
            (-(2**31) - 1, SUBJECTS),
            Decimal(-(2**32) - 2),
        ),
        (
            "SELECT sum(CASE WHEN urgent THEN %s ELSE 0 END) AS s FROM tickets WHERE true"
            + ANY_SUBJECT,
            (-(2**31), SUBJECTS),
            Decimal(-(2**32)),
        ),
    ],
)
def test_a_sums_type_follows_how_its_parameters_are_sent(
    db: ContractDB, ranked: UUID, query: str, params: tuple[Any, ...], expected: Any
) -> None:
    rows = db.execute(query, params, user_id=ranked)
    assert rows == [{"s": expected}]
    assert type(rows[0]["s"]) is type(expected)


@pytest.mark.parametrize(
    ("query", "params"),
    [
        # None takes the integer column's type: integer * integer overflows.
        ("SELECT coalesce(%s, priority) * 2147483647 AS p FROM tickets", (None,)),
        (
            "SELECT CASE WHEN urgent THEN %s ELSE priority END * 2147483647 AS p FROM tickets",
            (None,),
        ),
        (
            "SELECT coalesce(%s, priority) * 2147483647 AS p FROM tickets WHERE true"
            + ANY_SUBJECT,
            (None, SUBJECTS),
        ),
    ],
)
def test_integer_parameters_sent_as_integer_overflow_as_integer(
    db: ContractDB, ranked: UUID, query: str, params: tuple[Any, ...]
) -> None:
    with pytest.raises(DatabaseError, match="integer out of range") as caught:
        db.execute(query, params, user_id=ranked)
    assert not isinstance(caught.value, UnsupportedQueryError)
    assert "bigint" not in str(caught.value)


def test_prepared_int_parameters_are_bigint_in_arithmetic(db: ContractDB, ranked: UUID) -> None:
    rows = db.execute(
        "SELECT %s * 2147483647 AS p, coalesce(priority, %s) * 2147483647 AS q FROM tickets"
        " WHERE subject = 'c'",
        (2, 0),
        user_id=ranked,
    )
    assert rows == [{"p": 2 * 2147483647, "q": 3 * 2147483647}]
    big = db.execute(
        "SELECT %s * 2147483647 AS p FROM tickets WHERE subject = 'c'" + ANY_SUBJECT,
        (2**31, SUBJECTS),
        user_id=ranked,
    )
    assert big == [{"p": 2**31 * 2147483647}]


def test_a_transactions_parameters_are_typed_alike(db: ContractDB, ranked: UUID) -> None:
    with db.transaction(ranked) as tx:
        untyped = tx.execute("SELECT sum(coalesce(%s, priority)) AS s FROM tickets", (None,))
        wide = tx.execute("SELECT sum(coalesce(%s, priority)) AS s FROM tickets", (0,))
        listed = tx.execute(
            "SELECT sum(coalesce(priority, %s)) AS s FROM tickets WHERE true" + ANY_SUBJECT,
            (0, SUBJECTS),
        )
    assert (untyped, wide, listed) == ([{"s": 6}], [{"s": Decimal(0)}], [{"s": Decimal(6)}])
    assert [type(r[0]["s"]) for r in (untyped, wide, listed)] == [int, Decimal, Decimal]


def test_the_same_text_with_other_parameter_types_is_typed_afresh(
    db: ContractDB, ranked: UUID
) -> None:
    """The fake's translation cache must not hand one call's types to the next."""
    query = "SELECT sum(coalesce(%s, priority)) AS s FROM tickets"
    outcomes = [db.execute(query, params, user_id=ranked) for params in ((None,), (0,), (None,))]
    assert outcomes == [[{"s": 6}], [{"s": Decimal(0)}], [{"s": 6}]]
    assert [type(o[0]["s"]) for o in outcomes] == [int, Decimal, int]


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("SELECT (priority + %s) * 2147483647 AS p FROM tickets WHERE subject = 'c'", (None,)),
        (
            "SELECT (priority + %s) * 2147483647 AS p FROM tickets WHERE subject = 'c'"
            + ANY_SUBJECT,
            (1, SUBJECTS),
        ),
    ],
)
def test_integer_arithmetic_with_an_untyped_parameter_stays_integer(
    db: ContractDB, ranked: UUID, query: str, params: tuple[Any, ...]
) -> None:
    outcome: list[dict[str, Any]] | DatabaseError
    try:
        outcome = db.execute(query, params, user_id=ranked)
    except DatabaseError as exc:
        outcome = exc
    if params[0] is None:
        assert outcome == [{"p": None}]
    else:
        assert outcome == [{"p": 4 * 2147483647}]  # an int is bigint, list or not
    prepared = db.execute(
        "SELECT (priority + %s) * 2147483647 AS p FROM tickets WHERE subject = 'c'", (1,), ranked
    )
    assert prepared == [{"p": 4 * 2147483647}]  # a prepared int is bigint


def test_a_case_of_parameters_alone_is_answered_by_postgresql_or_refused(
    db: ContractDB, ranked: UUID
) -> None:
    """None next to a bigint parameter is bigint too; the fake may refuse to type it."""
    outcome: list[dict[str, Any]] | UnsupportedQueryError
    try:
        outcome = db.execute(
            "SELECT sum(CASE WHEN urgent THEN %s ELSE %s END) AS s FROM tickets", (None, 5), ranked
        )
    except UnsupportedQueryError as refused:
        outcome = refused
    if isinstance(outcome, UnsupportedQueryError):
        assert "sum() over unknown values" in str(outcome)
    else:
        assert outcome == [{"s": Decimal(5)}]
        assert type(outcome[0]["s"]) is Decimal
