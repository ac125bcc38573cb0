"""AsyncVaultClient against a real OpenBao: every method, threads, concurrency, cancellation.

What both twins share (the secret-store contract) is proven by the contract suite; here: that
the asyncio client answers as the sync one does, that a cache hit and an invalid path never
touch a worker thread, that the event loop keeps running while hvac waits, and that a
cancelled call leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import pytest_asyncio

from crm_infra import AsyncSecretStore, SecretStoreUnavailableError
from crm_infra.adapters import AsyncVaultClient, VaultClient, VaultError
from crm_infra.adapters.vault import (
    VaultConfigError,
    VaultInvalidPathError,
    VaultInvalidSecretError,
    VaultSecretNotFoundError,
    VaultUnavailableError,
)
from crm_infra.adapters.vault.async_client import WORKERS
from crm_infra.devservers.openbao import OpenBaoServer
from tests.fixtures.common import free_port
from tests.fixtures.openbao import TEST_SECRETS, VaultMount
from tests.fixtures.tcp_proxy import TcpProxy

pytestmark = pytest.mark.asyncio


class Workers:
    """What ran in worker threads while the test watched: every ThreadPoolExecutor's jobs."""

    def __init__(self) -> None:
        self.submitted = 0
        self.started = threading.Event()
        self.finished = 0
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.running += 1
                self.most_at_once = max(self.most_at_once, self.running)
            self.started.set()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.running -= 1
                    self.finished += 1

        return run


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> Workers:
    """Count (and watch) every job handed to a thread pool from now on."""
    seen = Workers()
    real_submit = ThreadPoolExecutor.submit

    def submit(
        executor: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        seen.submitted += 1
        return real_submit(executor, seen.wrap(fn), *args, **kwargs)

    monkeypatch.setattr(ThreadPoolExecutor, "submit", submit)
    return seen


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait, without blocking the loop, until ``condition()`` holds; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.005)


@pytest_asyncio.fixture
async def client(
    openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> AsyncIterator[AsyncVaultClient]:
    async with AsyncVaultClient(
        openbao_server.addr, openbao_server.token, mount_point=vault_mount.name
    ) as vault:
        yield vault


@pytest_asyncio.fixture
async def cached(
    openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> AsyncIterator[AsyncVaultClient]:
    async with AsyncVaultClient(
        openbao_server.addr, openbao_server.token, mount_point=vault_mount.name, cache_ttl=600
    ) as vault:
        yield vault


@pytest.fixture
def proxy(openbao_server: OpenBaoServer) -> Iterator[TcpProxy]:
    """A link to the session's OpenBao that a test can slow down or blackhole."""
    with TcpProxy(openbao_server.port) as link:
        yield link


Linked = Callable[..., AsyncVaultClient]


@pytest.fixture
def linked(openbao_server: OpenBaoServer, vault_mount: VaultMount, proxy: TcpProxy) -> Linked:
    """Make clients of the test's mount that reach OpenBao through ``proxy``."""

    def make(**options: Any) -> AsyncVaultClient:
        addr = f"http://127.0.0.1:{proxy.port}"
        return AsyncVaultClient(addr, openbao_server.token, mount_point=vault_mount.name, **options)

    return make


def unique_path() -> str:
    return f"app/{uuid.uuid4().hex}"


# --- every method, as the sync client answers -------------------------------------------------


async def test_every_method_answers_as_the_sync_client_does(
    client: AsyncVaultClient, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    addr, token = openbao_server.addr, openbao_server.token
    with VaultClient(addr, token, mount_point=vault_mount.name) as sync:
        assert await client.get_secret("crm/email") == sync.get_secret("crm/email")
        assert await client.get_database_url() == sync.get_database_url()
        assert await client.get_admin_database_url() == sync.get_admin_database_url()
        assert await client.get_valkey_url() == sync.get_valkey_url()
        assert await client.get_email_credentials() == sync.get_email_credentials()
        assert await client.health_check() is sync.health_check() is True
        assert (client.addr, client.mount_point, client.auth_method) == (
            sync.addr,
            sync.mount_point,
            sync.auth_method,
        )
        assert repr(client) == "Async" + repr(sync)
    assert await client.get_database_url() == TEST_SECRETS["crm/database"]["url"]


async def test_it_takes_the_sync_clients_arguments() -> None:
    assert inspect.signature(AsyncVaultClient) == inspect.signature(VaultClient)


async def test_it_satisfies_the_async_port(client: AsyncVaultClient) -> None:
    store: AsyncSecretStore = client
    assert isinstance(store, AsyncSecretStore)


async def test_a_missing_secret_and_a_deleted_one_are_not_found(
    client: AsyncVaultClient, vault_mount: VaultMount
) -> None:
    path = unique_path()
    with pytest.raises(VaultSecretNotFoundError, match="not found") as info:
        await client.get_secret(path)
    assert repr(path) in str(info.value)
    vault_mount.put(path, {"k": "v"})
    vault_mount.delete(path)
    with pytest.raises(VaultSecretNotFoundError, match=r"latest version \(1\) was deleted"):
        await client.get_secret(path)


async def test_a_bad_field_raises_the_clients_own_class(
    client: AsyncVaultClient, vault_mount: VaultMount
) -> None:
    vault_mount.put("crm/valkey", {"url": "valkey://h:6379"})
    with pytest.raises(VaultInvalidSecretError, match="'url' of secret 'crm/valkey'"):
        await client.get_valkey_url()


async def test_a_secret_is_read_through_the_cache_until_invalidated(
    cached: AsyncVaultClient, vault_mount: VaultMount
) -> None:
    path = unique_path()
    vault_mount.put(path, {"v": "1"})
    first = await cached.get_secret(path)
    first["v"] = "mutated"
    vault_mount.put(path, {"v": "2"})
    assert await cached.get_secret(path) == {"v": "1"}
    cached.invalidate(path)
    assert await cached.get_secret(path) == {"v": "2"}
    with pytest.raises(VaultInvalidPathError):
        cached.invalidate("../x")


# --- construction, opening and closing ----------------------------------------------------------


async def test_the_constructor_checks_settings_and_does_no_io(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    with pytest.raises(VaultConfigError, match="VAULT_ADDR not set"):
        AsyncVaultClient(token="t")
    with pytest.raises(VaultConfigError, match="timeout"):
        AsyncVaultClient("http://127.0.0.1:1", "t", timeout=0)
    with pytest.raises(VaultConfigError, match="ttl"):
        AsyncVaultClient("http://127.0.0.1:1", "t", cache_ttl=-1)
    nobody = AsyncVaultClient(f"http://127.0.0.1:{free_port()}", "t", timeout=1)
    with pytest.raises(VaultUnavailableError, match="cannot connect"):
        await nobody.open()  # the first I/O
    await nobody.close()


async def test_the_first_call_logs_in_and_open_is_idempotent(
    openbao_server: OpenBaoServer, vault_mount: VaultMount, workers: Workers
) -> None:
    addr, token = openbao_server.addr, openbao_server.token
    vault = AsyncVaultClient(addr, token, mount_point=vault_mount.name)
    try:
        assert workers.submitted == 0
        assert await vault.get_valkey_url() == TEST_SECRETS["crm/valkey"]["url"]
        assert workers.submitted == 2  # the token check, then the read
        await vault.open()
        await vault.open()
        assert workers.submitted == 2
    finally:
        await vault.close()


async def test_async_with_closes_it_and_later_calls_say_so(
    openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    async with AsyncVaultClient(
        openbao_server.addr, openbao_server.token, mount_point=vault_mount.name, cache_ttl=60
    ) as vault:
        assert await vault.get_valkey_url()
    assert "closed" in repr(vault)
    for call in (vault.get_secret("crm/valkey"), vault.health_check(), vault.open()):
        with pytest.raises(VaultError, match=r"this AsyncVaultClient for .* is closed"):
            await call
    await vault.close()  # again: nothing happens


# --- threads: only for I/O ------------------------------------------------------------------------


async def test_cache_hits_and_invalid_paths_take_no_thread(
    cached: AsyncVaultClient, vault_mount: VaultMount, workers: Workers
) -> None:
    path = unique_path()
    vault_mount.put(path, {"v": "1"})
    assert await cached.get_secret(path) == {"v": "1"}
    assert workers.submitted == 1  # the miss
    for _ in range(100):
        assert await cached.get_secret(path) == {"v": "1"}
    results = await asyncio.gather(*(cached.get_secret(path) for _ in range(500)))
    assert all(result == {"v": "1"} for result in results)
    assert len({id(result) for result in results}) == 500  # a copy each
    for bad in ("../x", "secret/data/crm/x", "a//b"):
        with pytest.raises(VaultInvalidPathError):
            await cached.get_secret(bad)
    assert workers.submitted == 1


async def test_the_loop_runs_other_tasks_while_requests_wait(
    linked: Linked, proxy: TcpProxy
) -> None:
    async with linked() as vault:
        proxy.delay = 0.1  # each chunk, both ways: a read takes a few tenths of a second
        ticks = 0
        reads = asyncio.gather(*(vault.get_valkey_url() for _ in range(5)))
        while not reads.done():
            ticks += 1
            await asyncio.sleep(0.005)
        assert await reads == [TEST_SECRETS["crm/valkey"]["url"]] * 5
    assert ticks >= 10  # had hvac blocked the loop, this task could not have run meanwhile


async def test_many_concurrent_reads_each_get_their_own_secret(
    client: AsyncVaultClient, vault_mount: VaultMount, workers: Workers
) -> None:
    paths = [f"app/many/{i}" for i in range(200)]
    for i, path in enumerate(paths):
        vault_mount.put(path, {"i": i})
    results = await asyncio.gather(*(client.get_secret(path) for path in paths))
    assert results == [{"i": i} for i in range(200)]
    assert workers.submitted == 200
    assert 1 < workers.most_at_once <= WORKERS


# --- cancellation ---------------------------------------------------------------------------------


async def test_a_read_cancelled_mid_request_is_dropped_and_not_cached(
    vault_mount: VaultMount, linked: Linked, proxy: TcpProxy, workers: Workers
) -> None:
    path = unique_path()
    vault_mount.put(path, {"v": "old"})
    async with linked(cache_ttl=600) as vault:
        proxy.delay = 0.2  # the read is under way for a while
        before = workers.finished
        task = asyncio.create_task(vault.get_secret(path))
        await until(lambda: workers.running == 1, "the read starting in its thread")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert workers.running == 1  # the caller did not wait for the request
        await until(lambda: workers.finished == before + 1, "the request finishing")
        proxy.heal()
        vault_mount.put(path, {"v": "new"})
        assert await vault.get_secret(path) == {"v": "new"}  # the dropped answer was not kept
        assert await vault.get_secret(path) == {"v": "new"}
    assert workers.running == 0


async def test_asyncio_timeout_on_a_frozen_vault_returns_and_close_waits_for_the_thread(
    linked: Linked, proxy: TcpProxy, workers: Workers
) -> None:
    vault = linked(timeout=1)
    try:
        await vault.open()
        proxy.blackhole()  # Vault never answers: the request waits for its own 1 s timeout
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await vault.get_valkey_url()
        assert workers.running == 1
    finally:
        await vault.close()  # waits for the request under way before closing the session
    assert workers.running == 0


async def test_a_call_queued_behind_busy_workers_and_cancelled_never_runs(
    linked: Linked, proxy: TcpProxy, workers: Workers
) -> None:
    async with linked() as vault:
        proxy.delay = 0.2
        busy = [asyncio.create_task(vault.get_valkey_url()) for _ in range(WORKERS)]
        await until(lambda: workers.running == WORKERS, "every worker being busy")
        queued = asyncio.create_task(vault.get_database_url())
        await until(lambda: workers.submitted == WORKERS + 2, "the call waiting for a worker")
        assert workers.running == WORKERS  # the log-in at opening, the busy ones, and this one
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert await asyncio.gather(*busy) == [TEST_SECRETS["crm/valkey"]["url"]] * WORKERS
        await until(lambda: workers.running == 0, "the busy requests ending")
        assert workers.finished == workers.submitted - 1  # the cancelled one never ran


async def test_a_server_gone_after_opening_is_unavailable(linked: Linked, proxy: TcpProxy) -> None:
    async with linked() as vault:
        proxy.close()
        with pytest.raises(VaultUnavailableError) as info:
            await vault.get_valkey_url()
        assert isinstance(info.value, SecretStoreUnavailableError)
