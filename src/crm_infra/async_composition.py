"""The composition root for asyncio: the same choice as :mod:`crm_infra.composition`, with the
asyncio ports.

::

    settings = Settings.from_env()           # CRM_BACKEND=memory (default) or real
    async with await build_async_infrastructure(settings) as infra:
        await infra.db.execute("SELECT ...", user_id=...)
        report = await infra.health()

The settings, the start-up errors and the health report are the sync root's; only the ports
differ (``AsyncUserScopedDB`` and its siblings), and opening and closing are awaited.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

import attrs

from crm_infra._startup import (
    Driver,
    Kinds,
    Parts,
    ReadUrls,
    RealUrls,
    Step,
    assemble,
    database_checks,
)
from crm_infra.health import HealthReport, run_checks_async, with_pools
from crm_infra.ports import (
    AsyncAdminDB,
    AsyncKeyValueStore,
    AsyncSecretStore,
    AsyncUserScopedDB,
    SecretStore,
)
from crm_infra.secret_paths import DATABASE_PATH, VALKEY_PATH
from crm_infra.settings import Settings

__all__ = ["AsyncInfrastructure", "build_async_infrastructure"]

log = logging.getLogger(__name__)

_Closer = tuple[str, Callable[[], Awaitable[object]]]


@attrs.frozen
class AsyncInfrastructure:
    """The chosen set of asyncio ports, and the one object that closes them.

    The attributes are :class:`~crm_infra.Infrastructure`'s: ``secrets``, ``db``,
    ``admin_db``, ``kv``, ``health_timeout`` and ``check_admin_path``.
    """

    secrets: AsyncSecretStore
    db: AsyncUserScopedDB
    admin_db: AsyncAdminDB
    kv: AsyncKeyValueStore
    health_timeout: float = 5.0
    check_admin_path: bool = False
    # (name, close) pairs in the order the resources were opened; closed in reverse.
    _closers: tuple[_Closer, ...] = attrs.field(default=(), repr=False)
    _closed: list[bool] = attrs.field(factory=list, repr=False, init=False, eq=False)

    async def aclose(self) -> None:
        """Close every resource in reverse order of opening; safe to call more than once.

        A failure to close one resource is logged with its cause and does not stop the others
        from being closed, nor replace an error already propagating.
        """
        if self._closed:
            return
        self._closed.append(True)
        await _close_all(self._closers)

    async def __aenter__(self) -> AsyncInfrastructure:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def health(self, timeout: float | None = None) -> HealthReport:
        """Check every component concurrently, each under its own timeout.

        Returns the same report as :meth:`crm_infra.Infrastructure.health`.
        """

        async def database() -> bool:
            calls = database_checks(
                self.db, self.admin_db, check_admin_path=self.check_admin_path
            )
            results = [await call() for call in calls]  # each runs, even after a False
            return all(result is not False for result in results)

        report = await run_checks_async(
            {
                "secrets": self.secrets.health_check,
                "database": database,
                "keyvalue": self.kv.health_check,
            },
            self.health_timeout if timeout is None else timeout,
        )
        return with_pools(report, {"database": (self.db, self.admin_db), "keyvalue": (self.kv,)})


async def build_async_infrastructure(settings: Settings | None = None) -> AsyncInfrastructure:
    """Build and open the asyncio ports chosen by ``settings``.

    The asyncio twin of :func:`crm_infra.build_infrastructure`: the same settings, secrets
    layout, checks and errors.

    Raises:
        ConfigError: ``settings`` was None and the environment is invalid.
        StartupError: a component could not be built; its ``component`` and message say which
            and why (anything already opened is closed again).
    """
    settings = Settings.from_env() if settings is None else settings
    if settings.backend == "real":
        # Imported here so that memory mode never loads hvac, psycopg or redis...
        from crm_infra.adapters import (  # noqa: PLC0415
            AsyncPostgresClient,
            AsyncValkeyClient,
            AsyncVaultClient,
        )
        from crm_infra.adapters.postgres.credentials import (  # noqa: PLC0415
            credentials_from_secret,
        )

        kinds = Kinds(
            secrets=AsyncVaultClient,
            database=AsyncPostgresClient,
            keyvalue=AsyncValkeyClient,
            # Short-lived logins from Vault's database secrets engine, where crm/database
            # names its roles: renewed from their own thread with the twin's sync client.
            credentials=lambda vault, secret: credentials_from_secret(vault.sync_client, secret),
        )
    else:
        # ... and real mode never loads sqlglot or fakeredis.
        from crm_infra.fakes import (  # noqa: PLC0415
            AsyncInMemoryKeyValueStore,
            AsyncInMemorySecretStore,
            AsyncInMemoryUserScopedDB,
        )

        kinds = Kinds(
            secrets=AsyncInMemorySecretStore,
            database=AsyncInMemoryUserScopedDB,
            keyvalue=AsyncInMemoryKeyValueStore,
        )
    opened: list[_Closer] = []
    try:
        parts = await _drive(assemble(settings, kinds), opened)
    except BaseException:
        await _close_all(opened)
        raise
    return AsyncInfrastructure(**parts.fields(settings), closers=tuple(opened))


async def _drive(build: Generator[Step, Any, Parts], opened: list[_Closer]) -> Parts:
    """Do each step the build yields, awaiting it; record what was opened."""
    driver = Driver(build)
    for step in driver:
        try:
            if isinstance(step, ReadUrls):
                store = cast(AsyncSecretStore, step.store)
                driver.done(RealUrls.read(await _Read.of(store)))
                continue
            made: Any = step.make()
            # ``async with`` semantics: entering opens (connects, logs in) when there is
            # anything to open.
            enter = getattr(made, "__aenter__", None)
            opened_one = await enter() if enter is not None else made
            close = getattr(made, "close", None)
            if close is not None:
                opened.append((step.component, close))
            driver.done(opened_one)
        except Exception as exc:  # noqa: BLE001  # thrown into the build, which names it
            driver.failed(exc)
    return driver.parts


@attrs.frozen
class _Read:
    """The secrets real mode needs, read once from an asyncio store, for the sync accessors."""

    _secrets: Mapping[str, Mapping[str, Any]] = attrs.field(repr=False)

    @classmethod
    async def of(cls, store: AsyncSecretStore) -> SecretStore:
        paths = (DATABASE_PATH, VALKEY_PATH)
        return cls({path: await store.get_secret(path) for path in paths})

    def get_secret(self, path: str) -> Mapping[str, Any]:
        return self._secrets[path]

    def health_check(self) -> bool:
        return True


async def _close_all(closers: Sequence[_Closer]) -> None:
    """Await every closer in reverse order; log a failing one with its cause and go on."""
    for name, close in reversed(closers):
        try:
            await close()
        except Exception:  # cleanup must go on; logged with its cause
            log.warning("closing %s failed", name, exc_info=True)
