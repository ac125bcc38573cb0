"""The in-memory key-value stores: the real adapters over fakeredis.

:class:`InMemoryKeyValueStore` *is* a :class:`~crm_infra.adapters.valkey.ValkeyClient` whose
transport is a ``fakeredis.FakeRedis``: every method, check, script and error translation is the
adapter's own code, so only the transport differs. It raises the adapter's errors (which are the
port's), expires keys in real time, and runs the rate-limit script (fakeredis runs Lua through
``lupa``). :class:`AsyncInMemoryKeyValueStore` is the same over ``fakeredis.FakeAsyncRedis``
and :class:`~crm_infra.adapters.valkey.AsyncValkeyClient`.
"""

from __future__ import annotations

from typing import Any

import fakeredis

from crm_infra.adapters.valkey import AsyncValkeyClient, ValkeyClient

__all__ = ["AsyncInMemoryKeyValueStore", "InMemoryKeyValueStore"]



def _over(
    client_class: Any, key_prefix: str, server: fakeredis.FakeServer | None
) -> dict[str, Any]:
    """The adapter's arguments for a store over a new fakeredis client of ``client_class``."""
    client = client_class(
        server=server if server is not None else fakeredis.FakeServer(), decode_responses=True
    )
    return {
        "client": client,
        "key_prefix": key_prefix,
        "check_connection": False,
        "close_client": True,  # built here, so closed here
        "endpoint": "in-memory fakeredis",
    }


class InMemoryKeyValueStore(ValkeyClient):
    """A key-value store in this process's memory, for unit tests.

    Stores built with the same ``server`` see the same data (like two processes sharing one
    Valkey); each store without one gets its own.
    """

    def __init__(self, *, key_prefix: str = "", server: fakeredis.FakeServer | None = None) -> None:
        """Create an empty store (or one on a shared fake ``server``).

        Args:
            key_prefix: prepended to every key, as in :class:`ValkeyClient`.
            server: a ``fakeredis.FakeServer`` to share with other stores; None for a new one.
        """
        super().__init__(**_over(fakeredis.FakeRedis, key_prefix, server))


class AsyncInMemoryKeyValueStore(AsyncValkeyClient):
    """:class:`InMemoryKeyValueStore` for asyncio: the same arguments and sharing rules.

    Stores on one ``server`` share data with sync stores on it too.
    """

    def __init__(self, *, key_prefix: str = "", server: fakeredis.FakeServer | None = None) -> None:
        """Create an empty store (or one on a shared fake ``server``); see
        :class:`InMemoryKeyValueStore`.
        """
        super().__init__(**_over(fakeredis.FakeAsyncRedis, key_prefix, server))
