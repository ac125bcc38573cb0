"""Type-check only: both asyncio key-value implementations satisfy the AsyncKeyValueStore port,
and take the sync twins' arguments."""

from __future__ import annotations

from crm_infra.adapters import AsyncValkeyClient, ValkeyClient
from crm_infra.fakes import AsyncInMemoryKeyValueStore
from crm_infra.ports import AsyncKeyValueStore, KeyValueStore


async def check(url: str) -> None:
    real: AsyncKeyValueStore = AsyncValkeyClient(url, key_prefix="t:", max_connections=8)
    fake: AsyncKeyValueStore = AsyncInMemoryKeyValueStore(key_prefix="t:")
    async with AsyncValkeyClient(url) as opened:
        counted: int = await opened.hit("k", 60)
        value: str | None = await opened.get("k")
    for store in (real, fake):
        await store.set("k", "v", expire_seconds=60)


def no_mix_up(client: AsyncValkeyClient) -> None:
    sync_port: KeyValueStore = client  # type: ignore[assignment]  # its methods are coroutines
    async_port: AsyncKeyValueStore = ValkeyClient("redis://h")  # type: ignore[assignment]
    AsyncValkeyClient("redis://h", ttl=3)  # type: ignore[call-arg]  # not a ValkeyClient argument
