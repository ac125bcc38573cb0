"""An in-process TTL cache of secret reads, and :class:`CachedSecretStore`, the same port around
any :class:`SecretStore`.

Secrets change rarely and are read on hot paths (a URL per connection, an API key per email), so
a process may keep what it read for ``ttl`` seconds. Only successful reads are kept: a missing,
deleted or forbidden secret is asked for again every time. Each read returns a fresh copy, so a
caller that mutates a result changes neither the cache nor later reads.

:class:`SecretCache` is the storage alone, with no I/O: the Vault adapter and its asyncio twin
look a path up, do their read (the twin in a worker thread) and hand the result back with
:meth:`SecretCache.keep`. A read that started before an :meth:`~SecretCache.invalidate` is
never kept: it may hold what the invalidation was meant to drop.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from crm_infra.errors import ConfigError
from crm_infra.ports import SecretStore
from crm_infra.secret_paths import copy_secret_data, is_flat, validate_secret_path

__all__ = ["CachedSecretStore", "SecretCache", "is_positive_seconds"]

Clock = Callable[[], float]


def is_positive_seconds(value: object) -> bool:
    """Return True for a positive, finite int or float (bool excluded)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


class SecretCache:
    """Successful secret reads, each fresh for ``ttl`` seconds; lookups never do I/O.

    A read through the cache is three steps::

        since = cache.generation
        found = cache.lookup(path)          # a fresh copy, or None
        if found is None:
            found = cache.keep(path, read(path), since=since)

    Args:
        ttl: seconds a read stays fresh; must be positive and finite.
        clock: monotonic seconds; injectable so tests need not sleep.

    Raises:
        ConfigError: ``ttl`` is not a positive finite number.
    """

    def __init__(self, ttl: float, *, clock: Clock = time.monotonic) -> None:
        if not is_positive_seconds(ttl):
            raise ConfigError(f"cache ttl must be a positive number of seconds, got {ttl!r}")
        self._ttl = float(ttl)
        self._clock = clock
        self._lock = threading.Lock()
        # path -> (expires_at, data, data_is_flat)
        self._entries: dict[str, tuple[float, dict[str, Any], bool]] = {}
        self._generation = 0

    @property
    def ttl(self) -> float:
        """Seconds a read stays fresh."""
        return self._ttl

    @property
    def generation(self) -> int:
        """A number that changes on every invalidation; take it before a read to :meth:`keep`."""
        return self._generation

    def lookup(self, path: str) -> dict[str, Any] | None:
        """Return a copy of the fresh entry for ``path``, or None (also for a path never kept,
        an invalid one included: only paths a store accepted are ever kept)."""
        try:
            entry = self._entries.get(path)
        except TypeError:  # an unhashable non-str path: the store's validation will name it
            return None
        if entry is None or entry[0] <= self._clock():
            return None
        return copy_secret_data(entry[1], flat=entry[2])

    def keep(self, path: str, data: Mapping[str, Any], *, since: int) -> dict[str, Any]:
        """Keep what a read of ``path`` returned, and return the caller's copy of it.

        Args:
            path: the path that was read.
            data: what the store returned.
            since: :attr:`generation` taken before the read started; when the cache was
                invalidated since, the read may be stale and is not kept.
        """
        kept = dict(data)
        flat = is_flat(kept)
        with self._lock:
            if since == self._generation:
                self._entries[path] = (self._clock() + self._ttl, kept, flat)
        return copy_secret_data(kept, flat=flat)

    def invalidate(self, path: str | None = None) -> None:
        """Forget the entry for ``path``, or every entry when ``path`` is None; reads already
        under way when this is called are not kept either."""
        with self._lock:
            self._generation += 1
            if path is None:
                self._entries.clear()
            else:
                self._entries.pop(path, None)


class CachedSecretStore:
    """Cache ``store.get_secret`` results for ``ttl`` seconds; the same port as ``store``.

    Args:
        store: the store to read through.
        ttl: seconds a read stays fresh; must be positive and finite.
        clock: monotonic seconds; injectable so tests need not sleep.

    Raises:
        ConfigError: ``ttl`` is not a positive finite number.
    """

    def __init__(self, store: SecretStore, ttl: float, *, clock: Clock = time.monotonic) -> None:
        self._cache = SecretCache(ttl, clock=clock)
        self._store = store

    @property
    def ttl(self) -> float:
        """Seconds a read stays fresh."""
        return self._cache.ttl

    def get_secret(self, path: str) -> dict[str, Any]:
        """Return the cached secret at ``path`` while fresh, else read it through and keep it.

        Raises:
            SecretStoreError: whatever the wrapped store raises (nothing is cached then).
        """
        since = self._cache.generation
        found = self._cache.lookup(path)
        if found is not None:
            return found
        return self._cache.keep(path, self._store.get_secret(path), since=since)

    def health_check(self) -> bool:
        """Ask the wrapped store (never answered from the cache)."""
        return self._store.health_check()

    def invalidate(self, path: str | None = None) -> None:
        """Forget the cached secret at ``path``, or every cached secret when ``path`` is None.

        Raises:
            InvalidSecretPathError: ``path`` is not a valid secret path.
        """
        if path is not None:
            validate_secret_path(path)
        self._cache.invalidate(path)

    def __repr__(self) -> str:
        return f"CachedSecretStore({self._store!r}, ttl={self.ttl:g})"
