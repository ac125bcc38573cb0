"""Valkey (redis-py): the client and its errors, for one server, Sentinel or a cluster.

- ``client``: :class:`ValkeyClient`, which only calls and waits; ``async_client``:
  :class:`AsyncValkeyClient`, its ``redis.asyncio`` twin, which only awaits;
- ``base``: what both clients share: the constructor and every call, decided before any I/O;
- ``protocol``: what every client decides the same way (checks, the rate-limit script,
  retry rules, error translation), shared with the async twin;
- ``topology``: what a URL names (one server, ``redis+sentinel://``, ``redis+cluster://``),
  and how each topology names the endpoint that failed;
- ``errors``: the error classes.
"""

from crm_infra.adapters.valkey.async_client import AsyncValkeyClient
from crm_infra.adapters.valkey.client import ValkeyClient, redact_url
from crm_infra.adapters.valkey.errors import (
    ValkeyDataError,
    ValkeyError,
    ValkeyInputError,
    ValkeyUnavailableError,
)

__all__ = [
    "AsyncValkeyClient",
    "ValkeyClient",
    "ValkeyDataError",
    "ValkeyError",
    "ValkeyInputError",
    "ValkeyUnavailableError",
    "redact_url",
]
