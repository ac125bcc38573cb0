"""The OpenBao dev server helper: starts, answers, hides its token, stops, leaves nothing behind."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from crm_infra.adapters import VaultClient
from crm_infra.devservers.openbao import (
    OpenBaoServerError,
    find_bao_binary,
    openbao_dev_server,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state letter says it has exited.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_the_server_answers_and_is_stopped_on_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with openbao_dev_server() as server:
        assert server.addr == f"http://127.0.0.1:{server.port}"
        with VaultClient(server.addr, server.token) as client:
            assert client.health_check() is True
        assert server.token not in repr(server)
        assert _alive(server.pid)
    assert not _alive(server.pid)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.addr}/v1/sys/health", timeout=1)  # noqa: S310
    assert list(tmp_path.iterdir()) == []  # no token file, no log


def test_the_token_is_random_per_server() -> None:
    with openbao_dev_server() as first, openbao_dev_server() as second:
        assert first.token != second.token
        assert first.port != second.port


def test_the_token_is_not_on_the_command_line() -> None:
    with openbao_dev_server() as server:
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert server.token.encode() not in cmdline
        assert b"-dev" in cmdline


def test_a_missing_binary_says_how_to_install_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "bao")
    with (
        pytest.raises(OpenBaoServerError, match=r"dev extra"),
        openbao_dev_server(bao_binary=missing),
    ):
        pass


def test_the_wheel_binary_is_found() -> None:
    assert Path(find_bao_binary()).is_file()
