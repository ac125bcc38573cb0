"""The composition root and the crm-infra command against real OpenBao, PostgreSQL and Valkey."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from crm_infra import (
    Settings,
    StartupError,
    build_async_infrastructure,
    build_infrastructure,
    devstack,
)
from crm_infra.adapters import (
    AsyncPostgresClient,
    AsyncValkeyClient,
    AsyncVaultClient,
    PostgresClient,
    ValkeyClient,
    VaultClient,
)
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.cli import main
from crm_infra.devservers.openbao import OpenBaoServer
from crm_infra.devservers.valkey import ValkeyDevServer
from crm_infra.errors import KeyValueStoreError
from crm_infra.schema_files import migration_files
from tests.fixtures.cli_env import CLI_VARIABLES
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.openbao import VaultMount, create_token
from tests.fixtures.psql import run_as_superuser
from tests.fixtures.throwaway import throwaway_database

SHIPPED = [p.name for p in migration_files()]


def login_url(superuser_url: str, user: str, password: str, dbname: str | None = None) -> str:
    """Return a postgresql:// URL for ``user`` on the server of ``superuser_url``."""
    server = conninfo_to_dict(superuser_url)
    host, port = str(server.get("host") or "localhost"), server.get("port") or 5432
    database = quote(dbname or str(server.get("dbname") or "postgres"), safe="")
    where = f"@:{port}/{database}?host={quote(host, safe='')}" if host.startswith("/") else (
        f"@{host}:{port}/{database}"
    )
    return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}{where}"


def point_vault_at(vault_mount: VaultMount, app_url: str, admin_url: str) -> None:
    vault_mount.put("crm/database", {"url": app_url, "admin_url": admin_url})


@pytest.fixture
def real_env(  # noqa: PLR0917  # pytest hands fixtures over as arguments
    openbao_server: OpenBaoServer,
    openbao_root: Any,
    vault_mount: VaultMount,
    pg_database: BootstrappedDatabase,
    private_valkey: ValkeyDevServer,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Point the environment at a real stack; the app's token may only read crm/* (docs)."""
    point_vault_at(vault_mount, pg_database.app_url, pg_database.admin_url)
    vault_mount.put("crm/valkey", {"url": private_valkey.url})
    policy = f'path "{vault_mount.name}/data/crm/*" {{ capabilities = ["read"] }}'
    env = {
        "CRM_BACKEND": "real",
        "VAULT_ADDR": openbao_server.addr,
        "VAULT_TOKEN": create_token(openbao_root, policy),
        "VAULT_MOUNT_POINT": vault_mount.name,
        "CRM_HEALTH_TIMEOUT": "3",
    }
    for name in CLI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the composition root in real mode -------------------------------------------------------


def test_real_mode_builds_the_adapters_from_vault(
    real_env: dict[str, str], pg_database: BootstrappedDatabase
) -> None:
    with build_infrastructure() as infra:
        assert isinstance(infra.secrets, VaultClient)
        assert isinstance(infra.db, PostgresClient)
        assert cast(object, infra.admin_db) is infra.db
        assert isinstance(infra.kv, ValkeyClient)
        report = infra.health()
        assert report.ok, report.to_dict()
        someone = "00000000-0000-4000-8000-000000000001"
        assert infra.db.execute_scalar("SELECT current_user", user_id=someone) == (
            pg_database.app_role
        )


@pytest.mark.asyncio
async def test_async_real_mode_builds_the_async_adapters_from_vault(
    real_env: dict[str, str], pg_database: BootstrappedDatabase
) -> None:
    async with await build_async_infrastructure() as infra:
        assert isinstance(infra.secrets, AsyncVaultClient)
        assert isinstance(infra.db, AsyncPostgresClient)
        assert cast(object, infra.admin_db) is infra.db
        assert isinstance(infra.kv, AsyncValkeyClient)
        report = await infra.health()
        assert report.ok, report.to_dict()
        assert report.components["database"].pools, "the asyncio pools report their state"
        assert report.components["keyvalue"].pools
        someone = "00000000-0000-4000-8000-000000000001"
        assert await infra.db.execute_scalar("SELECT current_user", user_id=someone) == (
            pg_database.app_role
        )
        assert await infra.kv.hit("async-real", 60) == 1
    with pytest.raises(KeyValueStoreError, match="closed"):
        await infra.kv.get("k")


def test_real_mode_applies_the_key_prefix(
    real_env: dict[str, str], private_valkey: ValkeyDevServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_KEY_PREFIX", "tenant-a:")
    with build_infrastructure() as infra:
        infra.kv.set("k", "v", expire_seconds=60)

    with redis.Redis.from_url(private_valkey.url, decode_responses=True) as raw:
        assert raw.get("tenant-a:k") == "v"


def test_an_unreachable_vault_fails_fast_naming_the_component(real_env: dict[str, str]) -> None:
    settings = Settings.from_env({**real_env, "VAULT_ADDR": f"http://127.0.0.1:{free_port()}"})
    start = time.monotonic()
    with pytest.raises(StartupError) as caught:
        build_infrastructure(settings)
    assert time.monotonic() - start < 10
    assert caught.value.component == "secrets"
    assert "Vault" in str(caught.value)
    assert real_env["VAULT_TOKEN"] not in str(caught.value)


def test_a_missing_credential_in_vault_names_the_path(
    real_env: dict[str, str], vault_mount: VaultMount
) -> None:
    vault_mount.delete("crm/valkey")
    with pytest.raises(StartupError) as caught:
        build_infrastructure()
    assert caught.value.component == "secrets"
    assert "crm/valkey" in str(caught.value)


def test_a_stopped_valkey_at_start_up_names_keyvalue_and_closes_the_rest(
    real_env: dict[str, str], private_valkey: ValkeyDevServer
) -> None:
    private_valkey.stop()
    with pytest.raises(StartupError) as caught:
        build_infrastructure()
    assert caught.value.component == "keyvalue"


def test_a_dead_database_at_start_up_does_not_hide_valkey(
    real_env: dict[str, str],
    vault_mount: VaultMount,
    pg_database: BootstrappedDatabase,
    private_valkey: ValkeyDevServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Nothing listens on the port the stored database URL names; Valkey is up.
    closed = f"127.0.0.1:{free_port()}"
    vault_mount.put(
        "crm/database",
        {
            "url": re.sub(r"@[^/]+/", f"@{closed}/", pg_database.app_url),
            "admin_url": re.sub(r"@[^/]+/", f"@{closed}/", pg_database.admin_url),
        },
    )
    code, out, err = run_cli(capsys, "check", "--json")
    assert code == 1, out + err
    report = json.loads(out)
    assert report["ok"] is False
    components = report["components"]
    assert components["secrets"]["ok"] is True
    assert components["database"]["ok"] is False
    assert "PostgreSQL" in components["database"]["error"]
    assert components["keyvalue"]["ok"] is True
    assert components["keyvalue"]["error"] is None

    # Valkey's state is its own, not inferred from the database's: stopped, it shows as down.
    private_valkey.stop()
    code, out, err = run_cli(capsys, "check", "--json")
    assert code == 1, out + err
    components = json.loads(out)["components"]
    assert components["secrets"]["ok"] is True
    assert "PostgreSQL" in components["database"]["error"]
    assert components["keyvalue"]["ok"] is False
    assert "Valkey" in components["keyvalue"]["error"]


def test_a_broken_admin_path_makes_the_database_unhealthy(
    real_env: dict[str, str], vault_mount: VaultMount, pg_database: BootstrappedDatabase
) -> None:
    # The application role works; the admin role's URL names a port nothing listens on.
    broken_admin = re.sub(r"@[^/]+/", f"@127.0.0.1:{free_port()}/", pg_database.admin_url)
    vault_mount.put("crm/database", {"url": pg_database.app_url, "admin_url": broken_admin})
    with build_infrastructure() as infra:
        report = infra.health()
    assert report.components["secrets"].ok
    assert report.components["keyvalue"].ok
    database = report.components["database"]
    assert not database.ok
    assert database.error


def test_the_vault_address_password_is_shown_nowhere(
    real_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    password = "MARKER-addr-pw-7c1d"
    addr = real_env["VAULT_ADDR"].replace("://", f"://ops:{password}@", 1)
    monkeypatch.setenv("VAULT_ADDR", addr)
    code, out, err = run_cli(capsys, "check", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["components"]["secrets"]["ok"] is False
    assert "must not hold a user or password" in report["components"]["secrets"]["error"]
    assert password not in out + err


# --- the command -----------------------------------------------------------------------------


def test_check_exits_0_against_the_real_stack(
    real_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "check", "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["ok"] is True
    assert all(c["ok"] for c in report["components"].values())
    assert report["migrations"] == {"pending": []}
    assert real_env["VAULT_TOKEN"] not in out + err


def test_check_exits_1_with_a_readable_reason_when_valkey_is_stopped(
    real_env: dict[str, str], private_valkey: ValkeyDevServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run_cli(capsys, "check")
    assert code == 0
    private_valkey.stop()
    start = time.monotonic()
    code, out, err = run_cli(capsys, "check")
    assert time.monotonic() - start < 15
    assert code == 1
    keyvalue = next(line for line in out.splitlines() if line.startswith("keyvalue"))
    assert "FAIL" in keyvalue
    assert "Valkey" in keyvalue
    assert out.splitlines()[-1] == "backend: real; UNHEALTHY"
    assert real_env["VAULT_TOKEN"] not in out + err
    assert "Traceback" not in err


def test_check_reports_a_dead_valkey_without_hiding_the_others(
    real_env: dict[str, str], private_valkey: ValkeyDevServer
) -> None:
    with build_infrastructure() as infra:
        private_valkey.stop()
        report = infra.health()
    assert report.components["secrets"].ok
    assert report.components["database"].ok
    assert not report.components["keyvalue"].ok
    assert report.components["keyvalue"].error


def test_migrate_through_the_admin_path_is_idempotent(
    real_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "migrate")
    assert code == 0
    assert out.strip() == "schema is up to date: nothing to apply"


@pytest.fixture
def unmigrated(pg_superuser_url: str) -> Iterator[BootstrappedDatabase]:
    """A bootstrapped database whose migrations were never applied."""
    with throwaway_database(pg_superuser_url, "crm_test_cli") as made:
        yield made


def test_check_reports_pending_migrations_until_migrate_applies_them(
    real_env: dict[str, str],
    vault_mount: VaultMount,
    unmigrated: BootstrappedDatabase,
    capsys: pytest.CaptureFixture[str],
) -> None:
    point_vault_at(vault_mount, unmigrated.app_url, unmigrated.admin_url)

    code, out, err = run_cli(capsys, "check", "--json")
    assert code == 1, out + err
    report = json.loads(out)
    assert report["ok"] is False
    assert report["migrations"] == {"pending": SHIPPED}
    database = report["components"]["database"]
    assert database["ok"] is False
    assert database["error"] == (
        f"{len(SHIPPED)} migration(s) pending: {', '.join(SHIPPED)}; run `crm-infra migrate`"
    )
    assert database["pools"], "an unhealthy schema must not hide the pools' counters"
    assert report["components"]["secrets"]["ok"] is True
    assert report["components"]["keyvalue"]["ok"] is True

    code, out, _ = run_cli(capsys, "check")
    assert code == 1
    assert "run `crm-infra migrate`" in next(
        line for line in out.splitlines() if line.startswith("database")
    )
    assert out.splitlines()[-1] == "backend: real; UNHEALTHY"

    # The demo says the same before it writes anything, instead of `relation "users" ...`.
    code, out, err = run_cli(capsys, "demo", "--backend", "real")
    assert code == 1
    assert "run `crm-infra migrate` first" in err
    assert "does not exist" not in out + err

    code, out, err = run_cli(capsys, "migrate")
    assert code == 0, err
    assert out.strip() == f"applied {len(SHIPPED)} migration(s): {', '.join(SHIPPED)}"
    code, out, err = run_cli(capsys, "check", "--json")
    assert code == 0, out + err
    assert json.loads(out)["migrations"] == {"pending": []}


@pytest.fixture
def hand_made(pg_superuser_url: str, pg_database: BootstrappedDatabase) -> Iterator[dict[str, str]]:
    """A database set up by hand as docs/operations.md describes, without the bootstrap file.

    ``pg_database`` made sure the group roles exist on the server (they are shared).
    """
    name = f"crm_test_hand_{secrets.token_hex(4)}"
    password = secrets.token_hex(12)
    roles = {"app": f"{name}_app", "admin": f"{name}_admin"}
    with psycopg.connect(pg_superuser_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        for kind, flags, group in (("app", "NOBYPASSRLS", "crm_app"),
                                   ("admin", "BYPASSRLS", "crm_admin")):
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER " + flags + " IN ROLE {}")
                .format(sql.Identifier(roles[kind]), sql.Literal(password), sql.Identifier(group))
            )
    urls = {
        kind: login_url(pg_superuser_url, role, password, name)
        for kind, role in roles.items()
    }
    try:
        yield {"database": name, "password": password, **urls}
    finally:
        with psycopg.connect(pg_superuser_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            for role in roles.values():
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_migrate_on_a_database_without_the_bootstrap_says_the_command_that_fixes_it(
    real_env: dict[str, str],
    vault_mount: VaultMount,
    hand_made: dict[str, str],
    pg_superuser_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    point_vault_at(vault_mount, hand_made["app"], hand_made["admin"])
    code, out, err = run_cli(capsys, "migrate")
    assert code == 1, out + err
    command = re.search(r"psql .*?roles\.sql", err)
    assert command, err
    assert f"-d {hand_made['database']} " in command.group(0)
    port = conninfo_to_dict(pg_superuser_url).get("port") or "5432"
    assert f" -p {port} " in command.group(0)
    assert f"bootstrap file has not run in database {hand_made['database']}" in err
    assert hand_made["password"] not in out + err

    run_as_superuser(command.group(0), pg_superuser_url)
    code, out, err = run_cli(capsys, "migrate")
    assert code == 0, err
    assert out.strip() == f"applied {len(SHIPPED)} migration(s): {', '.join(SHIPPED)}"


def test_demo_on_the_real_backend(
    real_env: dict[str, str], capsys: pytest.CaptureFixture[str], pg_database: BootstrappedDatabase
) -> None:
    code, out, err = run_cli(capsys, "demo", "--backend", "real")
    assert code == 0, out + err
    assert "crm-infra demo on the real backend" in out
    assert "[FAIL]" not in out
    assert "[ok  ] alice tries to create a contact owned by bob: refused by RLS" in out
    assert "BLOCKED" in out
    emails = re.findall(r"\b(?:alice|bob)\.\w+@example\.com", out)
    assert len(emails) == 2, out
    with psycopg.connect(pg_database.admin_url) as conn:
        left = conn.execute("SELECT count(*) FROM users WHERE email = ANY(%s)", [emails])
        assert left.fetchone() == (0,), "the demo removes its users again"


def test_demo_async_on_the_real_backend(
    real_env: dict[str, str], capsys: pytest.CaptureFixture[str], pg_database: BootstrappedDatabase
) -> None:
    code, out, err = run_cli(capsys, "demo", "--async", "--backend", "real")
    assert code == 0, out + err
    assert "crm-infra demo on asyncio, on the real backend" in out
    assert "[FAIL]" not in out
    assert "[ok  ] no request saw a row of the other user" in out
    assert "[ok  ] the cancelled transaction left nothing behind" in out
    emails = re.findall(r"\b(?:alice|bob)\.\w+@example\.com", out)
    assert len(emails) == 2, out
    with psycopg.connect(pg_database.admin_url) as conn:
        left = conn.execute("SELECT count(*) FROM users WHERE email = ANY(%s)", [emails])
        assert left.fetchone() == (0,), "the demo removes its users again"


# --- crm-infra dev ---------------------------------------------------------------------------


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def _dev_environ(**extra: str) -> dict[str, str]:
    """The test's environment without the command's variables, plus ``extra``."""
    drop = {*CLI_VARIABLES, devstack.SUPERUSER_URL_VARIABLE}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def _run_dev(*argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run a `crm-infra dev` expected to stop by itself; stop it cleanly if it does not."""
    command = [sys.executable, "-m", "crm_infra", "dev", *argv]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_dev_environ(**extra),
    ) as process:
        try:
            out, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)  # so that it removes what it made
            out, err = process.communicate(timeout=60)
            pytest.fail(f"crm-infra dev kept running:\n{out}{err}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@contextmanager
def _running_dev(
    tmp_path: Path, superuser_url: str, *extra: str
) -> Iterator[tuple[subprocess.Popen[str], Path, Path]]:
    """Start `crm-infra dev` as a subprocess; make sure it is gone at the end.

    The superuser URL travels in the environment, as docs/cli.md advises: never in argv.
    """
    env_file = tmp_path / "dev.env"
    log = tmp_path / "dev.log"
    argv = [sys.executable, "-m", "crm_infra", "dev", "--env-file", str(env_file), *extra]
    with log.open("w") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=_dev_environ(CRM_DEV_DATABASE_URL=superuser_url),
        )
    try:
        wait_until(
            lambda: env_file.exists() or process.poll() is not None,
            timeout=90,
            what="crm-infra dev",
        )
        assert process.poll() is None, log.read_text()
        yield process, env_file, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture
def dev_process(
    tmp_path: Path, pg_superuser_url: str
) -> Iterator[tuple[subprocess.Popen[str], Path, Path]]:
    with _running_dev(tmp_path, pg_superuser_url) as running:
        yield running


def _provisioned(log_text: str) -> tuple[str, list[str]]:
    """Return the database and login roles a provisioning run reported."""
    found = re.search(
        r"database (crm_dev_\w+): login roles (\w+) \(app\), (\w+) \(admin\)", log_text
    )
    assert found, log_text
    return found.group(1), [found.group(2), found.group(3)]


def _server_ports(log_text: str) -> tuple[int, int]:
    """Return the OpenBao and Valkey ports `crm-infra dev` reported."""
    vault_port = re.search(r"OpenBao  http://127\.0\.0\.1:(\d+)", log_text)
    valkey_port = re.search(r"Valkey   redis(?:\+\w+)?://127\.0\.0\.1:(\d+)", log_text)
    assert vault_port, log_text
    assert valkey_port, log_text
    return int(vault_port.group(1)), int(valkey_port.group(1))


def _leftovers(superuser_url: str, database: str, roles: list[str]) -> tuple[int, int]:
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        dbs = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [database])
        role_rows = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", [roles])
        return dbs.fetchone()[0], role_rows.fetchone()[0]  # type: ignore[index]  # count(*) always has a row


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop_signal", "exit_code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["SIGINT", "SIGTERM"],
)
def test_dev_runs_a_stack_that_check_accepts_and_removes_it_on_a_signal(
    dev_process: tuple[subprocess.Popen[str], Path, Path],
    pg_superuser_url: str,
    stop_signal: signal.Signals,
    exit_code: int,
) -> None:
    process, env_file, log = dev_process
    values = _read_env_file(env_file)
    assert set(values) == {"CRM_BACKEND", "VAULT_ADDR", "VAULT_TOKEN"}
    assert values["CRM_BACKEND"] == "real"
    assert env_file.stat().st_mode & 0o077 == 0, "the env file holds a token: owner only"
    database, roles = _provisioned(log.read_text())
    vault_port, valkey_port = _server_ports(log.read_text())
    assert _leftovers(pg_superuser_url, database, roles) == (1, 2)

    environ = {k: v for k, v in os.environ.items() if k not in CLI_VARIABLES}
    check = subprocess.run(
        [sys.executable, "-m", "crm_infra", "check", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**environ, **values},
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["ok"] is True

    # A second run in the same folder is refused at once: the file names a live process.
    second = _run_dev("--env-file", str(env_file), CRM_DEV_DATABASE_URL=pg_superuser_url)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"belongs to another `crm-infra dev` (pid {process.pid})" in second.stderr
    assert "OpenBao" not in second.stdout
    assert _read_env_file(env_file) == values

    process.send_signal(stop_signal)
    assert process.wait(60) == exit_code, log.read_text()
    text = log.read_text()
    assert "stopped; nothing left behind" in text
    assert values["VAULT_TOKEN"] not in text
    assert _leftovers(pg_superuser_url, database, roles) == (0, 0)
    assert not env_file.exists()
    assert not _port_answers(vault_port)
    assert not _port_answers(valkey_port)


def test_dev_that_cannot_reach_postgresql_says_so_before_starting_any_server(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / "dev.env"
    result = _run_dev(
        "--env-file",
        str(env_file),
        "--database-url",
        f"postgresql://postgres:MARKER-pw@127.0.0.1:{free_port()}/postgres",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    errors = result.stderr.splitlines()
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("crm-infra: error: checking the PostgreSQL superuser URL:")
    assert "MARKER-pw" not in result.stdout + result.stderr
    assert not env_file.exists()
    assert "OpenBao" not in result.stdout


@pytest.fixture
def ordinary_role_url(pg_superuser_url: str) -> Iterator[str]:
    """The URL of a login role that is not a superuser, on the test server."""
    role, password = f"crm_test_plain_{secrets.token_hex(4)}", f"MARKER-{secrets.token_hex(8)}"
    with psycopg.connect(pg_superuser_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    try:
        yield login_url(pg_superuser_url, role, password)
    finally:
        with psycopg.connect(pg_superuser_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_dev_with_a_role_that_is_not_a_superuser_fails_before_starting_any_server(
    tmp_path: Path, ordinary_role_url: str
) -> None:
    env_file = tmp_path / "dev.env"
    result = _run_dev("--env-file", str(env_file), CRM_DEV_DATABASE_URL=ordinary_role_url)
    assert result.returncode == 2, result.stdout + result.stderr
    role = conninfo_to_dict(ordinary_role_url)["user"]
    assert result.stderr == (
        f"crm-infra: error: the PostgreSQL URL logs in as '{role}', which is not a superuser; "
        "`crm-infra dev` needs one to create roles and a database and to run "
        "sql/bootstrap/roles.sql\n"
    )
    assert str(conninfo_to_dict(ordinary_role_url)["password"]) not in result.stdout
    assert "OpenBao" not in result.stdout
    assert not env_file.exists()


def test_the_compose_init_entry_point_provisions_a_working_stack(  # noqa: PLR0917  # fixtures
    openbao_server: OpenBaoServer,
    vault_mount: VaultMount,
    private_valkey: ValkeyDevServer,
    pg_superuser_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in CLI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # Clients reach the server by another name for it than the one init uses (compose's
    # "postgres" versus the host's 127.0.0.1): swap 127.0.0.1 and localhost to prove it.
    server = conninfo_to_dict(pg_superuser_url)
    host = str(server.get("host") or "localhost")
    host = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}.get(host, host)
    advertised = f"{host}:{server.get('port') or 5432}"
    provision_env = {
        "CRM_SUPERUSER_URL": pg_superuser_url,
        "VAULT_ADDR": openbao_server.addr,
        "VAULT_TOKEN": openbao_server.token,
        "VAULT_MOUNT_POINT": vault_mount.name,
        "CRM_VALKEY_URL": private_valkey.url,
        "CRM_ADVERTISED_DB_HOST": advertised,
    }
    for name, value in provision_env.items():
        monkeypatch.setenv(name, value)
    code = devstack.main(["provision"])
    out = capsys.readouterr().out
    database, roles = _provisioned(out)
    try:
        assert code == 0, out
        stored = vault_mount.root.secrets.kv.v2.read_secret_version(
            path="crm/database", mount_point=vault_mount.name, raise_on_deleted_version=True
        )["data"]["data"]
        assert f"@{advertised}/" in stored["url"], "clients get the advertised address"
        for name in ("CRM_SUPERUSER_URL", "CRM_VALKEY_URL", "CRM_ADVERTISED_DB_HOST"):
            monkeypatch.delenv(name)
        monkeypatch.setenv("CRM_BACKEND", "real")
        assert main(["check"]) == 0, capsys.readouterr().out
        assert openbao_server.token not in out
    finally:
        with psycopg.connect(pg_superuser_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
            for role in roles:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    assert _leftovers(pg_superuser_url, database, roles) == (0, 0)


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_dev_on_a_valkey_topology_serves_the_application_and_stops_every_server(
    tmp_path: Path, pg_superuser_url: str, topology: str
) -> None:
    with _running_dev(tmp_path, pg_superuser_url, "--valkey", topology) as running:
        process, env_file, log = running
        text = log.read_text()
        assert f"Valkey   redis+{topology}://127.0.0.1:" in text
        shown = re.search(r"Valkey   (\S+)", text)
        assert shown
        ports = [int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", shown.group(1))]
        assert ports, text
        environ = {k: v for k, v in os.environ.items() if k not in CLI_VARIABLES}
        demo = subprocess.run(
            [sys.executable, "-m", "crm_infra", "demo", "--backend", "real"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**environ, **_read_env_file(env_file)},
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 130, log.read_text()
    assert "stopped; nothing left behind" in log.read_text()
    assert not [port for port in ports if _port_answers(port)]


def test_check_json_reports_each_pools_counters(
    real_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "check", "--json")
    assert code == 0, out + err
    components = json.loads(out)["components"]
    database = components["database"]["pools"]
    assert sorted(name.split(" ")[0] for name in database) == ["crm-admin", "crm-app"]
    for counters in database.values():
        assert counters["system"] == "postgresql"
        assert counters["size"] == counters["idle"] + counters["in_use"]
        assert counters["waiting"] == 0
        assert counters["requests"] >= 1
    (valkey,) = components["keyvalue"]["pools"].values()
    assert valkey["system"] == "redis"
    assert valkey["size"] >= 1
    assert "pools" not in components["secrets"]
