"""VaultClient failures against real servers: denied, dead tokens, unreachable, frozen, sealed."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import hvac
import pytest

from crm_infra import (
    BackendUnavailableError,
    SecretAccessDeniedError,
    SecretNotFoundError,
    SecretStoreAuthError,
    SecretStoreUnavailableError,
)
from crm_infra.adapters import VaultClient
from crm_infra.adapters.vault import (
    VaultAccessDeniedError,
    VaultAuthError,
    VaultError,
    VaultUnavailableError,
)
from crm_infra.devservers.openbao import OpenBaoServer, openbao_dev_server
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.openbao import VaultMount, create_token, read_policy

# --- permission denied versus a dead token ------------------------------------------------------


def test_a_token_without_permission_raises_access_denied(
    openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    token = create_token(openbao_root, read_policy(vault_mount.name, "crm/valkey"))
    with VaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as client:
        assert client.get_valkey_url()  # the one path the policy allows
        with pytest.raises(VaultAccessDeniedError, match="permission denied") as info:
            client.get_secret("crm/database")
    error = info.value
    assert isinstance(error, SecretAccessDeniedError)
    assert not isinstance(error, SecretNotFoundError | SecretStoreAuthError)
    assert "'crm/database'" in str(error)
    assert token not in str(error)


def test_access_denied_is_raised_even_for_a_path_that_does_not_exist(
    openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    # Vault checks the policy before it looks: a denied caller learns nothing about existence.
    token = create_token(openbao_root, read_policy(vault_mount.name, "crm/valkey"))
    with (
        VaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as client,
        pytest.raises(VaultAccessDeniedError),
    ):
        client.get_secret(f"app/{uuid.uuid4().hex}")


def test_a_revoked_token_raises_auth_error_not_access_denied(
    openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    token = create_token(openbao_root, read_policy(vault_mount.name, "crm/database"))
    with VaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as client:
        assert client.get_database_url()
        openbao_root.auth.token.revoke(token)
        with pytest.raises(VaultAuthError, match="invalid, expired or revoked") as info:
            client.get_database_url()
        assert isinstance(info.value, SecretStoreAuthError)
        assert str(info.value).count(openbao_server.addr) == 1
        assert not isinstance(info.value, SecretAccessDeniedError)
        with pytest.raises(VaultAuthError):
            client.health_check()


def _refused(root: Any, token: str) -> bool:
    """Return True once the server no longer knows ``token`` (expired or revoked)."""
    try:
        root.auth.token.lookup(token)
    except hvac.exceptions.VaultError:
        return True
    return False


def test_an_expired_token_raises_auth_error_not_access_denied(
    openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    token = create_token(openbao_root, read_policy(vault_mount.name, "crm/database"), ttl="2s")
    with VaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as client:
        assert client.get_database_url()
        # The server, not a sleep, says when the token has run out.
        wait_until(lambda: _refused(openbao_root, token), timeout=30, what="the token's expiry")
        with pytest.raises(VaultAuthError, match="invalid, expired or revoked"):
            client.get_secret("crm/database")


# --- unreachable and frozen servers ---------------------------------------------------------------


def test_a_closed_port_raises_unavailable_at_once() -> None:
    addr = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    refused = r"cannot connect \(Connection refused\)"
    with pytest.raises(VaultUnavailableError, match=refused) as info:
        VaultClient(addr, "some-token", timeout=2)
    assert time.monotonic() - start < 2
    assert isinstance(info.value, SecretStoreUnavailableError)
    assert isinstance(info.value, BackendUnavailableError)
    assert str(info.value).count(addr) == 1
    assert "\n" not in str(info.value)


# --- a server that is not Vault -----------------------------------------------------------------


class _NotVault(http.server.BaseHTTPRequestHandler):
    """A web server: an HTML page for every request, with the status the test chose."""

    def _answer(self) -> None:
        status = self.server.status  # type: ignore[attr-defined]  # set by the fixture
        body = b"<html><body><h1>It works!</h1></body></html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""


@pytest.fixture(params=[404, 200, 403], ids=["404", "200", "403"])
def web_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """The address of a plain web server (not Vault) answering every request with HTML."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotVault)
    server.status = request.param  # type: ignore[attr-defined]  # read by the handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(
    "credentials", [{"token": "some-token"}, {"role_id": "r", "secret_id": "s"}], ids=str
)
def test_a_server_that_is_not_vault_is_named_as_such(
    web_server: str, credentials: dict[str, str]
) -> None:
    with pytest.raises(VaultError, match="is not a Vault or OpenBao server") as info:
        VaultClient(web_server, timeout=2, **credentials)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.count(web_server) == 1
    assert "VAULT_ADDR" in message
    assert not isinstance(info.value, SecretNotFoundError | SecretStoreAuthError)


@pytest.fixture
def frozen_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (a hung Vault)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # the kernel completes handshakes; nobody ever reads
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_frozen_server_raises_unavailable_within_the_timeout(frozen_server: str) -> None:
    start = time.monotonic()
    with pytest.raises(VaultUnavailableError, match=r"no answer within 0\.5 s"):
        VaultClient(frozen_server, "some-token", timeout=0.5)
    assert time.monotonic() - start < 1.5


@pytest.mark.slow
def test_a_frozen_server_raises_within_five_seconds_by_default(frozen_server: str) -> None:
    start = time.monotonic()
    with pytest.raises(VaultUnavailableError, match=r"no answer within 5 s"):
        VaultClient(frozen_server, "some-token")
    assert time.monotonic() - start < 5.5


def test_a_server_that_goes_away_raises_unavailable_on_read() -> None:
    with openbao_dev_server() as server:
        hvac.Client(server.addr, server.token).secrets.kv.v2.create_or_update_secret(
            path="app/x", secret={"k": "v"}
        )
        client = VaultClient(server.addr, server.token)
        assert client.get_secret("app/x") == {"k": "v"}
    with pytest.raises(VaultUnavailableError):
        client.get_secret("app/x")
    client.close()


# --- a sealed server ----------------------------------------------------------------------------


@pytest.fixture
def sealable_server() -> Iterator[OpenBaoServer]:
    """A dev server of this test's own, since sealing it would break every other test."""
    with openbao_dev_server() as server:
        root = hvac.Client(server.addr, server.token)
        root.secrets.kv.v2.create_or_update_secret(
            path="crm/valkey", secret={"url": "redis://127.0.0.1:6379/0"}
        )
        yield server


def test_a_sealed_server_raises_unavailable_saying_sealed(sealable_server: OpenBaoServer) -> None:
    with VaultClient(sealable_server.addr, sealable_server.token) as client:
        assert client.get_valkey_url()
        hvac.Client(sealable_server.addr, sealable_server.token).sys.seal()
        with pytest.raises(VaultUnavailableError, match="sealed") as info:
            client.get_secret("crm/valkey")
        assert isinstance(info.value, SecretStoreUnavailableError)
        with pytest.raises(VaultUnavailableError, match="sealed"):
            client.health_check()
    with pytest.raises(VaultUnavailableError, match="sealed"):
        VaultClient(sealable_server.addr, sealable_server.token)
