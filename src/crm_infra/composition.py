"""The composition root: the one place that chooses between the real adapters and the fakes.

::

    settings = Settings.from_env()           # CRM_BACKEND=memory (default) or real
    with build_infrastructure(settings) as infra:
        infra.db.execute("SELECT ...", user_id=...)
        report = infra.health()

Only this module imports both :mod:`crm_infra.adapters` and :mod:`crm_infra.fakes`; domain code
receives the ports held by :class:`Infrastructure` and never learns which set it got.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

import attrs

from crm_infra._startup import (
    COMPONENTS,
    Driver,
    Kinds,
    Parts,
    ReadUrls,
    RealUrls,
    StartupError,
    Step,
    assemble,
    database_checks,
    unhealthy_report,
)
from crm_infra.health import ComponentHealth, HealthReport, run_checks, short_error, with_pools
from crm_infra.ports import AdminDB, KeyValueStore, SecretStore, UserScopedDB
from crm_infra.settings import Settings

__all__ = [
    "COMPONENTS",
    "ComponentHealth",
    "HealthReport",
    "Infrastructure",
    "Settings",
    "StartupError",
    "build_infrastructure",
    "unhealthy_report",
]

log = logging.getLogger(__name__)


@attrs.frozen
class Infrastructure:
    """The chosen set of ports, and the one object that closes them.

    Attributes:
        secrets: the secret store (Vault, or the in-memory fake).
        db: user-scoped SQL under row-level security.
        admin_db: the explicit RLS bypass, for migrations and batch work only.
        kv: the key-value store for sessions and rate-limit counters.
        health_timeout: seconds each component's health check may take.
        check_admin_path: also run ``SELECT 1`` through the admin path in the ``database``
            check (real mode: the admin role has its own pool and URL, which can fail alone).
    """

    secrets: SecretStore
    db: UserScopedDB
    admin_db: AdminDB
    kv: KeyValueStore
    health_timeout: float = 5.0
    check_admin_path: bool = False
    # (name, close) pairs in the order the resources were opened; closed in reverse.
    _closers: tuple[tuple[str, Callable[[], object]], ...] = attrs.field(default=(), repr=False)
    _closed: list[bool] = attrs.field(factory=list, repr=False, init=False, eq=False)

    def close(self) -> None:
        """Close every resource in reverse order of opening; safe to call more than once.

        A failure to close one resource is logged with its cause and does not stop the others
        from being closed, nor replace an error already propagating.
        """
        if self._closed:
            return
        self._closed.append(True)
        _close_all(self._closers)

    def __enter__(self) -> Infrastructure:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def health(self, timeout: float | None = None) -> HealthReport:
        """Check every component concurrently, each under its own timeout.

        Args:
            timeout: seconds per component (default: :attr:`health_timeout`).

        Returns:
            A report keyed ``secrets``, ``database`` and ``keyvalue``; a component that fails
            or does not answer in time is reported with a short error, the others with their
            own state.
        """

        def database() -> bool:
            calls = database_checks(
                self.db, self.admin_db, check_admin_path=self.check_admin_path
            )
            results = [call() for call in calls]  # each runs, even after one answered False
            return all(result is not False for result in results)

        checks: dict[str, Callable[[], object]] = {
            "secrets": self.secrets.health_check,
            "database": database,
            "keyvalue": self.kv.health_check,
        }
        raised: dict[str, Exception] = {}

        def recording(name: str, check: Callable[[], object]) -> Callable[[], object]:
            def run() -> object:
                try:
                    return check()
                except Exception as exc:
                    raised[name] = exc
                    raise

            return run

        report = run_checks(
            {name: recording(name, check) for name, check in checks.items()},
            self.health_timeout if timeout is None else timeout,
        )
        ports = {"database": (self.db, self.admin_db), "keyvalue": (self.kv,)}
        return with_pools(_uncut(report, raised), ports)


def _uncut(report: HealthReport, raised: Mapping[str, Exception]) -> HealthReport:
    """Give back each error :func:`run_checks` shortened, whole.

    Only where the report holds exactly the short form of what the check raised: a check that
    raised after its deadline keeps its "no answer" error.
    """
    components = dict(report.components)
    for name, exc in raised.items():
        component = components.get(name)
        if component is not None and component.error == short_error(exc):
            whole = short_error(exc, limit=None)
            components[name] = ComponentHealth(False, component.latency_ms, whole)
    return HealthReport(components)


def build_infrastructure(settings: Settings | None = None) -> Infrastructure:
    """Build the ports chosen by ``settings``: the real adapters or the in-memory fakes.

    Real mode logs in to Vault and reads every other credential from it (``crm/database``
    ``url`` and ``admin_url``, ``crm/valkey`` ``url``), then connects to PostgreSQL and Valkey.
    Memory mode builds the fakes, with the database schema taken from the same ``sql/`` files.

    Args:
        settings: what to build (default: :meth:`Settings.from_env`).

    Returns:
        The infrastructure; use it as a context manager so that it is closed.

    Raises:
        ConfigError: ``settings`` was None and the environment is invalid.
        StartupError: a component could not be built; its ``component`` and message say which
            and why (anything already opened is closed again).
    """
    return _build(Settings.from_env() if settings is None else settings)


def _build(settings: Settings) -> Infrastructure:
    if settings.backend == "real":
        # Imported here so that memory mode never loads hvac, psycopg or redis...
        from crm_infra.adapters import PostgresClient, ValkeyClient, VaultClient  # noqa: PLC0415
        from crm_infra.adapters.postgres.credentials import (  # noqa: PLC0415
            credentials_from_secret,
        )

        kinds = Kinds(
            secrets=VaultClient,
            database=PostgresClient,
            keyvalue=ValkeyClient,
            # Short-lived logins from Vault's database secrets engine, where crm/database
            # names its roles.
            credentials=credentials_from_secret,
        )
    else:
        # ... and real mode never loads sqlglot or fakeredis.
        from crm_infra.fakes import (  # noqa: PLC0415
            InMemoryKeyValueStore,
            InMemorySecretStore,
            InMemoryUserScopedDB,
        )

        kinds = Kinds(
            secrets=InMemorySecretStore,
            database=InMemoryUserScopedDB,
            keyvalue=InMemoryKeyValueStore,
        )
    opened: list[tuple[str, Callable[[], object]]] = []
    try:
        parts = _drive(assemble(settings, kinds), opened)
    except BaseException:
        _close_all(opened)
        raise
    return Infrastructure(**parts.fields(settings), closers=tuple(opened))


def _drive(
    build: Generator[Step, Any, Parts], opened: list[tuple[str, Callable[[], object]]]
) -> Parts:
    """Do each step the build yields; record what was opened, to be closed in reverse."""
    driver = Driver(build)
    for step in driver:
        try:
            if isinstance(step, ReadUrls):
                driver.done(RealUrls.read(cast(SecretStore, step.store)))
                continue
            made = step.make()  # the sync adapters connect when made
            close = getattr(made, "close", None)
            if callable(close):
                opened.append((step.component, close))
            driver.done(made)
        except Exception as exc:  # noqa: BLE001  # thrown into the build, which names it
            driver.failed(exc)
    return driver.parts


def _close_all(closers: Sequence[tuple[str, Callable[[], object]]]) -> None:
    """Call every closer in reverse order; log a failing one with its cause and go on."""
    for name, close in reversed(closers):
        try:
            close()
        except Exception:  # cleanup must go on; logged with its cause
            log.warning("closing %s failed", name, exc_info=True)
