"""The secret error classes: every Vault error is also the port-level class callers catch."""

from __future__ import annotations

import pytest

import crm_infra.adapters
import crm_infra.fakes
from crm_infra import (
    BackendUnavailableError,
    ConfigError,
    InfraError,
    InvalidSecretError,
    InvalidSecretPathError,
    SecretAccessDeniedError,
    SecretNotFoundError,
    SecretStoreAuthError,
    SecretStoreError,
    SecretStoreUnavailableError,
)
from crm_infra.adapters import vault


@pytest.mark.parametrize(
    ("vault_class", "port_class", "builtin"),
    [
        (vault.VaultConfigError, ConfigError, ValueError),
        (vault.VaultInvalidPathError, InvalidSecretPathError, ValueError),
        (vault.VaultSecretNotFoundError, SecretNotFoundError, LookupError),
        (vault.VaultInvalidSecretError, InvalidSecretError, None),
        (vault.VaultAccessDeniedError, SecretAccessDeniedError, None),
        (vault.VaultAuthError, SecretStoreAuthError, None),
        (vault.VaultUnavailableError, SecretStoreUnavailableError, None),
    ],
)
def test_each_vault_error_is_a_vault_error_and_its_port_class(
    vault_class: type[Exception], port_class: type[Exception], builtin: type[Exception] | None
) -> None:
    assert issubclass(vault_class, vault.VaultError)
    assert issubclass(vault_class, port_class)
    assert issubclass(vault_class, SecretStoreError)
    assert issubclass(vault_class, InfraError)
    if builtin is not None:
        assert issubclass(vault_class, builtin)


def test_unavailable_shares_the_backend_marker() -> None:
    assert issubclass(vault.VaultUnavailableError, BackendUnavailableError)


def test_access_denied_and_auth_are_not_not_found() -> None:
    for cls in (vault.VaultAccessDeniedError, vault.VaultAuthError):
        assert not issubclass(cls, SecretNotFoundError)
    assert not issubclass(vault.VaultAccessDeniedError, SecretStoreAuthError)


def test_the_secret_names_are_exported() -> None:
    assert {"VaultClient", "VaultError"} <= set(crm_infra.adapters.__all__)
    assert "InMemorySecretStore" in crm_infra.fakes.__all__
    assert crm_infra.adapters.__all__ == sorted(crm_infra.adapters.__all__)
    assert crm_infra.fakes.__all__ == sorted(crm_infra.fakes.__all__)
    assert vault.__all__ == sorted(vault.__all__)
