"""VaultClient against real servers that deny, revoke, stop, freeze, seal, sit behind a slow or
blackholed link, are not Vault at all, or cannot be reached.

The promise: a read the cache holds is served until its TTL runs out, whatever the server does;
every other read fails with a typed ``VaultError`` within the client's timeout:
``VaultAccessDeniedError`` for a policy that says no, ``VaultAuthError`` for a dead token,
``VaultUnavailableError`` for an outage; health checks never answer from the cache; no token
reaches an error; the same client works again once the fault is gone.

The asyncio twin of these tests is ``test_async_vault_failures.py``.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

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
from crm_infra.devservers._freeze import freeze, thaw
from crm_infra.devservers.openbao import OpenBaoServer, openbao_dev_server
from tests.fixtures.clock import ManualClock
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.openbao import TEST_SECRETS, VaultMount, create_token, read_policy
from tests.fixtures.tcp_proxy import TcpProxy

TIMEOUT_S = 0.5


def _write_layout(server: OpenBaoServer) -> None:
    """Write the secret layout of docs/secrets.md into the server's default ``secret`` mount."""
    root = hvac.Client(server.addr, server.token)
    for path, data in TEST_SECRETS.items():
        root.secrets.kv.v2.create_or_update_secret(path=path, secret=data)
    root.adapter.close()


@pytest.fixture
def own_server() -> Iterator[OpenBaoServer]:
    """An OpenBao of this test's own (it is frozen, sealed or stopped), with the layout."""
    with openbao_dev_server() as server:
        _write_layout(server)
        yield server


def _unavailable(call: Any) -> VaultUnavailableError:
    started = time.monotonic()
    with pytest.raises(VaultUnavailableError) as info:
        call()
    assert time.monotonic() - started < 2 * TIMEOUT_S + 1.0
    assert isinstance(info.value, BackendUnavailableError)
    return info.value


# --- permission denied versus a dead token ----------------------------------------------------


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


def test_a_revoked_token_fails_health_and_fresh_reads_while_the_cache_serves(
    openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    clock = ManualClock()
    policy = f'path "{vault_mount.name}/data/crm/*" {{ capabilities = ["read"] }}'
    token = create_token(openbao_root, policy)
    with VaultClient(
        openbao_server.addr, token, mount_point=vault_mount.name, cache_ttl=30, clock=clock
    ) as client:
        url = client.get_database_url()
        openbao_root.auth.token.revoke(token)
        with pytest.raises(VaultAuthError, match="invalid, expired or revoked"):
            client.health_check()
        with pytest.raises(VaultAuthError):
            client.get_secret("crm/email")
        assert client.get_database_url() == url  # still within its TTL
        clock.now += 31
        with pytest.raises(VaultAuthError) as info:
            client.get_database_url()
        assert token not in str(info.value)


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


# --- a closed port, a silent port, a server that is not Vault ---------------------------------


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


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (a hung Vault)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # the kernel completes handshakes; nobody ever reads
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_frozen_server_raises_unavailable_within_the_timeout(silent_server: str) -> None:
    start = time.monotonic()
    with pytest.raises(VaultUnavailableError, match=r"no answer within 0\.5 s"):
        VaultClient(silent_server, "some-token", timeout=0.5)
    assert time.monotonic() - start < 1.5


@pytest.mark.slow
def test_a_frozen_server_raises_within_five_seconds_by_default(silent_server: str) -> None:
    start = time.monotonic()
    with pytest.raises(VaultUnavailableError, match=r"no answer within 5 s"):
        VaultClient(silent_server, "some-token")
    assert time.monotonic() - start < 5.5


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


# --- the server stops after start-up ----------------------------------------------------------


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


def test_after_the_server_stops_cached_reads_are_served_until_their_ttl() -> None:
    clock = ManualClock()
    with openbao_dev_server() as doomed:
        _write_layout(doomed)
        client = VaultClient(doomed.addr, doomed.token, cache_ttl=60, clock=clock, timeout=1)
        database_url = client.get_database_url()
        valkey = client.get_secret("crm/valkey")
    # The server is gone now.
    with client:
        clock.now += 59
        assert client.get_database_url() == database_url
        assert client.get_secret("crm/valkey") == valkey
        error = _unavailable(lambda: client.get_secret("crm/email"))  # never read: not cached
        assert "'crm/email'" in str(error)
        assert "cannot connect" in str(error)
        _unavailable(client.health_check)  # never answered from the cache
        clock.now += 2  # the TTL has run out: no stale value is served
        _unavailable(client.get_database_url)
        _unavailable(lambda: client.get_secret("crm/valkey"))


# --- a frozen server (SIGSTOP) ----------------------------------------------------------------


def test_a_frozen_server_fails_reads_within_the_timeout_and_recovers_on_thaw(
    own_server: OpenBaoServer,
) -> None:
    with VaultClient(own_server.addr, own_server.token, timeout=TIMEOUT_S) as client:
        url = client.get_valkey_url()  # the keep-alive connection is open now
        freeze(own_server.pid)
        try:
            error = _unavailable(client.get_valkey_url)
            assert f"no answer within {TIMEOUT_S:g} s" in str(error)
            _unavailable(client.health_check)
        finally:
            thaw(own_server.pid)
        assert client.get_valkey_url() == url
        assert client.health_check() is True


# --- a sealed server --------------------------------------------------------------------------


def test_a_sealed_server_raises_unavailable_saying_sealed(own_server: OpenBaoServer) -> None:
    with VaultClient(own_server.addr, own_server.token) as client:
        assert client.get_valkey_url()
        hvac.Client(own_server.addr, own_server.token).sys.seal()
        with pytest.raises(VaultUnavailableError, match="sealed") as info:
            client.get_secret("crm/valkey")
        assert isinstance(info.value, SecretStoreUnavailableError)
        with pytest.raises(VaultUnavailableError, match="sealed"):
            client.health_check()
    with pytest.raises(VaultUnavailableError, match="sealed"):
        VaultClient(own_server.addr, own_server.token)


def test_sealing_fails_fresh_reads_but_not_cached_ones(own_server: OpenBaoServer) -> None:
    clock = ManualClock()
    with VaultClient(own_server.addr, own_server.token, cache_ttl=30, clock=clock) as client:
        url = client.get_valkey_url()
        hvac.Client(own_server.addr, own_server.token).sys.seal()
        assert client.get_valkey_url() == url
        assert "sealed" in str(_unavailable(lambda: client.get_secret("crm/email")))
        assert "sealed" in str(_unavailable(client.health_check))
        clock.now += 31
        _unavailable(client.get_valkey_url)


# --- slow, blackholed and cut links -----------------------------------------------------------


@pytest.fixture
def proxy(openbao_server: OpenBaoServer) -> Iterator[TcpProxy]:
    port = urlsplit(openbao_server.addr).port
    assert port is not None
    with TcpProxy(port) as link:
        yield link


@pytest.fixture
def proxied(
    proxy: TcpProxy, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> Iterator[VaultClient]:
    with VaultClient(
        f"http://127.0.0.1:{proxy.port}",
        openbao_server.token,
        mount_point=vault_mount.name,
        timeout=TIMEOUT_S,
    ) as client:
        yield client


def test_a_slow_link_within_the_timeout_works(proxy: TcpProxy, proxied: VaultClient) -> None:
    proxy.delay = 0.1
    assert proxied.get_secret("crm/valkey") == TEST_SECRETS["crm/valkey"]
    assert proxied.health_check() is True


def test_a_link_slower_than_the_timeout_raises_unavailable(
    proxy: TcpProxy, proxied: VaultClient
) -> None:
    proxy.delay = 3 * TIMEOUT_S
    error = _unavailable(lambda: proxied.get_secret("crm/valkey"))
    assert "'crm/valkey'" in str(error)
    proxy.heal()
    assert proxied.get_secret("crm/valkey") == TEST_SECRETS["crm/valkey"]


def test_a_blackholed_link_raises_unavailable_and_the_client_recovers(
    proxy: TcpProxy, proxied: VaultClient
) -> None:
    assert proxied.get_database_url()
    proxy.blackhole()
    _unavailable(proxied.get_database_url)
    _unavailable(proxied.health_check)
    proxy.heal()
    assert proxied.get_database_url() == TEST_SECRETS["crm/database"]["url"]


def test_connections_cut_while_idle_are_replaced_transparently(
    proxy: TcpProxy, proxied: VaultClient
) -> None:
    assert proxied.get_database_url()
    proxy.cut()  # returns once the client has seen the resets
    assert proxied.get_database_url() == TEST_SECRETS["crm/database"]["url"]
