"""CachedSecretStore timing and invalidation, with a hand-moved clock and the in-memory store."""

from __future__ import annotations

import pytest

from crm_infra import ConfigError, InvalidSecretPathError, SecretNotFoundError, SecretStore
from crm_infra.fakes import InMemorySecretStore
from crm_infra.secret_cache import CachedSecretStore
from tests.fixtures.clock import ManualClock


@pytest.fixture
def backing() -> InMemorySecretStore:
    return InMemorySecretStore({"app/a": {"v": "1"}, "app/b": {"v": "1"}})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(50.0)


@pytest.fixture
def cache(backing: InMemorySecretStore, clock: ManualClock) -> CachedSecretStore:
    return CachedSecretStore(backing, ttl=10, clock=clock)


def test_a_read_within_the_ttl_comes_from_the_cache(
    cache: CachedSecretStore, backing: InMemorySecretStore, clock: ManualClock
) -> None:
    assert cache.get_secret("app/a") == {"v": "1"}
    backing.put_secret("app/a", {"v": "2"})
    clock.now += 9.999
    assert cache.get_secret("app/a") == {"v": "1"}


def test_a_read_at_the_ttl_goes_to_the_store(
    cache: CachedSecretStore, backing: InMemorySecretStore, clock: ManualClock
) -> None:
    cache.get_secret("app/a")
    backing.put_secret("app/a", {"v": "2"})
    clock.now += 10
    assert cache.get_secret("app/a") == {"v": "2"}


def test_the_ttl_restarts_from_the_fresh_read(
    cache: CachedSecretStore, backing: InMemorySecretStore, clock: ManualClock
) -> None:
    cache.get_secret("app/a")
    clock.now += 10
    cache.get_secret("app/a")  # re-read at t=10, fresh until t=20
    backing.put_secret("app/a", {"v": "2"})
    clock.now += 9
    assert cache.get_secret("app/a") == {"v": "1"}
    clock.now += 1
    assert cache.get_secret("app/a") == {"v": "2"}


def test_invalidate_one_path(cache: CachedSecretStore, backing: InMemorySecretStore) -> None:
    cache.get_secret("app/a")
    cache.get_secret("app/b")
    backing.put_secret("app/a", {"v": "2"})
    backing.put_secret("app/b", {"v": "2"})
    cache.invalidate("app/a")
    assert cache.get_secret("app/a") == {"v": "2"}
    assert cache.get_secret("app/b") == {"v": "1"}


def test_invalidate_all(cache: CachedSecretStore, backing: InMemorySecretStore) -> None:
    cache.get_secret("app/a")
    cache.get_secret("app/b")
    backing.put_secret("app/a", {"v": "2"})
    backing.put_secret("app/b", {"v": "2"})
    cache.invalidate()
    assert cache.get_secret("app/a") == {"v": "2"}
    assert cache.get_secret("app/b") == {"v": "2"}


def test_invalidate_checks_the_path(cache: CachedSecretStore) -> None:
    with pytest.raises(InvalidSecretPathError):
        cache.invalidate("../x")


def test_errors_are_not_cached(cache: CachedSecretStore, backing: InMemorySecretStore) -> None:
    with pytest.raises(SecretNotFoundError):
        cache.get_secret("app/new")
    backing.put_secret("app/new", {"v": "1"})
    assert cache.get_secret("app/new") == {"v": "1"}


def test_results_are_copies(cache: CachedSecretStore) -> None:
    first = cache.get_secret("app/a")
    first["v"] = "mutated"
    assert cache.get_secret("app/a") == {"v": "1"}


def test_invalid_paths_reach_validation_every_time(cache: CachedSecretStore) -> None:
    for _ in range(2):
        with pytest.raises(InvalidSecretPathError):
            cache.get_secret("app/../a")


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), True, "10"])
def test_a_bad_ttl_is_a_config_error(backing: InMemorySecretStore, ttl: object) -> None:
    with pytest.raises(ConfigError, match="ttl"):
        CachedSecretStore(backing, ttl)  # type: ignore[arg-type]  # bad values on purpose


def test_the_cache_is_a_secret_store(cache: CachedSecretStore) -> None:
    store: SecretStore = cache
    assert store.health_check() is True
    assert "ttl=10" in repr(cache)


@pytest.mark.parametrize("path", [["app", "a"], {"p": 1}, None, 7])
def test_a_non_string_path_is_an_invalid_path(cache: CachedSecretStore, path: object) -> None:
    with pytest.raises(InvalidSecretPathError, match="must be a str"):
        cache.get_secret(path)  # type: ignore[arg-type]  # the wrong type on purpose
