"""compose.yaml is checked by reading it (Docker does not run in CI): structure and wiring."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from crm_infra import devstack

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "compose.yaml"
_DEFAULTED = re.compile(r"\$\{([A-Z0-9_]+):-([^}]*)\}")


def interpolate(value: Any) -> Any:
    """Apply compose's ``${NAME:-default}`` with an empty environment."""
    if isinstance(value, str):
        return _DEFAULTED.sub(lambda m: m.group(2), value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return interpolate(loaded)  # type: ignore[no-any-return]  # YAML is untyped


def test_has_the_three_services_and_the_init_job(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"openbao", "postgres", "valkey", "init"}


def test_every_variable_reference_has_a_default() -> None:
    text = COMPOSE_FILE.read_text()
    references = re.findall(r"(?<!\$)\$\{([^}]*)\}", text)
    assert references, "the dev credentials are overridable"
    assert all(":-" in ref for ref in references), references


def test_servers_publish_only_on_loopback(compose: dict[str, Any]) -> None:
    for name in ("openbao", "postgres", "valkey"):
        ports = compose["services"][name]["ports"]
        assert ports, name
        assert all(str(p).startswith("127.0.0.1:") for p in ports), name


def test_every_server_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name in ("openbao", "postgres", "valkey"):
        check = compose["services"][name]["healthcheck"]
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_openbao_runs_in_dev_mode_with_the_documented_token(compose: dict[str, Any]) -> None:
    openbao = compose["services"]["openbao"]
    assert "-dev" in openbao["command"]
    assert openbao["environment"]["BAO_DEV_ROOT_TOKEN_ID"] == "crm-dev-root-token"
    assert "-dev-listen-address=0.0.0.0:8200" in openbao["command"]


def test_init_waits_for_healthy_servers_and_provisions(compose: dict[str, Any]) -> None:
    init = compose["services"]["init"]
    assert init["depends_on"] == {
        name: {"condition": "service_healthy"} for name in ("openbao", "postgres", "valkey")
    }
    assert init["restart"] == "no"
    assert "python -m crm_infra.devstack provision" in init["command"][-1]
    assert "./:/src:ro" in init["volumes"]


def test_init_gets_what_provision_reads(compose: dict[str, Any]) -> None:
    env = compose["services"]["init"]["environment"]
    for name in ("CRM_SUPERUSER_URL", "VAULT_ADDR", "VAULT_TOKEN", "CRM_VALKEY_URL"):
        assert env.get(name), name
    # init talks to the services by their compose names...
    assert env["VAULT_ADDR"] == "http://openbao:8200"
    assert "@postgres:5432/" in env["CRM_SUPERUSER_URL"]
    # ...but stores the addresses that clients on the host use.
    assert env["CRM_ADVERTISED_DB_HOST"] == "127.0.0.1:5432"
    assert env["CRM_VALKEY_URL"].endswith("@127.0.0.1:6379/0")


def test_init_sets_only_what_provision_reads(compose: dict[str, Any]) -> None:
    # A variable nothing reads would promise behaviour (a fixed database name, say) that
    # provisioning does not have.
    source = inspect.getsource(devstack.main)
    env = compose["services"]["init"]["environment"]
    unread = [n for n in env if not n.startswith("PIP_") and f'"{n}"' not in source]
    assert unread == []


def test_init_comment_promises_no_password_rotation() -> None:
    # Each run of init provisions a new database; it does not rotate an existing one's passwords.
    assert "rotat" not in COMPOSE_FILE.read_text().lower()


def test_credentials_agree_between_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    init_env = services["init"]["environment"]
    assert init_env["VAULT_TOKEN"] == services["openbao"]["environment"]["BAO_DEV_ROOT_TOKEN_ID"]
    pg_password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert f"postgres:{pg_password}@postgres" in init_env["CRM_SUPERUSER_URL"]
    valkey_command = services["valkey"]["command"]
    valkey_password = valkey_command[valkey_command.index("--requirepass") + 1]
    assert f":{valkey_password}@" in init_env["CRM_VALKEY_URL"]


def test_the_provision_entry_point_exists() -> None:
    assert callable(devstack.main)
    assert devstack.main(["nonsense"]) == 2
