"""What a connection pool reports about itself: :class:`PoolStats`, for health reports and
metrics alike.

The real adapters offer ``pool_stats()`` (the pools they hold, by name); the fakes hold no
pool and offer nothing. :func:`pools_of` asks any port for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["PoolStats", "pools_of"]


@attrs.frozen
class PoolStats:
    """The state of one pool, at the moment it was read.

    Attributes:
        name: the pool, its server and the number of its client, unique in the process
            (``crm-app 127.0.0.1:5432/crm #1``).
        system: ``postgresql`` or ``redis`` (Valkey speaks the Redis protocol).
        size: connections open (idle and in use).
        idle: connections open and free.
        in_use: connections lent out.
        max: the most connections the pool opens (None: no limit).
        waiting: calls waiting for a connection now (None: the pool does not say).
        wait_seconds: the time calls have waited for a connection since the pool opened, in
            all (None: the pool does not say).
        requests: connections asked for since the pool opened (None: the pool does not say).
    """

    name: str
    system: str
    size: int
    idle: int
    in_use: int
    max: int | None
    waiting: int | None = None
    wait_seconds: float | None = None
    requests: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the counters for JSON output (without the name, which keys them)."""
        return {
            "system": self.system,
            "size": self.size,
            "idle": self.idle,
            "in_use": self.in_use,
            "max": self.max,
            "waiting": self.waiting,
            "wait_seconds": self.wait_seconds,
            "requests": self.requests,
        }


def pools_of(port: object) -> Mapping[str, PoolStats] | None:
    """Return the pools ``port`` holds (None when it holds none, as the fakes)."""
    read = getattr(port, "pool_stats", None)
    if not callable(read):
        return None
    stats: Mapping[str, PoolStats] = read()
    return stats
