"""AsyncInMemoryKeyValueStore: the asyncio fake is AsyncValkeyClient over fakeredis, so it
behaves as the adapter does (the contract suite proves the port; this checks the fake's own
promises: sharing a server, its prefix, closing, and its errors).
"""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from crm_infra.errors import KeyValueStoreDataError, KeyValueStoreError, KeyValueStoreInputError
from crm_infra.fakes import AsyncInMemoryKeyValueStore, InMemoryKeyValueStore
from crm_infra.ports import AsyncKeyValueStore

pytestmark = pytest.mark.asyncio


async def test_it_is_an_async_key_value_store_and_round_trips() -> None:
    async with AsyncInMemoryKeyValueStore(key_prefix="app:") as kv:
        assert isinstance(kv, AsyncKeyValueStore)
        await kv.set("k", "v")
        await kv.set_json("j", [1, {"a": None}])
        assert (await kv.get("k"), await kv.get_json("j")) == ("v", [1, {"a": None}])
        assert await asyncio.gather(*(kv.hit("r", 60) for _ in range(5))) == [1, 2, 3, 4, 5]


async def test_stores_on_one_server_share_data_with_sync_stores_too() -> None:
    server = fakeredis.FakeServer()
    sync = InMemoryKeyValueStore(key_prefix="app:", server=server)
    async with AsyncInMemoryKeyValueStore(key_prefix="app:", server=server) as kv:
        sync.set("shared", "from sync")
        assert await kv.get("shared") == "from sync"
        assert await kv.incr("n") == 1
        assert sync.incr("n") == 2
    sync.close()


async def test_separate_stores_do_not_share() -> None:
    async with AsyncInMemoryKeyValueStore() as one, AsyncInMemoryKeyValueStore() as two:
        await one.set("k", "v")
        assert await two.get("k") is None


async def test_bad_input_and_bad_data_raise_the_port_errors_and_change_nothing() -> None:
    async with AsyncInMemoryKeyValueStore() as kv:
        with pytest.raises(KeyValueStoreInputError):
            await kv.set("k", 1)  # type: ignore[arg-type]  # the mistake under test
        with pytest.raises(KeyValueStoreInputError):
            await kv.hit("k", 0)
        assert not await kv.exists("k")
        await kv.set("text", "not a number")
        with pytest.raises(KeyValueStoreDataError, match="'text'"):
            await kv.incr("text")
        assert await kv.get("text") == "not a number"


async def test_a_closed_store_raises_and_closing_twice_is_harmless() -> None:
    kv = AsyncInMemoryKeyValueStore()
    await kv.close()
    await kv.close()
    with pytest.raises(KeyValueStoreError, match="closed"):
        await kv.get("k")
