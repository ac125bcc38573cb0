"""VaultClient never shows the user-info part of its address (it may hold a password)."""

from __future__ import annotations

import pytest

from crm_infra.adapters import VaultClient
from crm_infra.adapters.vault import VaultConfigError
from tests.fixtures.common import free_port

PASSWORD = "MARKER-vault-addr-pw"


def test_an_address_with_a_password_is_refused_without_showing_it() -> None:
    # Vault authenticates with tokens; user-info in the address would only end up in reprs
    # and messages, so it is refused before any request.
    with pytest.raises(VaultConfigError) as caught:
        VaultClient(f"http://ops:{PASSWORD}@127.0.0.1:{free_port()}", "a-token", timeout=2)
    assert "must not hold a user or password" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(caught.value)
