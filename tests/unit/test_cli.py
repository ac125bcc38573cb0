"""The crm-infra command on the memory backend: output, exit codes, JSON shape, no secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata

import pytest

from crm_infra import Infrastructure, Settings, build_infrastructure, cli
from crm_infra.cli import main
from tests.fixtures.cli_env import CLI_VARIABLES
from tests.fixtures.common import free_port

TOKEN = "hvs.MARKER-cli-token-93be"
SECRET_ID = "MARKER-cli-secret-id-41f0"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from an environment with none of the command's variables."""
    for name in CLI_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_check_prints_a_table_and_exits_0_when_healthy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["component", "status", "latency", "error"]
    for name in ("secrets", "database", "keyvalue"):
        assert any(line.split()[:2] == [name, "ok"] for line in lines), name
    assert lines[-1] == "backend: memory; all healthy"


def test_check_json_has_exactly_the_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('{\n  "ok": true,\n  "components": {\n'), "indented, as documented"
    report = json.loads(out)
    assert set(report) == {"ok", "components", "migrations"}
    assert report["ok"] is True
    # The in-memory database builds its schema from sql/ when it starts: nothing is pending.
    assert report["migrations"] == {"pending": []}
    assert set(report["components"]) == {"secrets", "database", "keyvalue"}
    for component in report["components"].values():
        assert set(component) == {"ok", "latency_ms", "error"}
        assert component["ok"] is True
        assert isinstance(component["latency_ms"], float)
        assert component["error"] is None


def test_check_exits_1_with_the_reason_when_a_backend_is_down(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on this loopback port: the refusal is immediate and needs no network.
    monkeypatch.setenv("CRM_BACKEND", "real")
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    assert main(["check", "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["ok"] is False
    assert report["components"]["secrets"]["ok"] is False
    assert "Vault" in report["components"]["secrets"]["error"]
    assert TOKEN not in captured.out + captured.err


def test_invalid_settings_exit_2_with_one_line_listing_every_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRM_BACKEND", "real")
    monkeypatch.setenv("VAULT_SECRET_ID", SECRET_ID)
    monkeypatch.setenv("CRM_DB_POOL_SIZE", "zero")
    assert main(["check"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("crm-infra: error: invalid settings (3 problems): ")
    for problem in ("VAULT_ADDR is required", "VAULT_ROLE_ID is missing", "CRM_DB_POOL_SIZE"):
        assert problem in lines[0]
    assert SECRET_ID not in captured.err
    assert "Traceback" not in captured.err


def test_check_json_with_invalid_settings_prints_a_json_answer_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRM_BACKEND", "real")
    monkeypatch.setenv("VAULT_SECRET_ID", SECRET_ID)
    assert main(["check", "--json"]) == 2
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    assert answer["ok"] is False
    assert answer["components"] == {}
    assert answer["migrations"] == {"pending": None}
    assert answer["error"].startswith("invalid settings (2 problems): ")
    assert "VAULT_ADDR is required" in answer["error"]
    assert captured.err.startswith("crm-infra: error: invalid settings")
    assert SECRET_ID not in captured.out + captured.err


def test_check_never_shows_a_password_in_the_vault_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRM_BACKEND", "real")
    monkeypatch.setenv("VAULT_ADDR", f"http://ops:MARKER-addr-pw@127.0.0.1:{free_port()}")
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    for argv in (["check", "--json"], ["check"]):
        assert main(argv) == 1
        captured = capsys.readouterr()
        assert "the Vault address must not hold a user or password" in captured.out
        assert "MARKER-addr-pw" not in captured.out + captured.err


def test_migrate_on_memory_explains_there_is_nothing_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["migrate"]) == 0
    assert "nothing to migrate" in capsys.readouterr().out


def test_demo_shows_isolation_on_the_memory_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "crm-infra demo on the memory backend" in out
    assert "[FAIL]" not in out
    for claim in (
        "each user sees exactly their own contacts",
        "alice looks up bob's ticket by its id: not found",
        "alice tries to create a contact owned by bob: refused by RLS",
        "the attempt over the limit is blocked",
        "the session resolves to alice",
    ):
        assert f"[ok  ] {claim}" in out
    alice_line = next(line for line in out.splitlines() if "alice  sees contacts:" in line)
    assert "Ada Lovelace" in alice_line
    assert "Grace Hopper" not in alice_line
    assert "BLOCKED" in out


def test_demo_async_tells_the_isolation_story_on_asyncio(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--async"]) == 0
    out = capsys.readouterr().out
    assert "crm-infra demo on asyncio, on the memory backend" in out
    assert "[FAIL]" not in out
    for claim in (
        "no request saw a row of the other user",
        "each request's user stayed its own across awaits",
        "the cancelled transaction left nothing behind",
        "every attempt was counted exactly once",
        "exactly 3 attempts were allowed",
    ):
        assert f"[ok  ] {claim}" in out
    assert "rows of the other user seen: 0" in out


def test_demo_backend_option_overrides_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRM_BACKEND", "real")  # and no Vault settings at all
    assert main(["demo", "--backend", "memory"]) == 0
    assert "memory backend" in capsys.readouterr().out


def test_demo_real_without_vault_settings_is_a_config_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--backend", "real"]) == 2
    assert "VAULT_ADDR is required" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["demo", "--backend", "mongo"]) == 2
    assert "usage: crm-infra" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("check", "migrate", "demo", "dev"):
        assert command in out


def test_dev_refuses_a_database_url_that_is_not_postgresql(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["dev", "--database-url", "mysql://root@localhost/x"]) == 2
    assert "--database-url must be a postgresql:// URL" in capsys.readouterr().err


def test_dev_reads_its_superuser_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRM_DEV_DATABASE_URL", "mysql://root:MARKER-dev-pw@localhost/x")
    assert main(["dev"]) == 2
    err = capsys.readouterr().err
    assert "CRM_DEV_DATABASE_URL must be a postgresql:// URL" in err
    assert "MARKER-dev-pw" not in err


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"crm-infra {metadata.version('crm-infra')}\n"


@pytest.mark.parametrize("argv", [["check"], ["check", "--json"], ["migrate"], ["demo"]])
def test_vault_variables_without_a_backend_are_reported_as_ignored(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "crm-infra: note: VAULT_ADDR, VAULT_TOKEN are set but ignored: CRM_BACKEND is not set, "
        "so the in-memory backend is used; set CRM_BACKEND=real to use Vault\n"
    )
    assert TOKEN not in captured.out + captured.err
    if "--json" in argv:
        assert json.loads(captured.out)["ok"] is True  # stdout stays pure JSON


@pytest.mark.parametrize(
    ("env", "argv"),
    [({"CRM_BACKEND": "memory"}, ["check"]), ({}, ["demo", "--backend", "memory"])],
    ids=["CRM_BACKEND=memory", "--backend memory"],
)
def test_a_backend_chosen_on_purpose_gets_no_note(
    env: dict[str, str],
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


class _LongFailure:
    """A key-value store whose health check fails with a long message."""

    message = "the start of a long reason " + "x" * 800 + " and its END"

    def health_check(self) -> bool:
        raise RuntimeError(self.message)


@pytest.fixture
def long_failure(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with build_infrastructure(Settings()) as memory:

        def build(settings: Settings | None = None) -> Infrastructure:
            return Infrastructure(
                secrets=memory.secrets,
                db=memory.db,
                admin_db=memory.admin_db,
                kv=_LongFailure(),  # type: ignore[arg-type]  # only health() is called
            )

        monkeypatch.setattr(cli, "build_infrastructure", build)
        yield


@pytest.mark.usefixtures("long_failure")
def test_check_json_carries_a_long_error_whole(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["components"]["keyvalue"]["error"]
    assert error == f"RuntimeError: {_LongFailure.message}"


@pytest.mark.usefixtures("long_failure")
def test_the_check_table_shortens_a_long_error_and_says_where_the_rest_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check"]) == 1
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("keyvalue"))
    assert "RuntimeError: the start of a long reason" in line
    assert "END" not in line
    assert line.endswith("… (all of it: crm-infra check --json)")


def test_runs_as_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crm_infra", "check", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "CRM_BACKEND": "memory"},  # the autouse fixture cleared the rest
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
