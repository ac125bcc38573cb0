"""Vault and OpenBao (hvac): the client, its asyncio twin and their errors.
"""

from crm_infra.adapters.vault.async_client import AsyncVaultClient
from crm_infra.adapters.vault.client import (
    VaultAccessDeniedError,
    VaultAuthError,
    VaultClient,
    VaultConfigError,
    VaultError,
    VaultInvalidPathError,
    VaultInvalidSecretError,
    VaultSecretNotFoundError,
    VaultUnavailableError,
)

__all__ = [
    "AsyncVaultClient",
    "VaultAccessDeniedError",
    "VaultAuthError",
    "VaultClient",
    "VaultConfigError",
    "VaultError",
    "VaultInvalidPathError",
    "VaultInvalidSecretError",
    "VaultSecretNotFoundError",
    "VaultUnavailableError",
]
