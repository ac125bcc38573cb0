"""Vault and OpenBao for asyncio: :class:`AsyncVaultClient`.

The asyncio twin of :class:`~crm_infra.adapters.vault.client.VaultClient`, with the same
constructor arguments, errors and guarantees. It is built around a ``VaultClient`` and differs
only in how it waits: hvac is synchronous, so every request runs in a worker thread of the
client's own small executor, and the event loop never blocks on Vault. What needs no I/O runs
on the loop, in the sync client's own code: checking the path, and answering from the cache (a
cache hit never touches a thread).

A cancelled call leaves nothing behind: a request that had not started yet never runs; one
under way finishes in its thread (within the client's ``timeout``), and its answer is dropped,
not cached. ``close()`` waits for such requests before it closes the HTTP session.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from requests.adapters import DEFAULT_POOLSIZE

from crm_infra._twins import OpenedByAsyncWith, same_arguments_as
from crm_infra.adapters.vault import telemetry
from crm_infra.adapters.vault.client import VaultClient, VaultInvalidSecretError
from crm_infra.secret_paths import AsyncSecretLayoutMethods
from crm_infra.telemetry import traced

__all__ = ["AsyncVaultClient"]

P = ParamSpec("P")
T = TypeVar("T")

WORKERS = DEFAULT_POOLSIZE
"""Requests one client runs at once: as many as hvac's HTTP session keeps connections for
(requests' default pool), so every worker reuses a connection. More calls wait their turn."""


class _InnerVaultClient(VaultClient):
    """The VaultClient inside an :class:`AsyncVaultClient`: its constructor checks the settings
    and does no I/O (the twin authenticates in a worker thread), and it goes by the twin's name
    in messages and its repr."""

    _authenticate_on_init = False
    _shown_name = "AsyncVaultClient"


class AsyncVaultClient(OpenedByAsyncWith, AsyncSecretLayoutMethods):
    """Read secrets from a Vault or OpenBao KV v2 mount, for asyncio.

    The arguments, errors and guarantees are :class:`VaultClient`'s, and so are its
    ``get_database_url()``, ``get_admin_database_url()``, ``get_valkey_url()`` and
    ``get_email_credentials()``, here awaited
    (:class:`~crm_infra.secret_paths.AsyncSecretLayoutMethods`). The constructor checks the
    settings and does no I/O; ``async with AsyncVaultClient(...)`` (or ``await client.open()``;
    the first call does it too) authenticates.

    Raises:
        VaultConfigError: at construction: the address or credentials are missing, or a
            setting is invalid.
        VaultAuthError: on opening: the token is invalid, expired or revoked, or the AppRole
            login failed.
        VaultUnavailableError: on opening: Vault is unreachable, sealed or timed out.
    """

    invalid_secret_error = VaultInvalidSecretError

    @same_arguments_as(VaultClient.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._vault = _InnerVaultClient(*args, **kwargs)
        self._executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="crm-vault")
        self._jobs: set[Future[Any]] = set()  # submitted and not done, for close() to wait on
        self._closing = False

    @property
    def addr(self) -> str:
        """The server URL."""
        return self._vault.addr

    @property
    def mount_point(self) -> str:
        """The KV v2 mount secrets are read from."""
        return self._vault.mount_point

    @property
    def auth_method(self) -> str:
        """``"token"`` or ``"approle"``."""
        return self._vault.auth_method

    @property
    def sync_client(self) -> VaultClient:
        """The :class:`VaultClient` this one runs in its worker threads, sharing its token.

        For what works in a thread of its own, never on the event loop: short-lived database
        credentials (``credentials_from_secret(vault.sync_client, secret)``) issue and renew
        their leases with it.
        """
        return self._vault

    # --- waiting ---------------------------------------------------------------------------

    async def _in_thread(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args)`` in a worker thread and wait for it without blocking the loop.

        Cancelled before a worker took it, it never runs; cancelled after, it finishes in its
        thread and its result is dropped.
        """
        if self._closing:
            self._vault._raise_closed()
        # The caller's context (log and trace context) goes along, as asyncio.to_thread does.
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        job = self._executor.submit(call)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return await asyncio.wrap_future(job)

    async def _ready(self) -> VaultClient:
        """Return the inner client, authenticated (once, in a worker thread)."""
        if self._closing:
            self._vault._raise_closed()
        if not self._vault._authenticated:
            await self._in_thread(self._vault._authenticate)
        return self._vault

    async def open(self) -> None:
        """Authenticate: an AppRole login, or a token lookup (once; idempotent).

        Raises:
            VaultAuthError, VaultUnavailableError, VaultError: see the class.
        """
        await self._ready()

    # --- the port ----------------------------------------------------------------------------

    @traced(telemetry.GET_SECRET)
    async def get_secret(self, path: str) -> dict[str, Any]:
        """Return the latest version of the secret at ``path``, as
        :meth:`VaultClient.get_secret` does.

        A fresh cached copy is returned at once, without a thread; an invalid path raises
        before any thread or request.
        """
        vault = await self._ready()
        found, since = vault._lookup(path)
        if found is not None:
            telemetry.CACHED.set(True)  # for the span, when one is recorded
            return found
        return vault._keep(path, await self._in_thread(vault._read, path), since)

    @traced(telemetry.HEALTH_CHECK)
    async def health_check(self) -> bool:
        """Return True when Vault answers, is unsealed and the credentials are valid, as
        :meth:`VaultClient.health_check` does (never answered from the cache). Its span covers
        the first login too, so a refused login is recorded; the sync client's check in the
        worker thread runs under it and makes no second span."""
        vault = await self._ready()
        return await self._in_thread(vault.health_check)

    def invalidate(self, path: str | None = None) -> None:
        """Drop the cached read of ``path``, or all cached reads (no I/O, so no ``await``).

        Raises:
            VaultInvalidPathError: ``path`` is not a valid secret path.
        """
        self._vault.invalidate(path)

    # --- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Wait for requests under way in worker threads (cancelled calls' included), then
        close the HTTP session and drop cached secrets; later calls raise VaultError.
        Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._executor.shutdown(wait=False)  # no new work; what was submitted still runs
        try:
            if self._jobs:
                await asyncio.wait([asyncio.wrap_future(job) for job in list(self._jobs)])
        finally:
            self._vault.close()


    def __repr__(self) -> str:
        return repr(self._vault)
