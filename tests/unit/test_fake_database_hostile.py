"""The fake when the SQL itself is hostile: the client's guard, its own names, SQLite's reading.

Alice runs the SQL; Bob owns a contact named ``BOB_SECRET``. Whatever Alice's SQL is, it may
fail or act as Alice, never read, change or copy Bob's rows (docs/database.md, the threat
model). The fake must refuse what ``PostgresClient`` refuses, in the same words, and also every
name of its own (the base tables behind its views...), however it is spelled.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from crm_infra import (
    DatabaseError,
    RowSecurityError,
    TransactionUsageError,
    UnsafeQueryError,
    UnsupportedQueryError,
)
from crm_infra.fakes import InMemoryUserScopedDB
from crm_infra.fakes.sql.sqlite import CrmFakeSQLite

ALICE = UUID("00000000-0000-4000-8000-00000000000a")
BOB = UUID("00000000-0000-4000-8000-00000000000b")
BOB_CONTACT = UUID("00000000-0000-4000-8000-0000000000b1")
SECRET = "BOB_SECRET"


def seed(fake: InMemoryUserScopedDB) -> None:
    for user, email in ((ALICE, "alice@example.com"), (BOB, "bob@example.com")):
        fake.execute_admin("INSERT INTO users (id, email) VALUES (%s, %s)", (user, email))
    fake.execute("INSERT INTO contacts (name) VALUES ('Ann')", user_id=ALICE)
    fake.execute(
        "INSERT INTO contacts (id, name) VALUES (%s, %s)", (BOB_CONTACT, SECRET), user_id=BOB
    )
    fake.execute(
        "INSERT INTO tickets (contact_id, subject) VALUES (%s, %s)",
        (BOB_CONTACT, SECRET),
        user_id=BOB,
    )


@pytest.fixture
def db() -> Iterator[InMemoryUserScopedDB]:
    fake = InMemoryUserScopedDB()
    seed(fake)
    yield fake
    fake.close()


def everything(db: InMemoryUserScopedDB) -> list[Any]:
    """Every row of every table, through the admin path."""
    return [
        db.execute_admin(f"SELECT * FROM {table} ORDER BY id")
        for table in ("users", "contacts", "addresses", "tickets")
    ]


def bobs(db: InMemoryUserScopedDB) -> list[Any]:
    return [
        db.execute_admin(f"SELECT * FROM {table} WHERE user_id = %s ORDER BY id", (BOB,))
        for table in ("contacts", "addresses", "tickets")
    ]


def assert_never_crosses(db: InMemoryUserScopedDB, query: str, params: Any = ()) -> Any:
    """Run ``query`` as Alice: it may fail (with a port error) or act as Alice, never more."""
    before = bobs(db)
    try:
        outcome: Any = db.execute(query, params, user_id=ALICE)
    except DatabaseError as exc:
        outcome = exc
    assert SECRET not in repr(outcome)
    assert bobs(db) == before
    alices = db.execute_admin("SELECT * FROM contacts WHERE user_id = %s", (ALICE,))
    assert SECRET not in repr(alices)
    tickets = db.execute_admin("SELECT * FROM tickets WHERE user_id = %s", (ALICE,))
    assert SECRET not in repr(tickets)
    return outcome


# --- the client's guard, run by the fake --------------------------------------------------------


REFUSED = [
    ("SELECT set_config('app.current_user_id', %s, false)", "set_config"),
    ("SELECT U&\"\\0073et_config\"('app.current_user_id', %s, true)", 'U&"\\0073et_config"'),
    ("SET LOCAL app.current_user_id = %s", "SET LOCAL app.current_user_id"),
    ("DO $$BEGIN PERFORM set_config('app.current_user_id', %s, true); END$$", "DO"),
    ("SELECT 1 AS one WHERE %s IS NOT NULL; SELECT name FROM contacts", "2 statements"),
    ("BEGIN", "BEGIN"),
    ("TRUNCATE contacts", "TRUNCATE"),
    ("PREPARE p AS SELECT 1 WHERE 1 = %s", "PREPARE"),
    ("SELECT pg_advisory_lock(%s)", "pg_advisory_lock"),
    ("SELECT 1 AS one WHERE %s IS NOT NULL AND $2 IS NULL", "$n placeholders of its own"),
]


@pytest.mark.parametrize(("query", "named"), REFUSED)
def test_the_clients_refusals_are_the_fakes(
    db: InMemoryUserScopedDB, query: str, named: str
) -> None:
    before = everything(db)
    for call in (db.execute, db.execute_one, db.execute_scalar):
        with pytest.raises(UnsafeQueryError) as caught:
            call(query, (str(BOB),), ALICE)
        message = str(caught.value)
        assert message.startswith("execute: ")
        assert f" refused: user-scoped SQL may not use {named}" in message
        assert message.endswith("; nothing ran")
        assert isinstance(caught.value, ValueError)
        assert not isinstance(caught.value, UnsupportedQueryError)
    assert everything(db) == before


@pytest.mark.parametrize(("query", "named"), REFUSED)
def test_a_refusal_inside_a_transaction_aborts_it(
    db: InMemoryUserScopedDB, query: str, named: str
) -> None:
    def block() -> None:
        with db.transaction(ALICE) as tx:
            tx.execute("INSERT INTO contacts (name) VALUES ('lost')")
            refused = rf"^transaction\.execute: .* {re.escape(named)}"
            with pytest.raises(UnsafeQueryError, match=refused):
                tx.execute(query, (str(BOB),))
            with pytest.raises(DatabaseError, match="aborted"):
                tx.execute("SELECT 1 AS one")

    with pytest.raises(TransactionUsageError):
        block()
    assert db.execute("SELECT name FROM contacts", user_id=ALICE) == [{"name": "Ann"}]


def test_a_syntax_error_is_the_clients_and_aborts_a_transaction(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(DatabaseError, match=r"syntax error at or near \"SELEC\".*42601") as caught:
        db.execute("SELEC 1", user_id=ALICE)
    assert not isinstance(caught.value, UnsupportedQueryError | UnsafeQueryError)

    def block() -> None:
        with db.transaction(ALICE) as tx:
            with pytest.raises(DatabaseError, match="unterminated quoted string"):
                tx.execute("SELECT 'abc")
            with pytest.raises(DatabaseError, match="aborted"):
                tx.execute("SELECT 1 AS one")

    with pytest.raises(TransactionUsageError):
        block()


def test_sql_the_fake_cannot_run_leaves_a_transaction_going(db: InMemoryUserScopedDB) -> None:
    with db.transaction(ALICE) as tx:
        with pytest.raises(UnsupportedQueryError):
            tx.execute("SELECT name FROM contacts FOR UPDATE SKIP LOCKED")
        assert tx.execute("SELECT name FROM contacts") == [{"name": "Ann"}]


def test_a_placeholder_inside_a_literal_is_refused_as_by_the_client(
    db: InMemoryUserScopedDB,
) -> None:
    with pytest.raises(UnsafeQueryError, match="inside a quoted string"):
        db.execute("SELECT 1 AS one WHERE '%s' = 'x'", (1,), user_id=ALICE)


# --- the fake's own names ---------------------------------------------------------------------


ISSUE_READ = (
    "SELECT name FROM _t_contacts WHERE EXISTS "
    "(WITH _t_contacts AS (SELECT 1) SELECT 1 FROM _t_contacts)"
)
ISSUE_COPY = (
    "INSERT INTO contacts (name) SELECT name FROM _t_contacts WHERE EXISTS "
    "(WITH _t_contacts AS (SELECT 1) SELECT 1 FROM _t_contacts)"
)


@pytest.mark.parametrize(
    ("query", "written"),
    [
        (ISSUE_READ, "_t_contacts"),
        (ISSUE_COPY, "_t_contacts"),
        ("SELECT name FROM _t_contacts", "_t_contacts"),
        ("SELECT name FROM _T_Contacts", "_T_Contacts"),
        ('SELECT name FROM "_T_CONTACTS"', '"_T_CONTACTS"'),
        ('SELECT name FROM public."_t_contacts"', '"_t_contacts"'),
        ('SELECT name FROM U&"\\005Ft_contacts"', 'U&"\\005Ft_contacts" (_t_contacts)'),
        ("WITH _t_contacts AS (SELECT 1 AS x) SELECT x FROM _t_contacts", "_t_contacts"),
        ("SELECT name FROM contacts AS _t_tickets", "_t_tickets"),
        ("SELECT _t_contacts.name FROM contacts", "_t_contacts"),
        ("SELECT c._t_addresses FROM contacts c", "_t_addresses"),
        ("UPDATE contacts SET name = 'x' FROM _t_contacts AS b", "_t_contacts"),
        ("DELETE FROM contacts WHERE id IN (SELECT id FROM _t_contacts)", "_t_contacts"),
        ("SELECT sql FROM sqlite_master", "sqlite_master"),
        ("WITH sqlite_schema AS (SELECT 1 AS x) SELECT x FROM sqlite_schema", "sqlite_schema"),
        ("SELECT crm_rls_active() AS a", "crm_rls_active"),
        ("SELECT pg_now() AS a", "pg_now"),
        ("SELECT PG_CAST_UUID(name) AS a FROM contacts", "PG_CAST_UUID"),
        ("WITH _crm_cte_0 AS (SELECT 1 AS x) SELECT x FROM _crm_cte_0", "_crm_cte_0"),
        ("SELECT 1 AS _rls_contacts_ins", "_rls_contacts_ins"),
    ],
)
def test_a_name_internal_to_the_fake_is_refused_as_written(
    db: InMemoryUserScopedDB, query: str, written: str
) -> None:
    before = everything(db)
    with pytest.raises(UnsafeQueryError) as caught:
        db.execute(query, user_id=ALICE)
    assert f"may not use {written}: it is a name internal to the in-memory" in str(caught.value)
    assert everything(db) == before
    assert_never_crosses(db, query)


def test_the_admin_path_does_not_reach_internal_names_either(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(DatabaseError, match="internal to the in-memory"):
        db.execute_admin(ISSUE_READ)


# --- where PostgreSQL's parser and sqlglot could read a text differently ----------------------


@pytest.mark.parametrize(
    "query",
    [
        # PostgreSQL nests block comments and SQLite does not: copied through as written, the
        # comment would end early in SQLite.
        "SELECT name /* /* */ FROM _t_contacts -- */ FROM contacts",
        "SELECT name FROM contacts /* /* */ , _t_contacts -- */",
        "SELECT name FROM contacts /* /* */ WHERE false UNION SELECT name FROM _t_contacts -- */",
        "SELECT 1 AS x /* /* */ ; TRUNCATE contacts -- */",
        "SELECT name FROM contacts -- \n",
    ],
)
def test_comments_never_reach_sqlite(db: InMemoryUserScopedDB, query: str) -> None:
    outcome = assert_never_crosses(db, query)
    assert not isinstance(outcome, DatabaseError)


@pytest.mark.parametrize(
    ("query", "construct"),
    [
        ("SELECT E'a\\' FROM _t_contacts --' AS x FROM contacts", "E'...' strings"),
        ("SELECT U&'\\0041' AS x", "U&'...' strings"),
        ("SELECT @x AS x FROM (SELECT -1 AS x) s", "prefix operator @"),
    ],
)
def test_what_sqlglot_would_read_otherwise_is_refused(
    db: InMemoryUserScopedDB, query: str, construct: str
) -> None:
    with pytest.raises(UnsupportedQueryError, match=construct):
        db.execute(query, user_id=ALICE)


def emitted(db: InMemoryUserScopedDB, query: str, params: Any = ()) -> str:
    db.execute(query, params, user_id=ALICE)
    return db._cache[(False, bool(params), query)].sql


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("SELECT c.name AS n FROM contacts c WHERE c.id = %s", (BOB_CONTACT,)),
        ("SELECT Name, EMAIL FROM Contacts ORDER BY NAME /* a comment */", ()),
        (
            (
                "WITH x AS (SELECT name FROM contacts) "
                "SELECT x.name FROM x JOIN contacts y USING (name)"
            ),
            (),
        ),
        (
            (
                "INSERT INTO contacts AS c (name) VALUES (%s) ON CONFLICT (id) DO UPDATE SET "
                "name = excluded.name WHERE c.name <> 'z' RETURNING c.id"
            ),
            ("Cy",),
        ),
        (
            (
                "UPDATE contacts SET name = t.subject FROM tickets t "
                "WHERE t.contact_id = contacts.id"
            ),
            (),
        ),
        ("DELETE FROM tickets WHERE contact_id IN (SELECT id FROM contacts) RETURNING *", ()),
    ],
)
def test_every_identifier_sent_to_sqlite_is_quoted(
    db: InMemoryUserScopedDB, query: str, params: Any
) -> None:
    sql = emitted(db, query, params)
    assert "/*" not in sql
    assert "--" not in sql
    tree = sqlglot.parse_one(re.sub(r"\?\d+", "NULL", sql), read=CrmFakeSQLite)
    identifiers = list(tree.find_all(exp.Identifier))
    assert identifiers
    assert all(i.quoted for i in identifiers), sql


def test_the_schema_sent_to_sqlite_quotes_every_identifier(db: InMemoryUserScopedDB) -> None:
    rows = db._conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    assert rows
    for (sql,) in rows:
        assert " `" in sql
        assert '"' not in sql, sql


# --- names resolve as PostgreSQL resolves them ----------------------------------------------


@pytest.mark.parametrize(
    ("query", "rows"),
    [
        # A WITH query named like a table hides the table in its statement only.
        ("WITH contacts AS (SELECT 'cte' AS name) SELECT name FROM contacts", [{"name": "cte"}]),
        (
            (
                "SELECT name FROM contacts WHERE EXISTS (WITH contacts AS (SELECT 1 AS x) "
                "SELECT x FROM contacts)"
            ),
            [{"name": "Ann"}],
        ),
        # In its own body the name is the table's (no WITH RECURSIVE): still Alice's rows.
        (
            "WITH contacts AS (SELECT name FROM contacts) SELECT name FROM contacts",
            [{"name": "Ann"}],
        ),
        # The nearest WITH query wins, with its own columns and types.
        (
            (
                "WITH a AS (SELECT 1 AS x) SELECT x FROM (WITH a AS (SELECT 'z' AS x) "
                "SELECT x FROM a) s"
            ),
            [{"x": "z"}],
        ),
        (
            (
                "WITH a AS (SELECT 1 AS x) SELECT x FROM a WHERE EXISTS "
                "(WITH a AS (SELECT 'z' AS x) SELECT x FROM a)"
            ),
            [{"x": 1}],
        ),
        (
            (
                "WITH a AS (SELECT 1 AS x) SELECT x FROM (WITH a AS (SELECT x + 1 AS x FROM a) "
                "SELECT x FROM a) s"
            ),
            [{"x": 2}],
        ),
        ("WITH a (p, \"Q\") AS (SELECT 1, 'x') SELECT * FROM a", [{"p": 1, "Q": "x"}]),
        ("WITH tickets AS (SELECT 'cte' AS subject) SELECT count(*) AS n FROM tickets", [{"n": 1}]),
    ],
)
def test_with_queries_are_scoped_as_in_postgresql(
    db: InMemoryUserScopedDB, query: str, rows: list[dict[str, Any]]
) -> None:
    assert assert_never_crosses(db, query) == rows


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT x FROM a WHERE EXISTS (WITH a AS (SELECT 1 AS x) SELECT 1 FROM a)", '"a" does'),
        ("WITH a AS (SELECT x FROM b), b AS (SELECT 1 AS x) SELECT x FROM a", '"b" does'),
        ("WITH a AS (SELECT 1 AS x), a AS (SELECT 2 AS x) SELECT x FROM a", "more than once"),
        ("WITH a (p, q) AS (SELECT 1) SELECT p FROM a", "2 columns specified"),
    ],
)
def test_with_query_names_outside_their_scope_fail_as_in_postgresql(
    db: InMemoryUserScopedDB, query: str, message: str
) -> None:
    with pytest.raises(DatabaseError, match=message) as caught:
        db.execute(query, user_id=ALICE)
    assert not isinstance(caught.value, UnsupportedQueryError | UnsafeQueryError)


@pytest.mark.parametrize(
    "query",
    [
        (
            "WITH contacts AS (SELECT %s AS name) INSERT INTO contacts (name) "
            "SELECT name FROM contacts RETURNING name"
        ),
        (
            "WITH contacts AS (SELECT %s AS name) UPDATE contacts SET name = 'x' "
            "WHERE name IN (SELECT name FROM contacts) RETURNING name"
        ),
        (
            "WITH contacts AS (SELECT %s AS name) DELETE FROM contacts "
            "WHERE name IN (SELECT name FROM contacts) RETURNING name"
        ),
    ],
)
def test_a_write_goes_to_the_table_never_to_a_with_query_of_its_name(
    db: InMemoryUserScopedDB, query: str
) -> None:
    if query.startswith("WITH contacts AS (SELECT %s AS name) INSERT"):
        rows = assert_never_crosses(db, query, ("Amy",))
        assert rows == [{"name": "Amy"}]  # Alice's own new row
    else:
        rows = assert_never_crosses(db, query, (SECRET,))
        assert rows == []  # Alice has no contact of that name; Bob's is out of reach


def test_a_with_query_may_share_a_tables_name_on_the_admin_path(
    db: InMemoryUserScopedDB,
) -> None:
    query = "WITH contacts AS (SELECT name FROM contacts) SELECT count(*) AS n FROM contacts"
    assert db.execute_admin(query) == [{"n": 2}]


# --- writes that could reach another user's rows ----------------------------------------------


@pytest.mark.parametrize("where", ["contacts.name LIKE 'A%%'", "contacts.name LIKE 'B%%'", "false"])
def test_an_upsert_checks_the_existing_row_before_its_where(
    db: InMemoryUserScopedDB, where: str
) -> None:
    # PostgreSQL refuses a conflicting row of another user before it looks at DO UPDATE's
    # WHERE; otherwise the WHERE would tell, by the error or its absence, what the row holds.
    query = (
        "INSERT INTO contacts (id, name) VALUES (%s, 'x') "
        f"ON CONFLICT (id) DO UPDATE SET name = 'y' WHERE {where}"
    )
    with pytest.raises(RowSecurityError, match="USING expression"):
        db.execute(query, (BOB_CONTACT,), user_id=ALICE)
    assert_never_crosses(db, query, (BOB_CONTACT,))


def test_an_upsert_on_the_users_own_row_still_honours_its_where(db: InMemoryUserScopedDB) -> None:
    ann = db.execute_scalar("SELECT id FROM contacts", user_id=ALICE)
    upsert = (
        "INSERT INTO contacts AS c (id, name) VALUES (%s, 'new') "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name WHERE c.name = %s RETURNING name"
    )
    assert db.execute(upsert, (ann, "nobody"), user_id=ALICE) == []
    assert db.execute(upsert, (ann, "Ann"), user_id=ALICE) == [{"name": "new"}]


@pytest.mark.parametrize(
    ("query", "rows"),
    [
        (
            (
                "UPDATE contacts AS c SET name = 'Ann' FROM contacts AS contacts "
                "WHERE c.id = contacts.id RETURNING c.name"
            ),
            [{"name": "Ann"}],
        ),
        ("UPDATE contacts SET name = 'Ann' FROM tickets WHERE true RETURNING contacts.name", []),
        ("DELETE FROM contacts AS tickets WHERE tickets.name = %s RETURNING tickets.name", []),
        ("DELETE FROM tickets AS contacts WHERE contacts.subject = %s RETURNING subject", []),
        (
            (
                "UPDATE tickets SET subject = 'x' FROM contacts c WHERE c.name = %s "
                "RETURNING tickets.id"
            ),
            [],
        ),
        ("INSERT INTO tickets (subject) SELECT subject FROM tickets WHERE subject = %s", []),
    ],
)
def test_aliases_never_retarget_a_write(
    db: InMemoryUserScopedDB, query: str, rows: list[dict[str, Any]]
) -> None:
    params = (SECRET,) if "%s" in query else ()
    assert assert_never_crosses(db, query, params) == rows


def test_returning_names_the_target_as_the_statement_does(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(UnsupportedQueryError, match="RETURNING columns of another table"):
        db.execute(
            "UPDATE contacts SET name = 'Ann' FROM tickets t WHERE true RETURNING t.*",
            user_id=ALICE,
        )
    with pytest.raises(DatabaseError, match=r"contacts\.name"):
        db.execute("UPDATE contacts c SET name = 'Ann' RETURNING contacts.name", user_id=ALICE)


# --- random hostile statements ----------------------------------------------------------------

_SOURCES = [
    "contacts",
    "_t_contacts",
    '"_t_contacts"',
    "public._t_contacts",
    "(SELECT * FROM contacts) AS s",
    "(SELECT * FROM _t_contacts) AS s",
    "tickets AS contacts",
    "contacts AS tickets",
]
_WRAPPERS = [
    "{q}",
    "WITH contacts AS (SELECT 'cte' AS name) {q}",
    "WITH _t_contacts AS (SELECT 1 AS x) {q}",
    "WITH x AS (SELECT name FROM contacts) {q}",
    "{q} /* /* */ UNION SELECT name FROM _t_contacts -- */",
]
_FILTERS = [
    "",
    " WHERE true",
    " WHERE EXISTS (WITH _t_contacts AS (SELECT 1) SELECT 1 FROM _t_contacts)",
    " WHERE EXISTS (WITH contacts AS (SELECT 1 AS x) SELECT x FROM contacts)",
    " WHERE name LIKE 'BOB%' OR true",
]
_STATEMENTS = [
    "SELECT name FROM {src}{where}",
    "SELECT count(*) AS n FROM {src}{where}",
    "INSERT INTO contacts (name) SELECT name FROM {src}{where}",
    "UPDATE contacts SET name = 'x' FROM {src}{where}",
    "DELETE FROM contacts{where}",
    "INSERT INTO contacts (id, name) VALUES ('" + str(BOB_CONTACT) + "', 'x') "
    "ON CONFLICT (id) DO UPDATE SET name = 'y'{where}",
]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    statement=st.sampled_from(_STATEMENTS),
    source=st.sampled_from(_SOURCES),
    where=st.sampled_from(_FILTERS),
    wrapper=st.sampled_from(_WRAPPERS),
)
def test_random_hostile_statements_never_cross_users(
    statement: str, source: str, where: str, wrapper: str
) -> None:
    query = wrapper.format(q=statement.format(src=source, where=where))
    with InMemoryUserScopedDB() as fake:
        seed(fake)
        assert_never_crosses(fake, query)
        # ... and the next call, as Bob, behaves as on a fresh database.
        assert fake.execute("SELECT name FROM contacts", user_id=BOB) == [{"name": SECRET}]


def test_a_name_sqlite_cannot_resolve_is_an_error_never_a_string(
    db: InMemoryUserScopedDB,
) -> None:
    # SQLite reads a double-quoted name it cannot resolve as a string literal: `"c" IS NOT
    # NULL` would be true. Quoted with backticks, it is an error, as on PostgreSQL a row
    # with a NULL field is not NOT NULL.
    with pytest.raises(DatabaseError, match="no such column"):
        db.execute("SELECT c.name FROM contacts c WHERE c IS NOT NULL", user_id=ALICE)


def test_only_changes_nothing_and_from_alias_column_lists_are_refused(
    db: InMemoryUserScopedDB,
) -> None:
    assert db.execute("SELECT name FROM ONLY contacts", user_id=ALICE) == [{"name": "Ann"}]
    assert db.execute("UPDATE ONLY contacts SET name = name RETURNING name", user_id=ALICE) == [
        {"name": "Ann"}
    ]
    with pytest.raises(UnsupportedQueryError, match="column lists in a FROM item's alias"):
        db.execute("SELECT x FROM contacts AS c(i, u, x)", user_id=ALICE)
    with pytest.raises(UnsupportedQueryError, match="column lists in a FROM item's alias"):
        db.execute("WITH a AS (SELECT 1 AS p) SELECT q FROM a AS b(q)", user_id=ALICE)


# --- what Alice's statement does never depends on Bob's rows ----------------------------------

_TRAPS = [  # each fails on a row whose name starts with B, which only Bob has
    "1 / (CASE WHEN name LIKE 'B%' THEN 0 ELSE 1 END) = 1",
    "(CASE WHEN name LIKE 'B%' THEN 'x' ELSE '1' END)::int = 1",
    "length(name) / (CASE WHEN name LIKE 'B%' THEN 0 ELSE 1 END) >= 0",
    "name LIKE (CASE WHEN name LIKE 'B%' THEN 'a\\' ELSE 'A%' END)",
    "EXISTS (SELECT 1 FROM tickets t WHERE 1 / (CASE WHEN t.subject > 'B' THEN 0 ELSE 1 END) = 1)",
]
_NEAR = ["", f"id = '{BOB_CONTACT}' AND ", f"user_id = '{BOB}' AND ", "id IS NOT NULL AND "]
_SHAPES = [
    "SELECT count(*) AS n FROM contacts WHERE {w}",
    "SELECT count(*) AS n FROM (SELECT * FROM contacts) s WHERE {w}",
    "SELECT count(*) AS n FROM tickets t RIGHT JOIN contacts c ON c.id = t.contact_id WHERE {w}",
    "UPDATE contacts SET name = name WHERE {w}",
    "DELETE FROM contacts WHERE {w}",
]


def outcome_of(fake: InMemoryUserScopedDB, query: str) -> Any:
    try:
        return fake.execute(query, user_id=ALICE)
    except DatabaseError as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=60, deadline=None)
@given(shape=st.sampled_from(_SHAPES), near=st.sampled_from(_NEAR), trap=st.sampled_from(_TRAPS))
def test_no_error_or_answer_tells_what_another_users_rows_hold(
    shape: str, near: str, trap: str
) -> None:
    # PostgreSQL applies a policy before the statement's own conditions (a security barrier):
    # a condition that fails on some value never meets another user's rows. Run once with
    # Bob's rows and once without: Alice must see no difference at all.
    query = shape.format(w=f"{near}({trap})")
    with InMemoryUserScopedDB() as with_bob, InMemoryUserScopedDB() as without:
        seed(with_bob)
        seed(without)
        without.execute_admin("DELETE FROM tickets WHERE user_id = %s", (BOB,))
        without.execute_admin("DELETE FROM contacts WHERE user_id = %s", (BOB,))
        assert outcome_of(with_bob, query) == outcome_of(without, query)
