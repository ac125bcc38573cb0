"""The clients whose pools the metrics observe.

A client that holds pools registers itself once (``watch_pools(self)``, a weak reference: a
client that is gone drops out); the observable gauges read every registered client's
``pool_stats()`` when the application's metric reader collects.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from crm_infra.pool_stats import PoolStats, pools_of

__all__ = ["watch_pools", "watched_pools"]

logger = logging.getLogger(__name__)

_clients: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()


def watch_pools(client: object) -> None:
    """Observe the pools of ``client`` (it has ``pool_stats()``) while it lives."""
    with _lock:
        _clients.add(client)


def watched_pools() -> list[PoolStats]:
    """Return the state of every pool of every live registered client."""
    with _lock:
        clients = list(_clients)
    found: list[PoolStats] = []
    for client in clients:
        try:
            pools = pools_of(client)
        except Exception as exc:  # noqa: BLE001 - a collection goes on; one client loses its points
            logger.warning(
                "reading the pools of %s failed (%s)", type(client).__name__, type(exc).__name__
            )
            continue
        found.extend((pools or {}).values())
    return found
