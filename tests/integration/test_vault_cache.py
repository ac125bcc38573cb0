"""VaultClient's read cache against a real OpenBao: hits, expiry, invalidation, what is not kept.

Time is a hand-moved clock, so nothing here sleeps; the server is real, and a changed secret on
the server is how a test tells a cache hit from a fresh read.
"""

from __future__ import annotations

from typing import Any

import pytest

from crm_infra.adapters import VaultClient, VaultError
from crm_infra.adapters.vault import (
    VaultAuthError,
    VaultInvalidPathError,
    VaultSecretNotFoundError,
)
from crm_infra.devservers.openbao import OpenBaoServer
from tests.fixtures.clock import ManualClock
from tests.fixtures.openbao import VaultMount, create_token, read_policy


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def cached(
    openbao_server: OpenBaoServer, vault_mount: VaultMount, clock: ManualClock
) -> VaultClient:
    return VaultClient(
        openbao_server.addr,
        openbao_server.token,
        mount_point=vault_mount.name,
        cache_ttl=30,
        clock=clock,
    )


def test_a_fresh_entry_is_served_without_asking_the_server(
    cached: VaultClient, vault_mount: VaultMount, clock: ManualClock
) -> None:
    vault_mount.put("app/a", {"v": "1"})
    assert cached.get_secret("app/a") == {"v": "1"}
    vault_mount.put("app/a", {"v": "2"})
    clock.now += 29
    assert cached.get_secret("app/a") == {"v": "1"}


def test_an_expired_entry_is_read_again(
    cached: VaultClient, vault_mount: VaultMount, clock: ManualClock
) -> None:
    vault_mount.put("app/a", {"v": "1"})
    assert cached.get_secret("app/a") == {"v": "1"}
    vault_mount.put("app/a", {"v": "2"})
    clock.now += 30
    assert cached.get_secret("app/a") == {"v": "2"}


def test_invalidate_one_path_rereads_only_that_path(
    cached: VaultClient, vault_mount: VaultMount
) -> None:
    vault_mount.put("app/a", {"v": "1"})
    vault_mount.put("app/b", {"v": "1"})
    cached.get_secret("app/a")
    cached.get_secret("app/b")
    vault_mount.put("app/a", {"v": "2"})
    vault_mount.put("app/b", {"v": "2"})
    cached.invalidate("app/a")
    assert cached.get_secret("app/a") == {"v": "2"}
    assert cached.get_secret("app/b") == {"v": "1"}


def test_invalidate_everything_rereads_every_path(
    cached: VaultClient, vault_mount: VaultMount
) -> None:
    vault_mount.put("app/a", {"v": "1"})
    vault_mount.put("app/b", {"v": "1"})
    cached.get_secret("app/a")
    cached.get_secret("app/b")
    vault_mount.put("app/a", {"v": "2"})
    vault_mount.put("app/b", {"v": "2"})
    cached.invalidate()
    assert cached.get_secret("app/a") == {"v": "2"}
    assert cached.get_secret("app/b") == {"v": "2"}


def test_a_not_found_answer_is_not_cached(cached: VaultClient, vault_mount: VaultMount) -> None:
    with pytest.raises(VaultSecretNotFoundError):
        cached.get_secret("app/late")
    vault_mount.put("app/late", {"v": "1"})
    assert cached.get_secret("app/late") == {"v": "1"}


def test_a_cached_secret_stays_cached_after_a_delete_until_it_expires(
    cached: VaultClient, vault_mount: VaultMount, clock: ManualClock
) -> None:
    vault_mount.put("app/a", {"v": "1"})
    cached.get_secret("app/a")
    vault_mount.delete("app/a")
    assert cached.get_secret("app/a") == {"v": "1"}  # the documented staleness window
    clock.now += 31
    with pytest.raises(VaultSecretNotFoundError, match="deleted"):
        cached.get_secret("app/a")


def test_mutating_a_cached_result_does_not_change_the_cache(
    cached: VaultClient, vault_mount: VaultMount
) -> None:
    vault_mount.put("app/a", {"v": "1", "list": [1, 2]})
    first = cached.get_secret("app/a")
    first["v"] = "changed"
    first["list"].append(3)
    assert cached.get_secret("app/a") == {"v": "1", "list": [1, 2]}


def test_invalid_paths_are_refused_with_a_cache_too(cached: VaultClient) -> None:
    with pytest.raises(VaultInvalidPathError):
        cached.get_secret("../../sys/seal-status")
    with pytest.raises(VaultInvalidPathError):
        cached.invalidate("crm/../x")


def test_health_check_is_never_answered_from_the_cache(
    openbao_root: Any, openbao_server: OpenBaoServer, vault_mount: VaultMount, clock: ManualClock
) -> None:
    token = create_token(openbao_root, read_policy(vault_mount.name, "crm/database"))
    with VaultClient(
        openbao_server.addr, token, mount_point=vault_mount.name, cache_ttl=30, clock=clock
    ) as client:
        assert client.get_database_url()
        openbao_root.auth.token.revoke(token)
        assert client.get_database_url()  # still fresh in the cache
        with pytest.raises(VaultAuthError):
            client.health_check()


def test_close_drops_the_cache(cached: VaultClient) -> None:
    assert cached.get_secret("crm/database")
    cached.close()
    with pytest.raises(VaultError, match="closed"):
        cached.get_secret("crm/database")
