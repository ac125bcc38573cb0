"""Type-check only: the asyncio secret stores satisfy the AsyncSecretStore port (mypy proves it;
never run).

Also pinned: the awaited layout methods' types, that the asyncio client takes exactly the sync
client's arguments (a wrong one is an error, so its ignore below is used), and that a sync store
is not mistaken for an asyncio one, nor the other way round.
"""

from __future__ import annotations

from crm_infra import AsyncSecretStore, SecretStore
from crm_infra.adapters import AsyncVaultClient, VaultClient
from crm_infra.fakes import AsyncInMemorySecretStore, InMemorySecretStore
from crm_infra.secret_paths import EmailCredentials


async def check(client: AsyncVaultClient, fake: AsyncInMemorySecretStore) -> None:
    for store in (client, fake):
        port: AsyncSecretStore = store
        database_url: str = await store.get_database_url()
        admin_database_url: str = await store.get_admin_database_url()
        valkey_url: str = await store.get_valkey_url()
        email: EmailCredentials = await store.get_email_credentials()
    await fake.put_secret("crm/valkey", {"url": "redis://h"})
    await fake.delete_secret("crm/valkey")
    sync_fake: InMemorySecretStore = fake.sync
    wrapped: AsyncInMemorySecretStore = AsyncInMemorySecretStore.wrapping(sync_fake)


def construct(role_id: str, secret_id: str) -> None:
    client = AsyncVaultClient("http://127.0.0.1:8200", "token", cache_ttl=30, timeout=2.0)
    AsyncVaultClient(role_id=role_id, secret_id=secret_id, approle_mount_point="a", verify="ca")
    AsyncVaultClient(ttl=30)  # type: ignore[call-arg]  # not an argument of VaultClient
    AsyncInMemorySecretStore({"crm/valkey": {"url": "redis://h"}}, mount_point="kv")


def no_mix_up(client: AsyncVaultClient, vault: VaultClient) -> None:
    sync_port: SecretStore = client  # type: ignore[assignment]  # its methods are coroutines
    async_port: AsyncSecretStore = vault  # type: ignore[assignment]  # its methods are not
