"""AsyncPostgresClient against the real server: what only asyncio can break.

The behaviour both twins share is proven by the database contract suite, which runs on the
asyncio client too; here: concurrency on one event loop, cancellation at every await point,
asyncio.timeout, and a stress test of many tasks and users.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import pytest
import pytest_asyncio

from crm_infra import DatabaseError, QueryTimeoutError, UnsafeQueryError, user_context
from crm_infra.adapters import AsyncPostgresClient
from crm_infra.bootstrap import BootstrappedDatabase
from tests.fixtures.cancellation import cancel_after, steps_of

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def client(pg_database: BootstrappedDatabase) -> AsyncIterator[AsyncPostgresClient]:
    async with AsyncPostgresClient(
        pg_database.app_url, 4, admin_connection_url=pg_database.admin_url, pool_timeout=3
    ) as db:
        await db.execute_admin("TRUNCATE users, contacts, addresses, tickets CASCADE")
        yield db


async def _user(db: AsyncPostgresClient) -> UUID:
    rows = await db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid4()}@example.com",)
    )
    user: UUID = rows[0]["id"]
    return user


async def test_each_user_sees_only_their_rows_and_the_context_works(
    client: AsyncPostgresClient,
) -> None:
    alice, bob = await _user(client), await _user(client)
    await client.execute("INSERT INTO contacts (name) VALUES (%s)", ("Ann",), user_id=alice)
    await client.execute("INSERT INTO contacts (name) VALUES (%s)", ("Bea",), user_id=bob)
    with user_context(alice):
        assert await client.execute("SELECT name FROM contacts") == [{"name": "Ann"}]
    assert await client.execute_scalar("SELECT name FROM contacts", user_id=bob) == "Bea"
    with pytest.raises(UnsafeQueryError):
        await client.execute("SELECT set_config('app.current_user_id', %s, false)", (bob,), alice)


async def test_a_transaction_commits_and_a_raising_one_rolls_back(
    client: AsyncPostgresClient,
) -> None:
    alice = await _user(client)
    async with client.transaction(alice) as tx:
        await tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        async with client.transaction(alice) as inner:
            assert await inner.execute_scalar("SELECT count(*) FROM contacts") == 1
    with pytest.raises(RuntimeError):  # noqa: PT012 - the block is what is tested
        async with client.transaction(alice) as tx:
            await tx.execute("INSERT INTO contacts (name) VALUES ('Ben')")
            raise RuntimeError("the request failed")
    rows = await client.execute("SELECT name FROM contacts", user_id=alice)
    assert rows == [{"name": "Ann"}]


async def test_concurrent_tasks_each_get_their_own_users_rows(
    client: AsyncPostgresClient,
) -> None:
    users = [await _user(client) for _ in range(8)]
    for user in users:
        await client.execute("INSERT INTO contacts (name) VALUES (%s)", (str(user),), user)

    async def read(user: UUID) -> None:
        rows = await client.execute("SELECT name FROM contacts", user_id=user)
        assert rows == [{"name": str(user)}]

    await asyncio.gather(*(read(users[i % 8]) for i in range(400)))


async def test_asyncio_timeout_around_a_call_closes_its_connection_and_nothing_leaks(
    client: AsyncPostgresClient,
) -> None:
    alice = await _user(client)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.execute("SELECT pg_sleep(30)", user_id=alice)
    await _assert_pool_clean(client)


async def test_the_statement_timeout_fires_on_the_server(
    pg_database: BootstrappedDatabase,
) -> None:
    async with AsyncPostgresClient(pg_database.app_url, 1, statement_timeout=0.2) as db:
        with pytest.raises(QueryTimeoutError):
            await db.execute("SELECT pg_sleep(5)", user_id=uuid4())
        assert await db.execute_scalar("SELECT 1 AS one", user_id=uuid4()) == 1


async def _assert_pool_clean(db: AsyncPostgresClient) -> None:
    """Every pooled connection is idle and has no user set: borrow them all at once."""
    users = [uuid4() for _ in range(4)]
    seen = await asyncio.gather(
        *(
            db.execute_scalar(
                "SELECT current_setting('app.current_user_id', true) AS me, pg_sleep(0.05)",
                user_id=user,
            )
            for user in users
        )
    )
    assert seen == [str(u) for u in users]


@pytest.mark.parametrize("operation", ["execute", "transaction", "execute_admin", "health"])
async def test_a_call_cancelled_at_any_point_leaves_nothing_behind(
    pg_database: BootstrappedDatabase, operation: str
) -> None:
    """Cancel the call after 1, 2, 3... turns of the event loop, every turn it takes: each
    time the one pooled connection is given back clean or replaced, and the next call, as
    another user, runs as that user."""
    async with AsyncPostgresClient(
        pg_database.app_url,
        1,
        min_pool_size=1,
        admin_connection_url=pg_database.admin_url,
        admin_pool_size=1,
        pool_timeout=3,
    ) as db:
        alice = await _user(db)

        async def call() -> object:
            if operation == "execute":
                return await db.execute("SELECT count(*) FROM contacts", user_id=alice)
            if operation == "transaction":
                async with db.transaction(alice) as tx:
                    await tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
                    return await tx.execute("SELECT count(*) FROM contacts")
            if operation == "execute_admin":
                return await db.execute_admin("SELECT count(*) FROM contacts")
            return await db.health_check()

        await call()  # warm: the pools are open, the statements cached
        steps = await steps_of(call)
        assert steps >= 1
        # Every turn early on (where the call goes through its awaits before any I/O), then
        # turns spread over the rest (mostly waiting on the socket, where it stays put).
        points = sorted({*range(1, min(steps, 40) + 1), *range(1, steps + 1, max(1, steps // 40))})
        for point in points:
            await cancel_after(call, point)
            bob = uuid4()
            me = await db.execute_scalar(
                "SELECT current_setting('app.current_user_id', true) AS me", user_id=bob
            )
            assert me == str(bob), f"cancelled after {point} of {steps} turns"
            assert await db.execute_admin("SELECT 1 AS one") == [{"one": 1}]


async def test_two_hundred_tasks_fifty_users_twenty_thousand_transactions(
    pg_database: BootstrappedDatabase,
) -> None:
    """Each task works for a random user on a small pool; some transactions raise, some are
    cancelled mid-way. No task ever sees another user's row, a raised or cancelled one leaves
    no row, and afterwards no pooled connection has a user set."""
    transactions = 20_000
    async with AsyncPostgresClient(
        pg_database.app_url, 8, admin_connection_url=pg_database.admin_url, pool_timeout=30
    ) as db:
        await db.execute_admin("TRUNCATE users, contacts, addresses, tickets CASCADE")
        users = [await _user(db) for _ in range(50)]
        committed: dict[UUID, int] = dict.fromkeys(users, 0)
        rng = random.Random(11)
        remaining = [transactions]
        crossed: list[str] = []

        async def one(user: UUID, fate: int) -> None:
            async with db.transaction(user) as tx:
                await tx.execute("INSERT INTO contacts (name) VALUES (%s)", (str(user),))
                names = await tx.execute("SELECT DISTINCT name FROM contacts")
                if any(row["name"] != str(user) for row in names):
                    crossed.append(f"{user} saw {names}")
                if fate == 0:
                    raise RuntimeError("the request failed")
                if fate == 1:
                    await asyncio.sleep(10)  # cancelled below, inside the transaction
            committed[user] += 1

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                user, fate = rng.choice(users), rng.randrange(50)
                task = asyncio.ensure_future(one(user, fate))
                if fate == 1:
                    await asyncio.sleep(0.001)
                    task.cancel()
                with contextlib.suppress(RuntimeError, asyncio.CancelledError, DatabaseError):
                    await task

        await asyncio.gather(*(worker() for _ in range(200)))
        assert crossed == []
        for user in users:
            count = await db.execute_scalar("SELECT count(*) FROM contacts", user_id=user)
            assert count == committed[user]
        assert sum(committed.values()) > transactions // 2
        await _assert_pool_clean_many(db)


async def _assert_pool_clean_many(db: AsyncPostgresClient) -> None:
    users = [uuid4() for _ in range(8)]
    seen = await asyncio.gather(
        *(
            db.execute_scalar(
                "SELECT current_setting('app.current_user_id', true) AS me, pg_sleep(0.05)",
                user_id=user,
            )
            for user in users
        )
    )
    assert seen == [str(u) for u in users]
