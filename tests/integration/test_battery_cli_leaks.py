"""The ``crm-infra`` command and the settings never print a credential, whatever fails.

Marker secrets go into the environment (a Vault token, an AppRole secret id) and into the
secrets the command reads (database and Valkey passwords); ``check``, ``check --json``,
``migrate`` and ``demo`` run against backends that refuse or cannot be reached, and all their
output, the settings' repr and every log record are scanned.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from crm_infra.cli import main
from crm_infra.devservers.openbao import OpenBaoServer
from crm_infra.settings import Settings
from tests.battery.leaks import LeakScan, marker
from tests.fixtures.common import free_port
from tests.fixtures.openbao import VaultMount

COMMANDS = (["check"], ["check", "--json"], ["migrate"], ["demo", "--backend", "real"])


def _clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID",
                 "VAULT_MOUNT_POINT", "CRM_BACKEND", "CRM_KEY_PREFIX", "CRM_DB_POOL_SIZE"):
        monkeypatch.delenv(name, raising=False)


def _run_all(scan: LeakScan, capsys: pytest.CaptureFixture[str], where: str) -> None:
    for argv in COMMANDS:
        code = main(argv)
        out, err = capsys.readouterr()
        assert code != 0, f"{where} {argv} should fail"
        assert out or err, f"{where} {argv} printed nothing"
        scan.add(f"{where} {' '.join(argv)} stdout", out)
        scan.add(f"{where} {' '.join(argv)} stderr", err)


def test_an_unreachable_vault_never_shows_the_token(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token, secret_id = marker("token"), marker("secretid")
    scan = LeakScan(token, secret_id)
    _clear_env(monkeypatch)
    monkeypatch.setenv("CRM_BACKEND", "real")
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("VAULT_TOKEN", token)
    scan.add("settings repr", repr(Settings.from_env()))
    _run_all(scan, capsys, "token")
    monkeypatch.delenv("VAULT_TOKEN")
    monkeypatch.setenv("VAULT_ROLE_ID", marker("role"))
    monkeypatch.setenv("VAULT_SECRET_ID", secret_id)
    scan.add("approle settings repr", repr(Settings.from_env()))
    _run_all(scan, capsys, "approle")
    scan.add_records(caplog.records)
    scan.check()


class Vault:
    """The session's OpenBao, its root client and this test's mount."""

    def __init__(self, root: Any, server: OpenBaoServer, mount: VaultMount) -> None:
        self.root, self.server, self.mount = root, server, mount


@pytest.fixture
def vault(openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount) -> Vault:
    return Vault(openbao_root, openbao_server, vault_mount)


def test_backend_passwords_read_from_vault_never_show(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    vault: Vault,
) -> None:
    openbao_root, openbao_server, vault_mount = vault.root, vault.server, vault.mount
    caplog.set_level(logging.DEBUG)
    token, db_password, kv_password = marker("token"), marker("dbpw"), marker("kvpw")
    scan = LeakScan(token, db_password, kv_password)
    name = f"cli{marker('')[-8:]}"
    openbao_root.sys.create_or_update_policy(
        name=name, policy=f'path "{vault_mount.name}/data/crm/*" {{ capabilities = ["read"] }}'
    )
    openbao_root.auth.token.create(id=token, policies=[name], ttl="1h")
    dead = free_port()
    vault_mount.put(
        "crm/database",
        {
            "url": f"postgresql://app:{db_password}@127.0.0.1:{dead}/crm",
            "admin_url": f"postgresql://admin:{db_password}@127.0.0.1:{dead}/crm",
        },
    )
    vault_mount.put("crm/valkey", {"url": f"redis://:{kv_password}@127.0.0.1:{dead}/0"})
    _clear_env(monkeypatch)
    monkeypatch.setenv("CRM_BACKEND", "real")
    monkeypatch.setenv("VAULT_ADDR", openbao_server.addr)
    monkeypatch.setenv("VAULT_TOKEN", token)
    monkeypatch.setenv("VAULT_MOUNT_POINT", vault_mount.name)
    _run_all(scan, capsys, "dead backends")
    scan.add_records(caplog.records)
    scan.check()
