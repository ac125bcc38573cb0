"""VaultClient never shows the user-info part of its address (it may hold a password)."""

from __future__ import annotations

import pytest

from crm_infra.adapters import VaultClient, VaultError
from tests.fixtures.common import free_port

PASSWORD = "MARKER-vault-addr-pw"


def test_an_unreachable_vault_is_named_without_the_password_of_its_address() -> None:
    port = free_port()
    with pytest.raises(VaultError) as caught:
        VaultClient(f"http://ops:{PASSWORD}@127.0.0.1:{port}", "a-token", timeout=2)
    message = str(caught.value)
    assert f"Vault at http://***@127.0.0.1:{port}" in message
    assert PASSWORD not in message
