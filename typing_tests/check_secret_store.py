"""Type-check only: every secret store must satisfy the SecretStore port (mypy fails otherwise).

Nothing here runs: the assignments sit under ``TYPE_CHECKING``. The layout methods, written once
in ``SecretLayoutMethods`` for any store, must type-check on both stores that mix them in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crm_infra import SecretStore
    from crm_infra.adapters import VaultClient
    from crm_infra.fakes import InMemorySecretStore
    from crm_infra.secret_cache import CachedSecretStore
    from crm_infra.secret_paths import EmailCredentials

    vault: SecretStore = VaultClient("http://127.0.0.1:8200", "token")
    fake: SecretStore = InMemorySecretStore({"crm/valkey": {"url": "redis://h"}})
    cached_fake: SecretStore = CachedSecretStore(fake, ttl=30)
    cached_vault: SecretStore = CachedSecretStore(vault, ttl=30)

    vault_client = VaultClient("http://127.0.0.1:8200", "token")
    database_url: str = vault_client.get_database_url()
    admin_database_url: str = vault_client.get_admin_database_url()
    valkey_url: str = vault_client.get_valkey_url()
    email: EmailCredentials = vault_client.get_email_credentials()
    fake_store = InMemorySecretStore()
    database_url = fake_store.get_database_url()
    admin_database_url = fake_store.get_admin_database_url()
    valkey_url = fake_store.get_valkey_url()
    email = fake_store.get_email_credentials()
