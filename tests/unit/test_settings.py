"""Settings come from the environment, are validated all at once, and never show a secret."""

from __future__ import annotations

import pytest

from crm_infra import ConfigError, Settings
from crm_infra.settings import VaultCredentials, vault_credentials

TOKEN = "hvs.MARKER-token-5f1e"
SECRET_ID = "MARKER-secret-id-77aa"
ROLE_ID = "MARKER-role-id-0c3d"

REAL = {"CRM_BACKEND": "real", "VAULT_ADDR": "http://127.0.0.1:8200", "VAULT_TOKEN": TOKEN}


def test_defaults_to_the_memory_backend_with_documented_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.backend == "memory"
    assert settings.vault_mount_point == "secret"
    assert settings.db_pool_size == 10
    assert settings.key_prefix == ""
    assert (settings.vault_timeout, settings.db_timeout, settings.kv_timeout) == (5.0, 5.0, 5.0)
    assert settings.health_timeout == 5.0


def test_reads_every_variable() -> None:
    settings = Settings.from_env(
        {
            **REAL,
            "VAULT_MOUNT_POINT": "kv",
            "CRM_KEY_PREFIX": "crm:",
            "CRM_DB_POOL_SIZE": "4",
            "CRM_VAULT_TIMEOUT": "1.5",
            "CRM_DB_TIMEOUT": "2",
            "CRM_KV_TIMEOUT": "3",
            "CRM_HEALTH_TIMEOUT": "0.5",
        }
    )
    assert settings.backend == "real"
    assert settings.vault_addr == "http://127.0.0.1:8200"
    assert settings.vault_token == TOKEN
    assert settings.vault_mount_point == "kv"
    assert settings.key_prefix == "crm:"
    assert settings.db_pool_size == 4
    assert (settings.vault_timeout, settings.db_timeout, settings.kv_timeout) == (1.5, 2.0, 3.0)
    assert settings.health_timeout == 0.5
    assert not settings.uses_approle


def test_approle_credentials_are_accepted_instead_of_a_token() -> None:
    settings = Settings.from_env(
        {
            "CRM_BACKEND": "real",
            "VAULT_ADDR": "https://vault.internal:8200",
            "VAULT_ROLE_ID": ROLE_ID,
            "VAULT_SECRET_ID": SECRET_ID,
        }
    )
    assert settings.uses_approle
    assert settings.vault_token is None


def test_empty_values_count_as_unset() -> None:
    assert Settings.from_env({"CRM_BACKEND": "", "CRM_DB_POOL_SIZE": " "}) == Settings()


def test_backend_is_case_insensitive() -> None:
    assert Settings.from_env({**REAL, "CRM_BACKEND": "REAL"}).backend == "real"


def test_one_config_error_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "CRM_BACKEND": "real",
                "VAULT_ROLE_ID": ROLE_ID,
                "CRM_DB_POOL_SIZE": "many",
                "CRM_KV_TIMEOUT": "-1",
                "CRM_HEALTH_TIMEOUT": "soon",
            }
        )
    message = str(caught.value)
    assert "5 problems" in message
    for expected in (
        "VAULT_ADDR is required",
        "VAULT_SECRET_ID is missing",
        "CRM_DB_POOL_SIZE must be an integer, got 'many'",
        "CRM_KV_TIMEOUT must be a positive number",
        "CRM_HEALTH_TIMEOUT must be a number of seconds, got 'soon'",
    ):
        assert expected in message
    assert ROLE_ID not in message
    assert "\n" not in message


def test_real_backend_needs_credentials() -> None:
    with pytest.raises(ConfigError, match="VAULT_TOKEN not set: Vault needs credentials"):
        Settings.from_env({"CRM_BACKEND": "real", "VAULT_ADDR": "http://127.0.0.1:8200"})


def test_token_and_approle_together_are_ambiguous() -> None:
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env({**REAL, "VAULT_ROLE_ID": ROLE_ID, "VAULT_SECRET_ID": SECRET_ID})


def test_an_unknown_backend_is_named() -> None:
    with pytest.raises(ConfigError, match="CRM_BACKEND must be 'memory' or 'real', got 'mongo'"):
        Settings.from_env({"CRM_BACKEND": "mongo"})


def test_vault_addr_must_be_http_and_is_not_echoed() -> None:
    addr = "ftp://user:MARKER-pw@vault"
    with pytest.raises(ConfigError, match="VAULT_ADDR must be an http") as caught:
        Settings.from_env({**REAL, "VAULT_ADDR": addr})
    assert "MARKER-pw" not in str(caught.value)


def test_memory_backend_ignores_vault_variables() -> None:
    settings = Settings.from_env({"VAULT_ROLE_ID": ROLE_ID})
    assert settings.backend == "memory"


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match="CRM_DB_POOL_SIZE must be at least 1"):
        Settings(db_pool_size=0)
    with pytest.raises(ConfigError, match="VAULT_MOUNT_POINT"):
        Settings(vault_mount_point="/secret/")


def test_repr_shows_no_secret() -> None:
    settings = Settings.from_env(
        {**REAL, "VAULT_TOKEN": "", "VAULT_ROLE_ID": ROLE_ID, "VAULT_SECRET_ID": SECRET_ID}
    )
    shown = repr(settings) + str(settings)
    for marker in (ROLE_ID, SECRET_ID):
        assert marker not in shown
    assert TOKEN not in repr(Settings.from_env(REAL))
    assert "backend='real'" in shown


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.backend = "real"  # type: ignore[misc]  # proving it is refused


def test_repr_masks_the_user_info_of_the_vault_address() -> None:
    settings = Settings(
        backend="real", vault_addr="http://ops:MARKER-addr-pw@vault.internal:8200", vault_token="t"
    )
    text = repr(settings)
    assert "MARKER-addr-pw" not in text
    assert "ops" not in text
    assert "vault_addr='http://***@vault.internal:8200'" in text


# --- the Vault credential rules, shared with VaultClient ---------------------------------------

ENV_TOKEN = {"VAULT_TOKEN": TOKEN}
ENV_APPROLE = {"VAULT_ROLE_ID": ROLE_ID, "VAULT_SECRET_ID": SECRET_ID}


@pytest.mark.parametrize(
    "environ",
    [
        ENV_TOKEN,
        ENV_APPROLE,
        {**ENV_TOKEN, **ENV_APPROLE},
        {"VAULT_ROLE_ID": ROLE_ID},
        {"VAULT_SECRET_ID": SECRET_ID},
        {**ENV_TOKEN, "VAULT_SECRET_ID": SECRET_ID},
        {},
    ],
    ids=["token", "approle", "both", "role only", "secret id only", "token+secret id", "none"],
)
def test_settings_and_the_vault_client_accept_the_same_environments(
    environ: dict[str, str],
) -> None:
    try:
        vault_credentials(environ=environ)
    except ConfigError:
        client_accepts = False
    else:
        client_accepts = True
    try:
        Settings.from_env({**environ, "CRM_BACKEND": "real", "VAULT_ADDR": "http://127.0.0.1:1"})
    except ConfigError:
        settings_accept = False
    else:
        settings_accept = True
    assert client_accepts == settings_accept


@pytest.mark.parametrize(
    ("arguments", "environ", "expected"),
    [
        ({}, ENV_TOKEN, VaultCredentials(token=TOKEN)),
        ({}, ENV_APPROLE, VaultCredentials(role_id=ROLE_ID, secret_id=SECRET_ID)),
        ({"token": "t"}, ENV_APPROLE, VaultCredentials(token="t")),
        ({"role_id": "r", "secret_id": "s"}, ENV_TOKEN, VaultCredentials(None, "r", "s")),
        ({"role_id": "r"}, {**ENV_TOKEN, **ENV_APPROLE}, VaultCredentials(None, "r", SECRET_ID)),
        ({"secret_id": "s"}, ENV_APPROLE, VaultCredentials(None, ROLE_ID, "s")),
        ({"token": ""}, ENV_TOKEN, VaultCredentials(token=TOKEN)),
    ],
)
def test_credential_arguments_win_over_the_environment_as_a_whole(
    arguments: dict[str, str], environ: dict[str, str], expected: VaultCredentials
) -> None:
    assert vault_credentials(**arguments, environ=environ) == expected


@pytest.mark.parametrize(
    ("arguments", "environ", "match"),
    [
        ({}, {**ENV_TOKEN, **ENV_APPROLE}, "not both"),
        ({"token": "t", "role_id": "r", "secret_id": "s"}, {}, "not both"),
        ({"role_id": ROLE_ID}, {}, "VAULT_SECRET_ID is missing"),
        ({}, {"VAULT_SECRET_ID": SECRET_ID}, "VAULT_ROLE_ID is missing"),
        ({}, {}, "VAULT_TOKEN not set"),
    ],
)
def test_credentials_that_cannot_log_in_are_config_errors_without_values(
    arguments: dict[str, str], environ: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        vault_credentials(**arguments, environ=environ)
    for secret in (TOKEN, ROLE_ID, SECRET_ID):
        assert secret not in str(caught.value)


def test_the_credentials_repr_shows_no_value() -> None:
    shown = repr(VaultCredentials(TOKEN, ROLE_ID, SECRET_ID))
    for secret in (TOKEN, ROLE_ID, SECRET_ID):
        assert secret not in shown


@pytest.mark.parametrize("mount", ["../sys", "kv/../sys", "a b", "/secret"])
def test_a_mount_point_the_vault_client_would_refuse_is_refused_here_first(mount: str) -> None:
    with pytest.raises(ConfigError, match="VAULT_MOUNT_POINT"):
        Settings.from_env({"VAULT_MOUNT_POINT": mount})


def test_a_nested_mount_point_is_accepted() -> None:
    assert Settings.from_env({"VAULT_MOUNT_POINT": "team/kv"}).vault_mount_point == "team/kv"
