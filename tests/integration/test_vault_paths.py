"""Invalid paths never reach the server: proven with a recording proxy in front of real OpenBao.

hvac normalises ``../../sys/seal-status`` and really reads it (an unauthenticated endpoint, so
even a token with no rights gets an answer). The suite's TCP proxy forwards bytes both ways
unchanged, and its per-chunk hook keeps a copy of everything the client sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from crm_infra.adapters import VaultClient
from crm_infra.adapters.vault import VaultInvalidPathError
from crm_infra.devservers.openbao import OpenBaoServer
from tests.fixtures.openbao import VaultMount
from tests.fixtures.secret_paths import BAD_PATHS
from tests.fixtures.tcp_proxy import Chunk, TcpProxy


class RecordingProxy:
    """The suite's TCP proxy, keeping a copy of every byte sent towards the server."""

    def __init__(self, target_port: int) -> None:
        self._sent = bytearray()
        self._lock = threading.Lock()
        self._proxy = TcpProxy(target_port, on_chunk=self._record)
        self.port = self._proxy.port

    @property
    def sent(self) -> bytes:
        with self._lock:
            return bytes(self._sent)

    def _record(self, chunk: Chunk) -> None:
        if chunk.to_server:
            with self._lock:
                self._sent += chunk.data

    def close(self) -> None:
        self._proxy.close()


@pytest.fixture
def proxy(openbao_server: OpenBaoServer) -> Iterator[RecordingProxy]:
    port = urlsplit(openbao_server.addr).port
    assert port is not None
    recording = RecordingProxy(port)
    yield recording
    recording.close()


@pytest.fixture
def proxied_client(
    proxy: RecordingProxy, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> Iterator[VaultClient]:
    with VaultClient(
        f"http://127.0.0.1:{proxy.port}", openbao_server.token, mount_point=vault_mount.name
    ) as client:
        yield client


def test_the_proxy_sees_a_valid_read(
    proxied_client: VaultClient, proxy: RecordingProxy, vault_mount: VaultMount
) -> None:
    assert proxied_client.get_valkey_url()
    assert f"/v1/{vault_mount.name}/data/crm/valkey".encode() in proxy.sent


@pytest.mark.parametrize("path", list(BAD_PATHS.values()), ids=list(BAD_PATHS))
def test_an_invalid_path_sends_nothing(
    proxied_client: VaultClient, proxy: RecordingProxy, path: str
) -> None:
    before = proxy.sent
    with pytest.raises(VaultInvalidPathError):
        proxied_client.get_secret(path)
    assert proxy.sent == before
    assert b"seal-status" not in proxy.sent


def test_invalid_paths_are_refused_before_the_cache_is_consulted(
    proxy: RecordingProxy, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    with VaultClient(
        f"http://127.0.0.1:{proxy.port}",
        openbao_server.token,
        mount_point=vault_mount.name,
        cache_ttl=60,
    ) as client:
        before = proxy.sent
        for path in ("../../sys/seal-status", "crm/./database", "/crm/database"):
            with pytest.raises(VaultInvalidPathError):
                client.get_secret(path)
        assert proxy.sent == before
