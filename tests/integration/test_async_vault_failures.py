"""AsyncVaultClient failures and AppRole against real servers: the sync client's errors, awaited.

Denied, revoked and wrong tokens, an unreachable, a frozen and a sealed server, AppRole logins
and re-logins: each raises (or recovers) as VaultClient does, from a worker thread, while the
event loop keeps running; no token, role id or secret id reaches an error.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import hvac
import pytest

from crm_infra import (
    BackendUnavailableError,
    SecretAccessDeniedError,
    SecretNotFoundError,
    SecretStoreAuthError,
)
from crm_infra.adapters import AsyncVaultClient
from crm_infra.adapters.vault import VaultAccessDeniedError, VaultAuthError, VaultUnavailableError
from crm_infra.devservers.openbao import OpenBaoServer, openbao_dev_server
from tests.battery.leaks import LeakScan
from tests.fixtures.common import free_port
from tests.fixtures.openbao import TEST_SECRETS, VaultMount, create_token, read_policy
from tests.fixtures.tcp_proxy import TcpProxy
from tests.integration.test_vault_approle import AppRole, _client, _make_approle


@pytest.fixture
def approle(openbao_root: Any, vault_mount: VaultMount) -> Iterator[AppRole]:
    """An AppRole whose tokens live one hour and may read ``crm/*`` of the test's mount."""
    yield from _make_approle(openbao_root, vault_mount, token_ttl="1h")


def _token_client(
    root: Any, server: OpenBaoServer, mount: VaultMount, readable: str
) -> tuple[str, AsyncVaultClient]:
    """Return a new token that may read only ``readable`` of the mount, and a client using it."""
    token = create_token(root, read_policy(mount.name, readable))
    return token, AsyncVaultClient(server.addr, token, mount_point=mount.name)


def _approle_client(
    server: OpenBaoServer, mount: VaultMount, role: AppRole, *, secret_id: str | None = None
) -> AsyncVaultClient:
    return AsyncVaultClient(
        server.addr,
        role_id=role.role_id,
        secret_id=secret_id or role.secret_id,
        approle_mount_point=role.mount,
        mount_point=mount.name,
    )


# --- tokens -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_denied_path_is_access_denied_and_a_revoked_token_an_auth_error(
    openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    token, client = _token_client(openbao_root, openbao_server, vault_mount, "crm/valkey")
    scan = LeakScan(token)
    async with client as vault:
        assert await vault.get_valkey_url() == TEST_SECRETS["crm/valkey"]["url"]
        with pytest.raises(VaultAccessDeniedError, match="permission denied") as denied:
            await vault.get_database_url()
        with pytest.raises(VaultAccessDeniedError):
            await vault.get_secret(f"app/{uuid.uuid4().hex}")  # existence is not revealed
        openbao_root.auth.token.revoke(token)
        for call in (vault.get_valkey_url(), vault.health_check()):
            with pytest.raises(VaultAuthError, match="invalid, expired or revoked") as info:
                await call
            assert not isinstance(info.value, SecretAccessDeniedError)
            scan.add_error("revoked", info.value)
    assert isinstance(denied.value, SecretAccessDeniedError)
    assert not isinstance(denied.value, SecretNotFoundError | SecretStoreAuthError)
    assert "'crm/database'" in str(denied.value)
    scan.add_error("denied", denied.value)
    scan.check()


@pytest.mark.asyncio
async def test_a_wrong_token_fails_on_opening_without_showing_it(
    openbao_server: OpenBaoServer,
) -> None:
    wrong = f"hvs.{uuid.uuid4().hex}"
    scan = LeakScan(wrong)
    vault = AsyncVaultClient(openbao_server.addr, wrong)
    with pytest.raises(VaultAuthError, match="checking the token") as info:
        async with vault:
            pytest.fail("opened with a wrong token")
    assert isinstance(info.value, SecretStoreAuthError)
    assert "closed" in repr(vault)  # a failed async with leaves nothing open
    scan.add_error("wrong token", info.value)
    scan.add("repr", repr(vault))
    scan.check()


# --- unreachable, frozen and sealed servers ---------------------------------------------------


@pytest.mark.asyncio
async def test_a_closed_port_is_unavailable_at_once() -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    refused = r"cannot connect \(Connection refused\)"
    with pytest.raises(VaultUnavailableError, match=refused) as info:
        async with AsyncVaultClient(addr, "some-token", timeout=2):
            pytest.fail("opened a client of nothing")
    assert isinstance(info.value, BackendUnavailableError)
    assert str(info.value).count(addr) == 1


@pytest.mark.asyncio
async def test_a_frozen_server_is_unavailable_within_the_timeout_and_the_loop_runs(
    openbao_server: OpenBaoServer,
) -> None:
    ticks = 0
    frozen = TcpProxy(openbao_server.port)
    frozen.blackhole()  # connections are accepted; nothing ever comes back
    vault = AsyncVaultClient(f"http://127.0.0.1:{frozen.port}", openbao_server.token, timeout=0.5)
    opening = asyncio.ensure_future(vault.open())
    while not opening.done():
        ticks += 1
        await asyncio.sleep(0.005)
    with pytest.raises(VaultUnavailableError, match=r"no answer within 0\.5 s"):
        await opening
    assert ticks >= 10  # the loop ran other tasks while the request waited
    await vault.close()
    frozen.close()


@pytest.mark.asyncio
async def test_a_sealed_server_is_unavailable_saying_sealed() -> None:
    with openbao_dev_server() as server:  # its own: sealing the session's would break others
        root = hvac.Client(server.addr, server.token)
        root.secrets.kv.v2.create_or_update_secret(path="crm/valkey", secret={"url": "redis://h"})
        async with AsyncVaultClient(server.addr, server.token, cache_ttl=60) as vault:
            assert await vault.get_valkey_url() == "redis://h"
            root.sys.seal()
            assert await vault.get_valkey_url() == "redis://h"  # from the cache, no request
            vault.invalidate()
            with pytest.raises(VaultUnavailableError, match="sealed"):
                await vault.get_secret("crm/valkey")
            with pytest.raises(VaultUnavailableError, match="sealed"):
                await vault.health_check()


# --- AppRole ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_approle_login_reads_secrets(
    openbao_server: OpenBaoServer, vault_mount: VaultMount, approle: AppRole
) -> None:
    async with _approle_client(openbao_server, vault_mount, approle) as vault:
        assert vault.auth_method == "approle"
        assert await vault.get_database_url() == TEST_SECRETS["crm/database"]["url"]
        assert await vault.health_check() is True
        text = repr(vault)
    assert approle.role_id not in text
    assert approle.secret_id not in text


@pytest.mark.asyncio
async def test_a_revoked_approle_token_is_replaced_by_a_fresh_login(
    openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount, approle: AppRole
) -> None:
    async with _approle_client(openbao_server, vault_mount, approle) as vault:
        assert await vault.get_database_url()
        openbao_root.sys.revoke_prefix(prefix=f"auth/{approle.mount}/login")
        results = await asyncio.gather(*(vault.get_valkey_url() for _ in range(20)))
        assert results == [TEST_SECRETS["crm/valkey"]["url"]] * 20


@pytest.mark.asyncio
async def test_a_wrong_secret_id_fails_on_opening_without_showing_it(
    openbao_server: OpenBaoServer, vault_mount: VaultMount, approle: AppRole
) -> None:
    wrong = str(uuid.uuid4())
    scan = LeakScan(wrong, approle.role_id)
    vault = _approle_client(openbao_server, vault_mount, approle, secret_id=wrong)
    with pytest.raises(VaultAuthError, match="AppRole") as info:
        await vault.get_valkey_url()  # the first call logs in
    scan.add_error("wrong secret id", info.value)
    await vault.close()
    scan.check()



def test_threads_sharing_the_sync_client_survive_a_revoked_approle_token_too(
    openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount, approle: AppRole
) -> None:
    # The asyncio twin's workers are threads sharing one VaultClient, which is how they found
    # this: a 403 answered to the old token after another thread's fresh login was taken for
    # a denial. The fix is VaultClient's, so threads of the sync client are covered too.
    with _client(openbao_server, vault_mount, approle) as vault:
        for _ in range(3):
            openbao_root.sys.revoke_prefix(prefix=f"auth/{approle.mount}/login")
            with ThreadPoolExecutor(20) as pool:
                results = list(pool.map(lambda _: vault.get_valkey_url(), range(20)))
            assert results == [TEST_SECRETS["crm/valkey"]["url"]] * 20
