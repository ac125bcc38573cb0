"""Sync faces of the asyncio twins, so that each contract test is written once and runs on both.

A facade runs every method of an async object to completion on an event loop of its own, in the
test's thread, and turns ``transaction()``/``admin_transaction()`` into ``with`` blocks. It adds
nothing and wraps no exception: what the async object raises is what the test sees.

All calls of one facade run in ONE asyncio task, as the awaits of one request handler would:
the async fake tells a transaction's own calls from another task's by the current task, and the
async client finds the transaction a nested ``transaction()`` becomes a savepoint of in a
context variable of that task. The user the test set with :func:`crm_infra.user_context` is
set around each call, as it would be in the caller's task.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any, Protocol, TypeVar
from uuid import UUID

from crm_infra import MissingUserContextError, get_current_user_id, user_context
from crm_infra.ports import (
    AsyncAdminDB,
    AsyncKeyValueStore,
    AsyncSecretStore,
    AsyncTransaction,
    AsyncUserScopedDB,
    JSONValue,
    Params,
    Row,
)
from crm_infra.secret_paths import EmailCredentials
from crm_infra.user_context import UserId

__all__ = ["AsyncContractDB", "Driver", "SyncDB", "SyncKeyValueStore", "SyncSecretStore"]

T = TypeVar("T")
_Call = tuple[Callable[[], Awaitable[Any]], UUID | None, asyncio.Future[Any]]


class Driver:
    """One event loop and one task that runs every call of one facade, in order."""

    def __init__(self) -> None:
        # A loop of its own, never installed as the thread's: pytest-asyncio's loops are
        # not disturbed, and this one runs only while a call is under way.
        self._runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        self._calls: asyncio.Queue[_Call] | None = None
        self._server: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs
        self._closed = False

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()`` in the facade's task, as the current user; return its result."""
        try:
            user: UUID | None = get_current_user_id()
        except MissingUserContextError:
            user = None
        if self._closed:
            # What a closed object does (raise, mostly) needs no loop of its own any more.
            with asyncio.Runner(loop_factory=asyncio.new_event_loop) as once:
                return once.run(_as_user(make, user))
        loop = self._runner.get_loop()
        if self._calls is None:
            self._calls = asyncio.Queue()
            # An empty context: the task sees no user but the one each call brings.
            self._server = loop.create_task(_serve(self._calls), context=contextvars.Context())
        done: asyncio.Future[T] = loop.create_future()
        self._calls.put_nowait((make, user, done))
        return loop.run_until_complete(done)

    @contextmanager
    def entered(self, manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
        """Run ``async with manager`` around the ``with`` block, in the facade's task."""
        value = self.call(manager.__aenter__)
        try:
            yield value
        except BaseException as exc:
            if not self.call(partial(manager.__aexit__, type(exc), exc, exc.__traceback__)):
                raise
        else:
            self.call(lambda: manager.__aexit__(None, None, None))

    def close(self, closing: Callable[[], Awaitable[object]]) -> None:
        """Await ``closing()`` in the facade's task, then close the loop (and the task)."""
        try:
            self.call(closing)
        finally:
            self._closed = True
            self._runner.close()


async def _as_user(make: Callable[[], Awaitable[T]], user: UUID | None) -> T:
    with user_context(user) if user is not None else nullcontext():
        return await make()


async def _serve(calls: asyncio.Queue[_Call]) -> None:
    while True:
        make, user, done = await calls.get()
        try:
            result = await _as_user(make, user)
        except Exception as exc:
            done.set_exception(exc)
        except BaseException:  # the loop is closing: so is this task
            done.cancel()
            raise
        else:
            done.set_result(result)


def _opened(build: Callable[[], Awaitable[T]]) -> tuple[Driver, T]:
    """Build (and open) an async object inside a new driver: its pools belong to that loop."""
    driver = Driver()
    try:
        return driver, driver.call(build)
    except BaseException:
        driver.close(lambda: asyncio.sleep(0))
        raise


# --- the database ------------------------------------------------------------------------------


class AsyncContractDB(AsyncUserScopedDB, AsyncAdminDB, Protocol):
    """Both async database ports on one object, closable, as the async backends are."""

    async def close(self) -> None:
        """Release the backend."""


class SyncTransaction:
    """The sync face of an :class:`~crm_infra.ports.AsyncTransaction`."""

    def __init__(self, driver: Driver, tx: AsyncTransaction) -> None:
        self._driver = driver
        self._tx = tx

    def execute(self, query: str, params: Params = ()) -> list[Row]:
        return self._driver.call(lambda: self._tx.execute(query, params))

    def execute_one(self, query: str, params: Params = ()) -> Row | None:
        return self._driver.call(lambda: self._tx.execute_one(query, params))

    def execute_scalar(self, query: str, params: Params = ()) -> Any:
        return self._driver.call(lambda: self._tx.execute_scalar(query, params))


class SyncDB:
    """The sync face of an async database backend: ``UserScopedDB`` and ``AdminDB``."""

    def __init__(self, build: Callable[[], Awaitable[AsyncContractDB]]) -> None:
        self._driver, self.inner = _opened(build)

    def execute(self, query: str, params: Params = (), user_id: UserId | None = None) -> list[Row]:
        return self._driver.call(lambda: self.inner.execute(query, params, user_id))

    def execute_one(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> Row | None:
        return self._driver.call(lambda: self.inner.execute_one(query, params, user_id))

    def execute_scalar(self, query: str, params: Params = (), user_id: UserId | None = None) -> Any:
        return self._driver.call(lambda: self.inner.execute_scalar(query, params, user_id))

    @contextmanager
    def transaction(self, user_id: UserId | None = None) -> Iterator[SyncTransaction]:
        with self._driver.entered(self.inner.transaction(user_id)) as tx:
            yield SyncTransaction(self._driver, tx)

    def health_check(self) -> bool:
        return self._driver.call(self.inner.health_check)

    def execute_admin(self, query: str, params: Params = ()) -> list[Row]:
        return self._driver.call(lambda: self.inner.execute_admin(query, params))

    @contextmanager
    def admin_transaction(self) -> Iterator[SyncTransaction]:
        with self._driver.entered(self.inner.admin_transaction()) as tx:
            yield SyncTransaction(self._driver, tx)

    def close(self) -> None:
        self._driver.close(self.inner.close)

    def __repr__(self) -> str:
        return repr(self.inner)


# --- secrets -----------------------------------------------------------------------------------


class AsyncLayoutStore(AsyncSecretStore, Protocol):
    """An async secret store with the layout accessors, as both async stores have them."""

    async def get_database_url(self) -> str: ...
    async def get_admin_database_url(self) -> str: ...
    async def get_valkey_url(self) -> str: ...
    async def get_email_credentials(self) -> EmailCredentials: ...
    async def close(self) -> None: ...


class SyncSecretStore:
    """The sync face of an async secret store."""

    def __init__(self, build: Callable[[], Awaitable[AsyncLayoutStore]]) -> None:
        self._driver, self.inner = _opened(build)

    def get_secret(self, path: str) -> Mapping[str, Any]:
        return self._driver.call(lambda: self.inner.get_secret(path))

    def health_check(self) -> bool:
        return self._driver.call(self.inner.health_check)

    def get_database_url(self) -> str:
        return self._driver.call(self.inner.get_database_url)

    def get_admin_database_url(self) -> str:
        return self._driver.call(self.inner.get_admin_database_url)

    def get_valkey_url(self) -> str:
        return self._driver.call(self.inner.get_valkey_url)

    def get_email_credentials(self) -> EmailCredentials:
        return self._driver.call(self.inner.get_email_credentials)

    def close(self) -> None:
        self._driver.close(self.inner.close)

    def __repr__(self) -> str:
        return repr(self.inner)


# --- key-value ---------------------------------------------------------------------------------


class AsyncClosableKeyValueStore(AsyncKeyValueStore, Protocol):
    """An async key-value store that can be closed, as both async stores can."""

    async def close(self) -> None: ...


class SyncKeyValueStore:
    """The sync face of an async key-value store."""

    def __init__(self, build: Callable[[], Awaitable[AsyncClosableKeyValueStore]]) -> None:
        self._driver, self.inner = _opened(build)

    def get(self, key: str) -> str | None:
        return self._driver.call(lambda: self.inner.get(key))

    def set(self, key: str, value: str, expire_seconds: int | None = None) -> None:
        self._driver.call(lambda: self.inner.set(key, value, expire_seconds))

    def delete(self, key: str) -> bool:
        return self._driver.call(lambda: self.inner.delete(key))

    def incr(self, key: str) -> int:
        return self._driver.call(lambda: self.inner.incr(key))

    def expire(self, key: str, seconds: int) -> bool:
        return self._driver.call(lambda: self.inner.expire(key, seconds))

    def ttl(self, key: str) -> int:
        return self._driver.call(lambda: self.inner.ttl(key))

    def exists(self, key: str) -> bool:
        return self._driver.call(lambda: self.inner.exists(key))

    def get_json(self, key: str) -> Any:
        return self._driver.call(lambda: self.inner.get_json(key))

    def set_json(self, key: str, value: JSONValue, expire_seconds: int | None = None) -> None:
        self._driver.call(lambda: self.inner.set_json(key, value, expire_seconds))

    def hit(self, key: str, window_seconds: int) -> int:
        return self._driver.call(lambda: self.inner.hit(key, window_seconds))

    def health_check(self) -> bool:
        return self._driver.call(self.inner.health_check)

    def close(self) -> None:
        self._driver.close(self.inner.close)

    def __enter__(self) -> SyncKeyValueStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self.inner)
