"""Vault and OpenBao (hvac): the client and its errors.
"""

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
