"""User transactions whose SQL does what a transaction() block cannot honour."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from crm_infra import DatabaseUnavailableError, TransactionUsageError, UnsafeQueryError
from crm_infra.adapters import PostgresClient
from crm_infra.bootstrap import BootstrappedDatabase


def make_user(db: PostgresClient) -> UUID:
    user_id: UUID = db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid4()}@example.com",)
    )[0]["id"]
    return user_id


@pytest.mark.parametrize(
    "ending", ["COMMIT", "ROLLBACK", "END", "COMMIT; BEGIN", "commit and chain"]
)
def test_a_statement_that_would_end_the_transaction_stops_the_block(
    pg_db: PostgresClient, ending: str
) -> None:
    alice, bob = make_user(pg_db), make_user(pg_db)
    pg_db.execute("INSERT INTO contacts (name) VALUES ('Bea')", user_id=bob)
    with pytest.raises(TransactionUsageError), pg_db.transaction(alice) as tx:  # noqa: PT012 - the transaction body is what is tested
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with pytest.raises(UnsafeQueryError):  # refused before it is sent
            tx.execute(ending)
        # What follows would run in autocommit without the user: it must not run at all.
        with pytest.raises(TransactionUsageError):
            tx.execute("SELECT name FROM contacts")
        with pytest.raises(TransactionUsageError):
            tx.execute("INSERT INTO contacts (name) VALUES ('Cid')")
    # Nothing of the block was committed: not before the refused statement, not after.
    assert pg_db.execute("SELECT name FROM contacts", user_id=alice) == []
    assert pg_db.execute("SELECT name FROM contacts", user_id=bob) == [{"name": "Bea"}]


def test_execute_inside_a_transaction_that_holds_the_last_connection_says_why(
    pg_database: BootstrappedDatabase,
) -> None:
    with (
        PostgresClient(pg_database.app_url, 1, pool_timeout=0.3) as client,
        client.transaction(uuid4()) as tx,
    ):
        tx.execute("SELECT 1")
        with pytest.raises(DatabaseUnavailableError, match=r"transaction\(\) block is open"):
            client.execute("SELECT 1", user_id=uuid4())
        assert tx.execute("SELECT 2 AS two") == [{"two": 2}]  # the block is unharmed


def test_execute_admin_inside_an_admin_transaction_that_holds_the_last_connection_says_why(
    pg_database: BootstrappedDatabase,
) -> None:
    with (
        PostgresClient(
            pg_database.app_url,
            1,
            admin_connection_url=pg_database.admin_url,
            admin_pool_size=1,
            pool_timeout=0.3,
        ) as client,
        client.admin_transaction() as tx,
    ):
        tx.execute("SELECT 1")
        with pytest.raises(DatabaseUnavailableError, match=r"admin_transaction\(\) block"):
            client.execute_admin("SELECT 1")
