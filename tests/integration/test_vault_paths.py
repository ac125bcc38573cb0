"""Invalid paths never reach the server: proven with a recording proxy in front of real OpenBao.

hvac normalises ``../../sys/seal-status`` and really reads it (an unauthenticated endpoint, so
even a token with no rights gets an answer). The proxy forwards bytes both ways unchanged and
keeps a copy of everything the client sent.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from crm_infra.adapters import VaultClient
from crm_infra.adapters.vault import VaultInvalidPathError
from crm_infra.devservers.openbao import OpenBaoServer
from tests.fixtures.openbao import VaultMount
from tests.fixtures.secret_paths import BAD_PATHS


class RecordingProxy:
    """A loopback TCP proxy that records every byte sent towards the server."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)  # so the accept loop notices close() promptly
        self._stopped = threading.Event()
        self.port: int = self._listener.getsockname()[1]
        self._sent = bytearray()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def sent(self) -> bytes:
        with self._lock:
            return bytes(self._sent)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            client.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self._target_port))
            self._sockets += [client, upstream]
            for src, dst, record in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(src, dst, record), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if record:
                    with self._lock:
                        self._sent += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stopped.set()
        self._accepting.join(timeout=5)
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


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
