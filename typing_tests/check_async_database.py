"""Type-check only: the asyncio PostgreSQL adapter and the asyncio in-memory fake satisfy both
asyncio database ports (mypy proves it; never run)."""

from __future__ import annotations

from crm_infra.adapters import AsyncPostgresClient
from crm_infra.fakes import AsyncInMemoryUserScopedDB
from crm_infra.ports import AsyncAdminDB, AsyncTransaction, AsyncUserScopedDB


async def check(client: AsyncPostgresClient, fake: AsyncInMemoryUserScopedDB) -> None:
    for implementation in (client, fake):
        user_scoped: AsyncUserScopedDB = implementation
        admin: AsyncAdminDB = implementation
    async with client.transaction() as tx:
        handle: AsyncTransaction = tx
    async with client.admin_transaction() as admin_tx:
        admin_handle: AsyncTransaction = admin_tx
    async with fake.transaction() as fake_tx:
        fake_handle: AsyncTransaction = fake_tx
    async with fake.admin_transaction() as fake_admin_tx:
        fake_admin_handle: AsyncTransaction = fake_admin_tx
