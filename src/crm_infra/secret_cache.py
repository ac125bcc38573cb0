"""An in-process TTL cache of secret reads: a :class:`SecretStore` around a :class:`SecretStore`.

Secrets change rarely and are read on hot paths (a URL per connection, an API key per email), so
a process may keep what it read for ``ttl`` seconds. Only successful reads are kept: a missing,
deleted or forbidden secret is asked for again every time. Each read returns a fresh copy, so a
caller that mutates a result changes neither the cache nor later reads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from crm_infra.errors import ConfigError
from crm_infra.ports import SecretStore
from crm_infra.secret_paths import copy_secret_data, is_flat, validate_secret_path

__all__ = ["CachedSecretStore", "is_positive_seconds"]

Clock = Callable[[], float]


def is_positive_seconds(value: object) -> bool:
    """Return True for a positive, finite int or float (bool excluded)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


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
        if not is_positive_seconds(ttl):
            raise ConfigError(f"cache ttl must be a positive number of seconds, got {ttl!r}")
        self._store = store
        self._ttl = float(ttl)
        self._clock = clock
        self._lock = threading.Lock()
        # path -> (expires_at, data, data_is_flat)
        self._entries: dict[str, tuple[float, dict[str, Any], bool]] = {}

    @property
    def ttl(self) -> float:
        """Seconds a read stays fresh."""
        return self._ttl

    def get_secret(self, path: str) -> dict[str, Any]:
        """Return the cached secret at ``path`` while fresh, else read it through and keep it.

        Raises:
            SecretStoreError: whatever the wrapped store raises (nothing is cached then).
        """
        # Keyed by the exact string: only paths the wrapped store accepted are ever stored,
        # so an invalid path always reaches its validation.
        try:
            entry = self._entries.get(path)
        except TypeError:  # an unhashable non-str path: let the store's validation name it
            entry = None
        if entry is not None and entry[0] > self._clock():
            return copy_secret_data(entry[1], flat=entry[2])
        data = dict(self._store.get_secret(path))
        flat = is_flat(data)
        with self._lock:
            self._entries[path] = (self._clock() + self._ttl, data, flat)
        return copy_secret_data(data, flat=flat)

    def health_check(self) -> bool:
        """Ask the wrapped store (never answered from the cache)."""
        return self._store.health_check()

    def invalidate(self, path: str | None = None) -> None:
        """Forget the cached secret at ``path``, or every cached secret when ``path`` is None.

        Raises:
            InvalidSecretPathError: ``path`` is not a valid secret path.
        """
        with self._lock:
            if path is None:
                self._entries.clear()
            else:
                validate_secret_path(path)
                self._entries.pop(path, None)

    def __repr__(self) -> str:
        return f"CachedSecretStore({self._store!r}, ttl={self._ttl:g})"
