"""An AppRole token kept alive by a real OpenBao: renewed before it expires, replaced by a new
login when its maximum lifetime is near, and no read fails on the way."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from crm_infra.adapters import VaultClient
from crm_infra.adapters.vault.token_keeper import TOKEN_EVENTS
from crm_infra.devservers.openbao import OpenBaoServer
from tests.fixtures.database_engine import approle_login
from tests.fixtures.openbao import TEST_SECRETS, VaultMount, read_policy
from tests.fixtures.telemetry import Telemetry


def test_an_approle_token_is_renewed_then_replaced_by_a_login_before_its_maximum(
    openbao_server: OpenBaoServer,
    openbao_root: Any,
    vault_mount: VaultMount,
    caplog: pytest.LogCaptureFixture,
    telemetry: Telemetry,
) -> None:
    caplog.set_level(logging.INFO, "crm_infra.adapters.vault")
    policy = read_policy(vault_mount.name, "crm/*")
    with (
        approle_login(openbao_root, policy, token_ttl="3s", token_max_ttl="7s") as login,
        VaultClient(
            openbao_server.addr,
            role_id=login.role_id,
            secret_id=login.secret_id,
            approle_mount_point=login.mount,
            mount_point=vault_mount.name,
        ) as vault,
    ):
        deadline = time.monotonic() + 60
        while not ("Vault token renewed" in caplog.text and "logged in again" in caplog.text):
            # The token is never let expire: each read works as it is.
            assert vault.get_database_url() == TEST_SECRETS["crm/database"]["url"]
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
        lifetime = vault.token_lifetime
        assert lifetime is not None
        assert lifetime.true_end() > time.monotonic()
    assert "could not renew" not in caplog.text
    counted = {p.attributes["crm.event"]: p.value for p in telemetry.points(TOKEN_EVENTS)}
    assert counted.get("renewed", 0) >= 1
    assert counted.get("logged_in_again", 0) >= 1
