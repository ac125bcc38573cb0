"""The asyncio in-memory database: the sync fake's answers, awaited, with tasks taking turns."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from crm_infra import TransactionUsageError
from crm_infra.fakes import AsyncInMemoryUserScopedDB

pytestmark = pytest.mark.asyncio


async def _user(db: AsyncInMemoryUserScopedDB) -> UUID:
    rows = await db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid4()}@example.com",)
    )
    user: UUID = rows[0]["id"]
    return user


async def test_it_answers_as_the_sync_fake_does() -> None:
    async with AsyncInMemoryUserScopedDB() as db:
        alice, bob = await _user(db), await _user(db)
        await db.execute("INSERT INTO contacts (name) VALUES (%s)", ("Ann",), user_id=alice)
        assert await db.execute("SELECT name FROM contacts", user_id=bob) == []
        assert await db.execute_scalar("SELECT name FROM contacts", user_id=alice) == "Ann"
        assert db.sync.execute("SELECT name FROM contacts", user_id=alice) == [{"name": "Ann"}]


async def test_one_tasks_transaction_waits_for_anothers_without_blocking_the_loop() -> None:
    async with AsyncInMemoryUserScopedDB() as db:
        alice = await _user(db)
        order: list[str] = []
        inside = asyncio.Event()

        async def first() -> None:
            async with db.transaction(alice) as tx:
                await tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
                inside.set()
                await asyncio.sleep(0.05)  # the loop runs the other task meanwhile
                order.append("first commits")

        async def second() -> None:
            await inside.wait()
            order.append("second asks")
            rows = await db.execute("SELECT name FROM contacts", user_id=alice)
            order.append(f"second sees {rows}")

        await asyncio.gather(first(), second())
        assert order == ["second asks", "first commits", "second sees [{'name': 'Ann'}]"]


async def test_a_call_outside_the_tasks_own_transaction_is_refused_as_in_the_sync_fake() -> None:
    async with AsyncInMemoryUserScopedDB() as db:
        alice = await _user(db)
        async with db.transaction(alice) as tx:
            await tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
            with pytest.raises(TransactionUsageError, match="transaction is open"):
                await db.execute("SELECT 1 AS one", user_id=alice)
            async with db.transaction(alice) as inner:  # a savepoint of its own transaction
                assert await inner.execute_scalar("SELECT count(*) FROM contacts") == 1


async def test_a_task_waiting_too_long_for_its_turn_is_told_why() -> None:
    async with AsyncInMemoryUserScopedDB(lock_timeout=0.1) as db:
        alice = await _user(db)
        holding = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with db.transaction(alice) as tx:
                await tx.execute("SELECT 1 AS one")
                holding.set()
                await release.wait()

        task = asyncio.ensure_future(holder())
        await holding.wait()
        with pytest.raises(TransactionUsageError, match="another task's transaction"):
            await db.execute("SELECT 1 AS one", user_id=alice)
        release.set()
        await task


async def test_a_cancelled_transaction_rolls_back_and_frees_the_turn() -> None:
    async with AsyncInMemoryUserScopedDB() as db:
        alice = await _user(db)
        started = asyncio.Event()

        async def doomed() -> None:
            async with db.transaction(alice) as tx:
                await tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
                started.set()
                await asyncio.sleep(10)

        task = asyncio.ensure_future(doomed())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await db.execute("SELECT name FROM contacts", user_id=alice) == []
