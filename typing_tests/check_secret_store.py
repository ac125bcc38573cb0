"""Type-check only: every secret store must satisfy the SecretStore port (mypy fails otherwise).

Nothing here runs: the assignments sit under ``TYPE_CHECKING``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crm_infra import SecretStore
    from crm_infra.adapters import VaultClient
    from crm_infra.fakes import InMemorySecretStore
    from crm_infra.secret_cache import CachedSecretStore

    vault: SecretStore = VaultClient("http://127.0.0.1:8200", "token")
    fake: SecretStore = InMemorySecretStore({"crm/valkey": {"url": "redis://h"}})
    cached_fake: SecretStore = CachedSecretStore(fake, ttl=30)
    cached_vault: SecretStore = CachedSecretStore(vault, ttl=30)
