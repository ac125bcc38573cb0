"""The clients whose pools the metrics observe.

A client that holds pools registers itself once (``watch_pools(self)``, a weak reference: a
client that is gone drops out) and gets a number, which its pool names carry so that two
clients of one server report apart; the observable gauges read every registered client's
``pool_stats()`` when the application's metric reader collects.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from typing import Any

from crm_infra.pool_stats import PoolStats, pools_of

__all__ = ["client_number", "watch_pools", "watched_pools"]

logger = logging.getLogger(__name__)

_clients: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_numbers = itertools.count(1)
_lock = threading.Lock()


def watch_pools(client: object) -> None:
    """Observe the pools of ``client`` (it has ``pool_stats()``) while it lives."""
    with _lock:
        if client not in _clients:
            _clients[client] = next(_numbers)


def client_number(client: object) -> int:
    """The number of a watched client, in the order they were made (0: not watched)."""
    with _lock:
        return _clients.get(client, 0)


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
