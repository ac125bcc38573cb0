"""VaultClient against a real OpenBao: the basics, settings, repr and lifecycle."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from crm_infra import ConfigError, InvalidSecretError, SecretNotFoundError, SecretStoreAuthError
from crm_infra.adapters import VaultClient, VaultError
from crm_infra.adapters.vault import (
    VaultAuthError,
    VaultConfigError,
    VaultInvalidSecretError,
    VaultSecretNotFoundError,
)
from crm_infra.devservers.openbao import OpenBaoServer
from tests.fixtures.openbao import TEST_SECRETS, VaultMount

VAULT_ENV = ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID", "VAULT_MOUNT_POINT")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove every VAULT_* variable the client reads."""
    for name in VAULT_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def env_client(
    clean_env: pytest.MonkeyPatch, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> VaultClient:
    """A client configured only through the environment, as a deployed process is."""
    clean_env.setenv("VAULT_ADDR", openbao_server.addr)
    clean_env.setenv("VAULT_TOKEN", openbao_server.token)
    return VaultClient(mount_point=vault_mount.name)


# --- the basics ------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_init_without_addr_raises() -> None:
    with pytest.raises(VaultError, match="VAULT_ADDR not set"):
        VaultClient(addr=None, token="test")


@pytest.mark.usefixtures("clean_env")
def test_init_without_token_raises() -> None:
    with pytest.raises(VaultError, match="VAULT_TOKEN not set"):
        VaultClient(addr="http://localhost:8200", token=None)


def test_get_secret_not_found_raises(env_client: VaultClient) -> None:
    with pytest.raises(VaultError, match="not found") as info:
        env_client.get_secret("nonexistent/path")
    assert isinstance(info.value, SecretNotFoundError)


def test_get_database_url_returns_string(env_client: VaultClient) -> None:
    url = env_client.get_database_url()
    assert url.startswith("postgresql://")
    assert url == TEST_SECRETS["crm/database"]["url"]


def test_health_check_returns_true(env_client: VaultClient) -> None:
    assert env_client.health_check() is True


# --- settings --------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_missing_settings_are_config_errors_and_value_errors() -> None:
    with pytest.raises(ConfigError):
        VaultClient(addr=None, token="t")
    with pytest.raises(ValueError, match="VAULT_TOKEN not set"):
        VaultClient(addr="http://127.0.0.1:1")


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"addr": "127.0.0.1:8200"}, "http:// or https://"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"cache_ttl": 0}, "ttl"),
        ({"mount_point": "../sys"}, "mount point"),
        ({"mount_point": "/secret"}, "mount point"),
        ({"role_id": "r", "secret_id": "s"}, "not both"),
    ],
)
def test_bad_settings_fail_before_any_request(kwargs: dict[str, object], match: str) -> None:
    settings: dict[str, object] = {"addr": "http://127.0.0.1:1", "token": "t", **kwargs}
    with pytest.raises(VaultConfigError, match=match):
        VaultClient(**settings)  # type: ignore[arg-type]  # a table of mixed keyword values


@pytest.mark.usefixtures("clean_env")
def test_role_id_without_secret_id_is_a_config_error() -> None:
    with pytest.raises(VaultConfigError, match="VAULT_SECRET_ID is missing"):
        VaultClient(addr="http://127.0.0.1:1", role_id="some-role")


def test_a_token_and_an_approle_pair_in_the_environment_are_ambiguous(
    clean_env: pytest.MonkeyPatch,
) -> None:
    # The same rule as Settings: the client used to take the token and ignore the pair.
    clean_env.setenv("VAULT_TOKEN", "t")
    clean_env.setenv("VAULT_ROLE_ID", "r")
    clean_env.setenv("VAULT_SECRET_ID", "s")
    with pytest.raises(VaultConfigError, match="not both"):
        VaultClient(addr="http://127.0.0.1:1")


def test_a_malformed_field_read_through_a_method_is_the_adapters_class(
    openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    vault_mount.put("crm/valkey", {"url": "http://not-valkey"})
    with (
        VaultClient(
            openbao_server.addr, openbao_server.token, mount_point=vault_mount.name
        ) as client,
        pytest.raises(VaultInvalidSecretError, match="'url' of secret 'crm/valkey'") as info,
    ):
        client.get_valkey_url()
    assert isinstance(info.value, InvalidSecretError)


def test_an_invalid_token_fails_at_construction(openbao_server: OpenBaoServer) -> None:
    with pytest.raises(VaultAuthError, match="invalid, expired or revoked") as info:
        VaultClient(openbao_server.addr, f"bogus-{uuid.uuid4().hex}")
    assert isinstance(info.value, SecretStoreAuthError)
    assert str(info.value).count(openbao_server.addr) == 1


def test_arguments_win_over_the_environment(
    clean_env: pytest.MonkeyPatch, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    clean_env.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    clean_env.setenv("VAULT_TOKEN", "not-this-one")
    clean_env.setenv("VAULT_MOUNT_POINT", "not-this-mount")
    with VaultClient(
        openbao_server.addr, openbao_server.token, mount_point=vault_mount.name
    ) as client:
        assert client.get_valkey_url() == TEST_SECRETS["crm/valkey"]["url"]
        assert client.mount_point == vault_mount.name


def test_mount_point_defaults_to_secret_whatever_the_environment(
    clean_env: pytest.MonkeyPatch, openbao_server: OpenBaoServer
) -> None:
    # VAULT_MOUNT_POINT belongs to Settings (the composition root), not to the adapter.
    clean_env.setenv("VAULT_MOUNT_POINT", "not-this-mount")
    with VaultClient(openbao_server.addr, openbao_server.token) as client:
        assert client.mount_point == "secret"


# --- repr, messages, lifecycle ------------------------------------------------------------------


def test_repr_and_errors_never_contain_the_token(
    openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    marker = f"marker-token-{uuid.uuid4().hex}"
    openbao_root.auth.token.create(id=marker, policies=["default"], ttl="1h")
    client = VaultClient(openbao_server.addr, marker, mount_point=vault_mount.name)
    messages = [repr(client), str(client.__dict__.keys())]
    for path in ("crm/database", "missing/path", "../escape"):
        with pytest.raises(VaultError) as info:
            client.get_secret(path)
        messages += [str(info.value), repr(info.value)]
    openbao_root.auth.token.revoke(marker)
    with pytest.raises(VaultAuthError) as auth_info:
        client.health_check()
    messages += [str(auth_info.value), repr(auth_info.value)]
    with pytest.raises(VaultAuthError) as init_info:
        VaultClient(openbao_server.addr, marker)
    messages += [str(init_info.value), repr(init_info.value)]
    assert all(marker not in message for message in messages)
    assert "VaultClient(addr=" in messages[0]


def test_close_then_use_raises_vault_error(env_client: VaultClient) -> None:
    env_client.close()
    env_client.close()  # closing twice is harmless
    assert "closed" in repr(env_client)
    with pytest.raises(VaultError, match="closed"):
        env_client.get_secret("crm/database")
    with pytest.raises(VaultError, match="closed"):
        env_client.health_check()


def test_context_manager_closes_the_client(
    openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    with VaultClient(
        openbao_server.addr, openbao_server.token, mount_point=vault_mount.name
    ) as client:
        assert client.get_secret("crm/valkey")
    with pytest.raises(VaultError, match="closed"):
        client.get_secret("crm/valkey")


def test_destroyed_latest_version_is_reported_as_destroyed(
    openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    vault_mount.put("app/gone", {"k": "v"})
    vault_mount.destroy_latest("app/gone")
    with (
        VaultClient(
            openbao_server.addr, openbao_server.token, mount_point=vault_mount.name
        ) as client,
        pytest.raises(VaultSecretNotFoundError, match="destroyed"),
    ):
        client.get_secret("app/gone")
