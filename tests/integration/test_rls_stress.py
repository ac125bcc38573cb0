"""Many threads, many users, one pool: nobody ever sees another user's row.

16 threads run 20,000 transactions for 50+ users in turn on a pool smaller than the thread
count, so connections pass from user to user constantly; every 7th transaction writes and
then raises mid-way. Afterwards: zero foreign rows were seen, none of the raised writes
survived, and no pooled connection is left with a user set or a transaction open.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from uuid import UUID

import psycopg
import pytest

from crm_infra.adapters import PostgresClient
from crm_infra.bootstrap import BootstrappedDatabase
from tests.fixtures.postgres import truncate_all

THREADS = 16
TRANSACTIONS = 20_000
USERS = 53
CONTACTS_EACH = 2
RAISE_EVERY = 7

pytestmark = pytest.mark.slow


class Boom(Exception):
    """Raised on purpose inside a transaction."""


@pytest.fixture
def stress_client(pg_database: BootstrappedDatabase) -> Iterator[PostgresClient]:
    with PostgresClient(
        pg_database.app_url, 6, min_pool_size=6, admin_connection_url=pg_database.admin_url
    ) as client:
        truncate_all(client)
        yield client
        truncate_all(client)


def _seed(client: PostgresClient) -> list[UUID]:
    with client.admin_transaction() as tx:
        users: list[UUID] = [
            row["id"]
            for row in tx.execute(
                "INSERT INTO users (email) SELECT 'stress' || g || '@example.com' "
                "FROM generate_series(1, %s) g RETURNING id",
                (USERS,),
            )
        ]
        tx.execute(
            "INSERT INTO contacts (user_id, name) SELECT u, 'c' || g "
            "FROM unnest(%s::uuid[]) u, generate_series(1, %s) g",
            (users, CONTACTS_EACH),
        )
    return users


def test_no_user_ever_sees_another_users_rows(stress_client: PostgresClient) -> None:
    client = stress_client
    users = _seed(client)
    foreign_rows = [0] * THREADS
    wrong_counts = [0] * THREADS
    wrong_setting = [0] * THREADS
    raised = [0] * THREADS
    unexpected: list[BaseException] = []
    per_thread = TRANSACTIONS // THREADS

    def work(k: int) -> None:
        try:
            for i in range(per_thread):
                user = users[(k * 13 + i) % len(users)]
                try:
                    with client.transaction(user) as tx:
                        rows = tx.execute(
                            "SELECT user_id, current_setting('app.current_user_id') AS s "
                            "FROM contacts"
                        )
                        foreign_rows[k] += sum(1 for r in rows if r["user_id"] != user)
                        wrong_setting[k] += sum(1 for r in rows if r["s"] != str(user))
                        wrong_counts[k] += len(rows) != CONTACTS_EACH
                        if i % RAISE_EVERY == 0:
                            tx.execute("INSERT INTO contacts (name) VALUES ('must vanish')")
                            raise Boom
                except Boom:
                    raised[k] += 1
        except BaseException as exc:  # surfaced below, with the thread's failure
            unexpected.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert [str(e) for e in unexpected] == []
    assert sum(raised) == THREADS * len(range(0, per_thread, RAISE_EVERY))
    assert THREADS * per_thread >= TRANSACTIONS
    assert sum(foreign_rows) == 0
    assert sum(wrong_setting) == 0
    assert sum(wrong_counts) == 0
    assert client.execute_admin(
        "SELECT count(*) AS n FROM contacts WHERE name = 'must vanish'"
    ) == [{"n": 0}]

    # Every pooled connection: idle, autocommit, and no user set.
    size = client.pool.get_stats()["pool_size"]
    conns = [client.pool.getconn() for _ in range(size)]
    try:
        for conn in conns:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert conn.autocommit
            row = conn.execute(
                "SELECT current_setting('app.current_user_id', true) AS v"
            ).fetchone()
            assert row is not None
            assert row["v"] in (None, "")
    finally:
        for conn in conns:
            client.pool.putconn(conn)
