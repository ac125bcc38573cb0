"""The raw escape hatches (``connection()``, ``admin_connection()``): what a block changes in
its session never reaches the next borrower of the pooled connection."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import pytest

from crm_infra.adapters import PostgresClient
from crm_infra.bootstrap import BootstrappedDatabase


@pytest.fixture
def one_conn_client(pg_database: BootstrappedDatabase) -> Iterator[PostgresClient]:
    """A client whose pools hold one connection each, so every borrower gets the same one."""
    with PostgresClient(
        pg_database.app_url,
        1,
        min_pool_size=1,
        admin_connection_url=pg_database.admin_url,
        admin_pool_size=1,
    ) as client:
        client.execute_admin("TRUNCATE users, contacts, addresses, tickets CASCADE")
        yield client


def make_user(db: PostgresClient) -> UUID:
    user_id: UUID = db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid4()}@example.com",)
    )[0]["id"]
    return user_id


_LEAKS = [
    # A session-level user setting (the third argument false), committed with the block.
    "SELECT set_config('app.current_user_id', %(user)s, false)",
    "SET app.current_user_id = %(user_literal)s",
    "SET statement_timeout = 1234567",
    "SET ROLE crm_app",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
]


def _session_of(client: PostgresClient) -> tuple[dict[str, object], list[dict[str, object]]]:
    """What a raw borrower of the (only) pooled connection sees, with no user set."""
    conn = client.pool.getconn()
    try:
        settings = conn.execute(
            "SELECT current_setting('app.current_user_id', true) AS user_id, "
            "current_setting('statement_timeout') AS timeout, current_user::text AS role, "
            "current_setting('default_transaction_read_only') AS read_only"
        ).fetchone()
        rows = conn.execute("SELECT name FROM contacts").fetchall()
    finally:
        client.pool.putconn(conn)
    assert settings is not None
    return dict(settings), [dict(r) for r in rows]


@pytest.mark.parametrize("leak", _LEAKS)
@pytest.mark.parametrize("fails", [False, True], ids=["block-ends", "block-raises"])
def test_session_settings_made_through_connection_do_not_outlive_it(
    one_conn_client: PostgresClient,
    pg_database: BootstrappedDatabase,
    leak: str,
    fails: bool,
) -> None:
    client = one_conn_client
    alice = make_user(client)
    client.execute("INSERT INTO contacts (name) VALUES ('Ann')", user_id=alice)
    before, _ = _session_of(client)
    try:
        with client.connection(alice) as conn:
            conn.execute(leak.replace("%(user_literal)s", f"'{alice}'"), {"user": str(alice)})
            conn.execute("COMMIT")  # session-level, and committed: it sticks to the session
            if fails:
                raise RuntimeError("boom")
    except RuntimeError:
        assert fails
    for _ in range(3):  # every later borrower of the one connection
        settings, rows = _session_of(client)
        assert settings["user_id"] in (None, "")  # never set, or set and ended: no user
        assert {**settings, "user_id": None} == {**before, "user_id": None}
        assert settings["role"] == pg_database.app_role
        assert rows == []  # RLS with no user: nothing
    # And the client's own paths still work on that connection, as the right user.
    assert client.execute("SELECT name FROM contacts", user_id=alice) == [{"name": "Ann"}]
    assert client.execute("SELECT name FROM contacts", user_id=uuid4()) == []


def test_session_settings_made_through_admin_connection_do_not_outlive_it(
    one_conn_client: PostgresClient,
) -> None:
    client = one_conn_client
    before = client.execute_admin("SELECT current_setting('statement_timeout') AS t")
    with client.admin_connection() as conn:
        conn.execute("SET statement_timeout = 1234567")
        conn.execute("SELECT set_config('app.current_user_id', %s, false)", (str(uuid4()),))
    assert client.execute_admin("SELECT current_setting('statement_timeout') AS t") == before
    assert client.execute_admin("SELECT current_setting('app.current_user_id', true) AS v") in (
        [{"v": None}],
        [{"v": ""}],
    )
