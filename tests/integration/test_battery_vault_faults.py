"""VaultClient under faults the basic failure tests leave out: outages with a cache, frozen and
slow links, a revoked token behind a cache.

The promise: a read the cache holds is served until its TTL runs out, whatever the server does;
every other read fails with a typed ``VaultError`` (``VaultUnavailableError`` for an outage,
``VaultAuthError`` for a dead token) within the client's timeout; health checks never answer
from the cache; the same client works again once the fault is gone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import hvac
import pytest

from crm_infra import BackendUnavailableError
from crm_infra.adapters import VaultClient
from crm_infra.adapters.vault import VaultAuthError, VaultUnavailableError
from crm_infra.devservers._freeze import freeze, thaw
from crm_infra.devservers.openbao import OpenBaoServer, openbao_dev_server
from tests.fixtures.clock import ManualClock
from tests.fixtures.openbao import TEST_SECRETS, VaultMount, create_token
from tests.fixtures.tcp_proxy import TcpProxy

TIMEOUT_S = 0.5




@pytest.fixture
def own_server() -> Iterator[OpenBaoServer]:
    """An OpenBao of this test's own (it is frozen, sealed or stopped), with the layout."""
    with openbao_dev_server() as server:
        _write_layout(server)
        yield server


def _write_layout(server: OpenBaoServer) -> None:
    """Write the secret layout of docs/secrets.md into the server's default ``secret`` mount."""
    root = hvac.Client(server.addr, server.token)
    for path, data in TEST_SECRETS.items():
        root.secrets.kv.v2.create_or_update_secret(path=path, secret=data)
    root.adapter.close()


def _unavailable(call: Any) -> VaultUnavailableError:
    started = time.monotonic()
    with pytest.raises(VaultUnavailableError) as info:
        call()
    assert time.monotonic() - started < 2 * TIMEOUT_S + 1.0
    assert isinstance(info.value, BackendUnavailableError)
    return info.value


# --- the server stops after start-up ----------------------------------------------------------


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


# --- slow and blackholed links ----------------------------------------------------------------


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


# --- a revoked token behind the cache ---------------------------------------------------------


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
