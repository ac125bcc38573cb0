"""``crm-infra dev`` without servers: signals, exit codes, the env file, what it checks first.

The servers and provisioning are stand-ins here; tests/integration/test_cli_real.py runs the
real thing.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from crm_infra import ConfigError, devstack
from crm_infra.devservers import openbao, valkey_stack


class _Server:
    addr = "http://127.0.0.1:1"
    token = "root"
    port = 1
    url = "redis://127.0.0.1:1/0"

    def __init__(self, **_: object) -> None:
        pass

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *_: object) -> None:
        pass


MADE = devstack.Provisioned(
    database=cast(Any, None),
    database_name="crm_dev_x",
    app_role="app",
    admin_role="admin",
    applied=(),
    app_token="app-token",
)


class _Stack:
    """What the stand-ins saw: servers started, databases dropped, superuser checks made."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.dropped: list[devstack.Provisioned] = []
        self.checked: list[str] = []


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> _Stack:
    """Replace the servers, the superuser check and the cleanup; provision signals itself."""
    seen = _Stack()

    @contextmanager
    def fake_openbao(**_: object) -> Iterator[_Server]:
        seen.started.append("openbao")
        yield _Server()

    def fake_valkey(stack: ExitStack, topology: str, **_: object) -> str:
        seen.started.append(f"valkey {topology}")
        return _Server.url

    monkeypatch.delenv(devstack.SUPERUSER_URL_VARIABLE, raising=False)
    monkeypatch.setattr(openbao, "openbao_dev_server", fake_openbao)
    monkeypatch.setattr(valkey_stack, "start_valkey", fake_valkey)
    monkeypatch.setattr(devstack, "_check_superuser", seen.checked.append)
    monkeypatch.setattr(devstack, "_cleanup_database", lambda m, out: seen.dropped.append(m))
    return seen


def _provision_then(signum: int) -> Any:
    def provision(**_: object) -> devstack.Provisioned:
        # The signal lands after the database exists and before run_dev has registered its
        # cleanup.
        os.kill(os.getpid(), signum)
        return MADE

    return provision


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_as_provisioning_returns_still_drops_the_database(
    stack: _Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, signum: int, code: int
) -> None:
    monkeypatch.setattr(devstack, "provision", _provision_then(signum))
    env_file = tmp_path / "dev.env"
    out = io.StringIO()
    handler_before = signal.getsignal(signum)

    # 128 + the signal's number, as a shell reports a process a signal ended.
    assert devstack.run_dev(env_file=str(env_file), database_url=None, out=out) == code
    assert stack.dropped == [MADE]
    assert not env_file.exists()
    assert f"{signal.Signals(signum).name}: stopping" in out.getvalue()
    assert signal.getsignal(signum) is handler_before


def test_the_superuser_url_is_checked_before_any_server_starts(
    stack: _Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def refuse(url: str) -> None:
        raise ConfigError("not a superuser")

    monkeypatch.setattr(devstack, "_check_superuser", refuse)
    with pytest.raises(ConfigError, match="not a superuser"):
        devstack.run_dev(env_file=str(tmp_path / "dev.env"), database_url=None, out=io.StringIO())
    assert stack.started == []


def test_an_env_file_of_a_running_dev_is_refused_before_anything_starts(
    stack: _Stack, tmp_path: Path
) -> None:
    env_file = tmp_path / "dev.env"
    devstack.write_env_file(env_file, {"VAULT_TOKEN": "first-runs-token"})  # this process: alive
    running = rf"belongs to another `crm-infra dev` \(pid {os.getpid()}\), which is still running"
    with pytest.raises(ConfigError, match=running):
        devstack.run_dev(env_file=str(env_file), database_url=None, out=io.StringIO())
    assert stack.started == []
    assert stack.checked == []
    assert "VAULT_TOKEN=first-runs-token" in env_file.read_text()


def test_a_file_dev_did_not_write_is_never_overwritten(stack: _Stack, tmp_path: Path) -> None:
    env_file = tmp_path / "dev.env"
    env_file.write_text("MY_OWN=settings\n")
    with pytest.raises(ConfigError, match="was not written by `crm-infra dev`"):
        devstack.run_dev(env_file=str(env_file), database_url=None, out=io.StringIO())
    assert env_file.read_text() == "MY_OWN=settings\n"
    assert stack.started == []


def test_an_env_file_left_by_a_killed_run_is_replaced(
    stack: _Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=60)
    dead_pid = int(gone.stdout)  # exited and reaped: no process has this pid now
    env_file = tmp_path / "dev.env"
    env_file.write_text(f"# written by `crm-infra dev` (pid {dead_pid}); removed when it stops\n"
                        "VAULT_TOKEN=stale\n")
    written: list[str] = []

    def provision(**_: object) -> devstack.Provisioned:
        return MADE

    def stop_when_ready(path: Path, values: dict[str, str]) -> None:
        # SIGTERM lands as the file is written, before run_dev has registered its removal.
        real_write(path, values)
        written.append(path.read_text())
        os.kill(os.getpid(), signal.SIGTERM)

    real_write = devstack.write_env_file
    monkeypatch.setattr(devstack, "provision", provision)
    monkeypatch.setattr(devstack, "write_env_file", stop_when_ready)
    out = io.StringIO()
    assert devstack.run_dev(env_file=str(env_file), database_url=None, out=out) == 143
    assert f"the `crm-infra dev` that wrote it (pid {dead_pid}) is gone" in out.getvalue()
    assert written[0].startswith(f"# written by `crm-infra dev` (pid {os.getpid()})")
    assert "VAULT_TOKEN=app-token" in written[0]
    assert not env_file.exists()


def test_the_env_file_is_owner_only_and_never_replaces_another(tmp_path: Path) -> None:
    env_file = tmp_path / "dev.env"
    devstack.write_env_file(env_file, {"CRM_BACKEND": "real", "VAULT_TOKEN": "t"})
    assert env_file.stat().st_mode & 0o077 == 0
    lines = env_file.read_text().splitlines()
    assert lines[1:] == ["CRM_BACKEND=real", "VAULT_TOKEN=t"]
    with pytest.raises(FileExistsError):
        devstack.write_env_file(env_file, {"VAULT_TOKEN": "second"})
    assert "VAULT_TOKEN=t" in env_file.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.env"]  # no file left aside


def test_the_superuser_url_comes_from_the_option_then_the_environment_then_the_default() -> None:
    option, from_env = "postgresql://a@h:1/postgres", "postgresql://b@h:2/postgres"
    env = {devstack.SUPERUSER_URL_VARIABLE: from_env}
    assert devstack.resolve_superuser_url(option, env) == option
    assert devstack.resolve_superuser_url(None, env) == from_env
    assert devstack.resolve_superuser_url(None, {}) == devstack.DEFAULT_SUPERUSER_URL


@pytest.mark.parametrize("topology", ["single", "cluster", "sentinel"])
def test_the_chosen_valkey_topology_is_the_one_started(
    stack: _Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, topology: Any
) -> None:
    monkeypatch.setattr(devstack, "provision", _provision_then(signal.SIGINT))
    out = io.StringIO()
    code = devstack.run_dev(
        env_file=str(tmp_path / "dev.env"), database_url=None, out=out, valkey=topology
    )
    assert code == 130
    assert stack.started == ["openbao", f"valkey {topology}"]
    assert f"({topology}; password in Vault)" in out.getvalue()
