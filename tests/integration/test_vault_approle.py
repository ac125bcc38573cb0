"""AppRole login against a real OpenBao, and a fresh login when the token expires or is revoked.

Each test enables its own AppRole mount, so revoking "every token of this login path" touches
nothing outside the test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from crm_infra.adapters import VaultClient
from crm_infra.adapters.vault import VaultAuthError
from crm_infra.devservers.openbao import OpenBaoServer
from tests.fixtures.openbao import TEST_SECRETS, VaultMount, read_policy


@attrs.frozen
class AppRole:
    mount: str
    role_id: str = attrs.field(repr=False)
    secret_id: str = attrs.field(repr=False)


def _make_approle(root: Any, vault_mount: VaultMount, *, token_ttl: str) -> Iterator[AppRole]:
    mount = f"ar{uuid.uuid4().hex[:12]}"
    policy = f"p{uuid.uuid4().hex[:12]}"
    root.sys.create_or_update_policy(name=policy, policy=read_policy(vault_mount.name, "crm/*"))
    root.sys.enable_auth_method(method_type="approle", path=mount)
    root.auth.approle.create_or_update_approle(
        "crm-app",
        token_policies=[policy],
        token_ttl=token_ttl,
        token_max_ttl=token_ttl,
        mount_point=mount,
    )
    role_id = root.auth.approle.read_role_id("crm-app", mount_point=mount)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("crm-app", mount_point=mount)["data"][
        "secret_id"
    ]
    yield AppRole(mount, role_id, secret_id)
    root.sys.disable_auth_method(path=mount)
    root.sys.delete_policy(name=policy)


@pytest.fixture
def approle(openbao_root: Any, vault_mount: VaultMount) -> Iterator[AppRole]:
    """An AppRole whose tokens live one hour and may read ``crm/*`` of the test's mount."""
    yield from _make_approle(openbao_root, vault_mount, token_ttl="1h")


@pytest.fixture
def short_approle(openbao_root: Any, vault_mount: VaultMount) -> Iterator[AppRole]:
    """An AppRole whose tokens expire after two seconds."""
    yield from _make_approle(openbao_root, vault_mount, token_ttl="2s")


def _client(server: OpenBaoServer, mount: VaultMount, role: AppRole) -> VaultClient:
    return VaultClient(
        server.addr,
        role_id=role.role_id,
        secret_id=role.secret_id,
        approle_mount_point=role.mount,
        mount_point=mount.name,
    )


def test_approle_login_reads_secrets(
    openbao_server: OpenBaoServer, vault_mount: VaultMount, approle: AppRole
) -> None:
    with _client(openbao_server, vault_mount, approle) as client:
        assert client.auth_method == "approle"
        assert client.get_database_url() == TEST_SECRETS["crm/database"]["url"]
        assert client.health_check() is True


def test_approle_credentials_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    openbao_server: OpenBaoServer,
    vault_mount: VaultMount,
    approle: AppRole,
) -> None:
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.setenv("VAULT_ADDR", openbao_server.addr)
    monkeypatch.setenv("VAULT_ROLE_ID", approle.role_id)
    monkeypatch.setenv("VAULT_SECRET_ID", approle.secret_id)
    with VaultClient(mount_point=vault_mount.name, approle_mount_point=approle.mount) as client:
        assert client.auth_method == "approle"
        assert client.get_valkey_url() == TEST_SECRETS["crm/valkey"]["url"]


def test_a_wrong_secret_id_fails_at_construction_without_showing_it(
    openbao_server: OpenBaoServer, vault_mount: VaultMount, approle: AppRole
) -> None:
    wrong = str(uuid.uuid4())
    with pytest.raises(VaultAuthError, match="AppRole") as info:
        VaultClient(
            openbao_server.addr,
            role_id=approle.role_id,
            secret_id=wrong,
            approle_mount_point=approle.mount,
            mount_point=vault_mount.name,
        )
    for text in (str(info.value), repr(info.value)):
        assert wrong not in text
        assert approle.role_id not in text


def test_repr_hides_role_id_and_secret_id(
    openbao_server: OpenBaoServer, vault_mount: VaultMount, approle: AppRole
) -> None:
    with _client(openbao_server, vault_mount, approle) as client:
        text = repr(client)
    assert approle.role_id not in text
    assert approle.secret_id not in text
    assert "approle" in text


def test_an_expired_approle_token_is_replaced_by_a_fresh_login(
    openbao_server: OpenBaoServer, vault_mount: VaultMount, short_approle: AppRole
) -> None:
    with _client(openbao_server, vault_mount, short_approle) as client:
        assert client.get_database_url()
        time.sleep(2.5)  # past the token's two-second TTL
        assert client.get_database_url() == TEST_SECRETS["crm/database"]["url"]
        assert client.health_check() is True


def test_a_revoked_approle_token_is_replaced_by_a_fresh_login(
    openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount, approle: AppRole
) -> None:
    with _client(openbao_server, vault_mount, approle) as client:
        assert client.get_database_url()
        # Revoke every token this AppRole mount ever issued, the client's included.
        openbao_root.sys.revoke_prefix(prefix=f"auth/{approle.mount}/login")
        assert client.get_database_url() == TEST_SECRETS["crm/database"]["url"]


def test_a_revoked_secret_id_leaves_an_auth_error_once_the_token_is_gone(
    openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount, approle: AppRole
) -> None:
    with _client(openbao_server, vault_mount, approle) as client:
        assert client.get_database_url()
        openbao_root.auth.approle.destroy_secret_id(
            "crm-app", approle.secret_id, mount_point=approle.mount
        )
        openbao_root.sys.revoke_prefix(prefix=f"auth/{approle.mount}/login")
        with pytest.raises(VaultAuthError, match="AppRole"):
            client.get_database_url()


def test_approle_arguments_win_over_a_token_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    openbao_server: OpenBaoServer,
    vault_mount: VaultMount,
    approle: AppRole,
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", f"stale-{uuid.uuid4().hex}")
    with _client(openbao_server, vault_mount, approle) as client:
        assert client.auth_method == "approle"
        assert client.get_valkey_url() == TEST_SECRETS["crm/valkey"]["url"]
