"""build_async_infrastructure in memory mode: the asyncio fakes, typed as the asyncio ports,
with the sync root's schema, secrets layout, key prefix and health report. (Its lifecycle and
health rules run on both roots in test_composition.py; real mode is an integration test.)
"""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest

from crm_infra import (
    AsyncInfrastructure,
    ConfigError,
    Settings,
    build_async_infrastructure,
    secret_paths,
    user_context,
)
from crm_infra.errors import KeyValueStoreError
from crm_infra.fakes import (
    AsyncInMemoryKeyValueStore,
    AsyncInMemorySecretStore,
    AsyncInMemoryUserScopedDB,
)
from crm_infra.ports import AsyncAdminDB, AsyncKeyValueStore, AsyncSecretStore, AsyncUserScopedDB

pytestmark = pytest.mark.asyncio


async def _user(infra: AsyncInfrastructure, email: str) -> UUID:
    rows = await infra.admin_db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", [email]
    )
    return UUID(str(rows[0]["id"]))


async def test_memory_mode_builds_the_async_fakes_typed_as_the_async_ports() -> None:
    async with await build_async_infrastructure(Settings()) as infra:
        assert isinstance(infra.secrets, AsyncInMemorySecretStore)
        assert isinstance(infra.db, AsyncInMemoryUserScopedDB)
        assert isinstance(infra.kv, AsyncInMemoryKeyValueStore)
        assert infra.admin_db is infra.db
        assert isinstance(infra.secrets, AsyncSecretStore)
        assert isinstance(infra.db, AsyncUserScopedDB)
        assert isinstance(infra.admin_db, AsyncAdminDB)
        assert isinstance(infra.kv, AsyncKeyValueStore)


async def test_concurrent_tasks_as_different_users_see_only_their_own_rows() -> None:
    async with await build_async_infrastructure(Settings()) as infra:
        users = [await _user(infra, f"u{n}@example.com") for n in range(8)]

        async def request(user: UUID, n: int) -> list[str]:
            with user_context(user):
                await infra.db.execute("INSERT INTO contacts (name) VALUES (%s)", [f"c{n}"])
                await asyncio.sleep(0)  # let the other requests run in between
                rows = await infra.db.execute("SELECT name FROM contacts ORDER BY name")
            return [str(row["name"]) for row in rows]

        seen = await asyncio.gather(*(request(user, n) for n, user in enumerate(users)))
        assert seen == [[f"c{n}"] for n in range(8)]


async def test_memory_mode_secrets_follow_the_vault_layout() -> None:
    async with await build_async_infrastructure(Settings()) as infra:
        database = await infra.secrets.get_secret(secret_paths.DATABASE_PATH)
        valkey = await infra.secrets.get_secret(secret_paths.VALKEY_PATH)
        assert str(database["url"]).startswith("postgresql://")
        assert str(valkey["url"]).startswith("redis://")


async def test_memory_mode_applies_the_key_prefix() -> None:
    async with (
        await build_async_infrastructure(Settings(key_prefix="tenant-a:")) as a,
        await build_async_infrastructure(Settings(key_prefix="tenant-b:")) as b,
    ):
        await a.kv.set("k", "from a")
        assert await a.kv.get("k") == "from a"
        assert await b.kv.get("k") is None


async def test_memory_mode_is_healthy_with_the_sync_roots_components() -> None:
    async with await build_async_infrastructure(Settings()) as infra:
        report = await infra.health()
        assert report.ok
        assert tuple(report.components) == ("secrets", "database", "keyvalue")


async def test_leaving_the_block_closes_every_port() -> None:
    async with await build_async_infrastructure(Settings()) as infra:
        await infra.kv.set("k", "v")
    with pytest.raises(KeyValueStoreError, match="closed"):
        await infra.kv.get("k")
    await infra.aclose()  # a second close is harmless


async def test_without_settings_it_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_HEALTH_TIMEOUT", "1.5")
    async with await build_async_infrastructure() as infra:
        assert infra.health_timeout == 1.5
    monkeypatch.setenv("CRM_BACKEND", "bogus")
    with pytest.raises(ConfigError, match="CRM_BACKEND"):
        await build_async_infrastructure()
