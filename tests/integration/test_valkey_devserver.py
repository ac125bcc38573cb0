"""The dev server itself: persistence on request, freezing, and stopping what it started."""

from __future__ import annotations

from pathlib import Path

import pytest

from crm_infra.adapters import ValkeyClient
from crm_infra.devservers.valkey import Persistence, ValkeyDevServer
from crm_infra.errors import KeyValueStoreUnavailableError


def test_without_persistence_a_restart_forgets_everything(private_valkey: ValkeyDevServer) -> None:
    with ValkeyClient(private_valkey.url) as kv:
        kv.set("k", "v")
        private_valkey.restart()
        assert kv.get("k") is None


@pytest.mark.parametrize("persistence", ["aof", "rdb"])
def test_with_persistence_data_survives_a_restart(
    tmp_path: Path, persistence: Persistence
) -> None:
    with ValkeyDevServer(persistence=persistence, data_dir=tmp_path) as server:
        port = server.port
        with ValkeyClient(server.url) as kv:
            kv.set("k", "v")
            kv.hit("rl", 60)
            server.restart()
            assert server.port == port
            assert kv.get("k") == "v"
            assert kv.hit("rl", 60) == 2
    assert any(tmp_path.iterdir())  # the data files stay for the next start


def test_aof_data_survives_a_crash(tmp_path: Path) -> None:
    with ValkeyDevServer(persistence="aof", data_dir=tmp_path) as server:
        with ValkeyClient(server.url) as kv:
            kv.set("k", "v")
        server.kill()
        server.start()
        with ValkeyClient(server.url) as kv:
            assert kv.get("k") == "v"


def test_a_paused_server_is_alive_but_silent_and_stops_cleanly() -> None:
    with ValkeyDevServer() as server:
        kv = ValkeyClient(server.url, connect_timeout=0.2, socket_timeout=0.3, timeout=1.0)
        server.pause()
        assert server.is_running
        with pytest.raises(KeyValueStoreUnavailableError):
            kv.get("k")
        kv.close()
        pid = server.pid
        assert pid is not None
    assert not server.is_running
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped
