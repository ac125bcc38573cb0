"""The one-round-trip ``execute`` path (a libpq pipeline) against the real server: errors leave
the connection usable and clean, plans are reused, and a changed table is re-planned."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow, dict_row

from crm_infra import DatabaseError, IntegrityError, RowSecurityError
from crm_infra.adapters import PostgresClient
from crm_infra.adapters._pg_statements import StatementCache
from crm_infra.bootstrap import BootstrappedDatabase


@pytest.fixture
def client(pg_database: BootstrappedDatabase) -> Iterator[PostgresClient]:
    """A client with ONE pooled connection, so every call reuses the connection under test."""
    with PostgresClient(
        pg_database.app_url, 1, admin_connection_url=pg_database.admin_url, min_pool_size=1
    ) as db:
        yield db


def _user(db: PostgresClient) -> UUID:
    user: UUID = db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid4()}@example.com",)
    )[0]["id"]
    return user


def _session_state(db: PostgresClient) -> dict[str, object]:
    """What the pooled connection's session holds, read outside the client's calls."""
    conn = db.pool.getconn()
    try:
        row = conn.execute(
            "SELECT current_setting('app.current_user_id', true) AS user_setting, "
            "(SELECT count(*) FROM pg_prepared_statements) AS prepared"
        ).fetchone()
        assert row is not None
        return {**row, "status": conn.pgconn.transaction_status}
    finally:
        db.pool.putconn(conn)


@pytest.mark.parametrize(
    ("query", "params", "error"),
    [
        ("SELEC id FROM contacts WHERE id = %s", (uuid4(),), DatabaseError),  # refused at Parse
        ("SELECT %s::int", ("not a number",), DatabaseError),  # refused at Bind
        ("INSERT INTO contacts (user_id, name) VALUES (%s, 'x')", (uuid4(),), RowSecurityError),
        ("SELECT 1 / (%s::int - 1)", (1,), DatabaseError),  # fails while executing
    ],
)
def test_a_failed_call_leaves_the_connection_idle_usable_and_without_a_user(
    client: PostgresClient, query: str, params: tuple[object, ...], error: type[Exception]
) -> None:
    user = _user(client)
    with pytest.raises(error):
        client.execute(query, params, user_id=user)
    state = _session_state(client)
    assert state["status"] == psycopg.pq.TransactionStatus.IDLE
    assert state["user_setting"] in (None, "")
    client.execute("INSERT INTO contacts (name) VALUES (%s)", ("Ann",), user_id=user)
    assert client.execute("SELECT name FROM contacts", user_id=user) == [{"name": "Ann"}]


def test_a_statement_is_prepared_once_even_when_its_first_run_fails(
    client: PostgresClient,
) -> None:
    user = _user(client)
    insert = "INSERT INTO contacts (id, user_id, name) VALUES (%s, %s, 'x')"
    contact = uuid4()
    client.execute(insert, (contact, user), user_id=user)
    before = _session_state(client)["prepared"]
    for _ in range(5):
        with pytest.raises(IntegrityError):
            client.execute(insert, (contact, user), user_id=user)  # the same id again
    assert _session_state(client)["prepared"] == before


def test_a_table_that_changed_shape_is_planned_again(
    client: PostgresClient, pg_database: BootstrappedDatabase
) -> None:
    table = f"shape_{uuid4().hex[:12]}"
    superuser = make_conninfo(pg_database.superuser_url, dbname=pg_database.database)
    with psycopg.connect(superuser, autocommit=True) as su:
        su.execute(f"CREATE TABLE {table} (a int)")
        su.execute(f"INSERT INTO {table} VALUES (1)")
        su.execute(f"GRANT SELECT ON {table} TO {pg_database.app_role}")
        try:
            user = uuid4()
            assert client.execute(f"SELECT * FROM {table}", user_id=user) == [{"a": 1}]
            su.execute(f"ALTER TABLE {table} ADD COLUMN b text DEFAULT 'new'")
            # The prepared plan's result type no longer holds; the server says so without
            # running anything, and the client prepares the statement afresh.
            assert client.execute(f"SELECT * FROM {table}", user_id=user) == [{"a": 1, "b": "new"}]
        finally:
            su.execute(f"DROP TABLE {table}")


def test_a_full_statement_cache_runs_statements_unnamed(
    pg_database: BootstrappedDatabase,
) -> None:
    cache = StatementCache(max_per_connection=1)
    conn: psycopg.Connection[DictRow]
    with psycopg.connect(
        pg_database.app_url, autocommit=True, row_factory=dict_row, prepare_threshold=None
    ) as conn:
        cache.prepare_connection(conn)
        user = str(uuid4())
        for i in range(4):
            rows = cache.run(conn, f"SELECT %s::int + {i} AS n", (1,), user=user)
            assert rows == [{"n": 1 + i}]
        names = conn.execute("SELECT name FROM pg_prepared_statements ORDER BY name").fetchall()
        assert [r["name"] for r in names] == ["_crm_s1", "_crm_set_user"]
