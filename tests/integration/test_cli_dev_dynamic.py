"""``crm-infra dev --dynamic-credentials``: the local stack on short-lived database logins from
OpenBao's database secrets engine, which ``check`` accepts, and which leaves no login behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import hvac
import psycopg
import pytest

from crm_infra import devstack
from tests.fixtures.cli_env import CLI_VARIABLES
from tests.fixtures.common import wait_until

pytestmark = pytest.mark.slow


def _env_file_values(path: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, _, value in pairs if not key.startswith("#")}


@pytest.fixture
def dev_stack(
    tmp_path: Path, pg_superuser_url: str
) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``crm-infra dev --dynamic-credentials`` running; the superuser URL in its environment."""
    env_file, log = tmp_path / "dev.env", tmp_path / "dev.log"
    drop = {*CLI_VARIABLES, devstack.SUPERUSER_URL_VARIABLE}
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    environ[devstack.SUPERUSER_URL_VARIABLE] = pg_superuser_url
    argv = [sys.executable, "-m", "crm_infra", "dev", "--dynamic-credentials"]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*argv, "--env-file", str(env_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=environ,
        )
    try:
        wait_until(
            lambda: env_file.exists() or process.poll() is not None,
            timeout=90,
            what="crm-infra dev --dynamic-credentials",
        )
        assert process.poll() is None, log.read_text()
        yield process, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _login_exists(superuser_url: str, role: str) -> bool:
    with psycopg.connect(superuser_url, autocommit=True) as su:
        row = su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    return row is not None


def test_dev_with_dynamic_credentials_runs_on_engine_logins_and_revokes_them_at_the_end(
    dev_stack: tuple[subprocess.Popen[str], Path], tmp_path: Path, pg_superuser_url: str
) -> None:
    process, log = dev_stack
    values = _env_file_values(tmp_path / "dev.env")
    assert "database/creds/crm-app" in log.read_text()

    # The application's token reads crm/database: roles, and URLs without any login.
    vault = hvac.Client(url=values["VAULT_ADDR"], token=values["VAULT_TOKEN"])
    fields = vault.secrets.kv.v2.read_secret_version(
        path="crm/database", raise_on_deleted_version=True
    )["data"]["data"]
    assert fields["creds_role"] == "crm-app"
    assert fields["admin_creds_role"] == "crm-admin"
    assert "@" not in fields["url"]
    assert "@" not in fields["admin_url"]

    environ = {k: v for k, v in os.environ.items() if k not in CLI_VARIABLES}
    check = subprocess.run(
        [sys.executable, "-m", "crm_infra", "check", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**environ, **values},
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["ok"] is True

    # A login still leased when the stack stops (an application that never closed).
    left = vault.secrets.database.generate_credentials("crm-app")["data"]["username"]
    assert _login_exists(pg_superuser_url, left)
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 130, log.read_text()
    text = log.read_text()
    assert "revoked every short-lived database login" in text
    assert "stopped; nothing left behind" in text
    assert not _login_exists(pg_superuser_url, left)
    assert not re.search(re.escape(values["VAULT_TOKEN"]), text)
