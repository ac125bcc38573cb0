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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import cast

import attrs

from crm_infra._startup import (
    COMPONENTS,
    MEMORY_SECRETS,
    RealUrls,
    StartupError,
    collected_failures,
    component,
    postgres_arguments,
    unhealthy_report,
    valkey_arguments,
    vault_arguments,
    with_bootstrap_hint,
)
from crm_infra.errors import UnsafeRoleError
from crm_infra.health import ComponentHealth, HealthReport, run_checks, short_error
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
            ok = self.db.health_check()
            # One object usually plays both ports; check a separate admin path as well.
            if cast(object, self.admin_db) is not self.db:
                ok = self.admin_db.health_check() and ok
            if self.check_admin_path:
                # The admin role logs in with its own URL from its own pool: a wrong admin
                # password or a dropped admin role shows here, not at the first migration.
                self.admin_db.execute_admin("SELECT 1")
            return ok

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
        return _uncut(report, raised)


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
    if settings is None:
        settings = Settings.from_env()
    if settings.backend == "real":
        return _build_real(settings)
    return _build_memory(settings)


def _build_memory(settings: Settings) -> Infrastructure:
    # Imported here so that real mode never loads sqlglot or fakeredis.
    from crm_infra.fakes import (  # noqa: PLC0415
        InMemoryKeyValueStore,
        InMemorySecretStore,
        InMemoryUserScopedDB,
    )

    timings: dict[str, float] = {}
    with _building() as opened:
        with component(timings, "secrets"):
            secrets = InMemorySecretStore(MEMORY_SECRETS)
        with component(timings, "database"):
            db = InMemoryUserScopedDB()
        _remember(opened, "database", db)
        with component(timings, "keyvalue"):
            kv = InMemoryKeyValueStore(key_prefix=settings.key_prefix)
        _remember(opened, "keyvalue", kv)
        return Infrastructure(
            secrets=secrets,
            db=db,
            admin_db=db,
            kv=kv,
            health_timeout=settings.health_timeout,
            closers=tuple(opened),
        )


def _build_real(settings: Settings) -> Infrastructure:
    # Imported here so that memory mode never loads hvac, psycopg or redis.
    from crm_infra.adapters import PostgresClient, ValkeyClient, VaultClient  # noqa: PLC0415

    timings: dict[str, float] = {}
    with _building() as opened:
        # The Vault client's own errors name the address.
        with component(timings, "secrets", "could not log in to Vault"):
            vault = VaultClient(**vault_arguments(settings))
        _remember(opened, "secrets", vault)
        with component(timings, "secrets", "could not read the database and Valkey credentials"):
            urls = RealUrls.read(vault)
        # From here on each component is built on its own: a dead database must not hide the
        # state of Valkey (and the other way round), whose address is already known.
        failures: dict[str, StartupError] = {}
        db: PostgresClient | None = None
        kv: ValkeyClient | None = None
        try:
            with component(timings, "database", "could not connect to PostgreSQL"):
                db = PostgresClient(**postgres_arguments(settings, urls))
        except StartupError as exc:
            if isinstance(exc.__cause__, UnsafeRoleError):
                exc = with_bootstrap_hint(exc, urls.admin_database)
            failures["database"] = exc
        else:
            _remember(opened, "database", db)
        try:
            with component(timings, "keyvalue", "could not connect to Valkey"):
                kv = ValkeyClient(**valkey_arguments(settings, urls))
        except StartupError as exc:
            failures["keyvalue"] = exc
        else:
            _remember(opened, "keyvalue", kv)
        if failures:
            raise collected_failures(failures, timings)
        # Each of the two was either built or recorded as failed above.
        assert db is not None
        assert kv is not None
        return Infrastructure(
            secrets=vault,
            db=db,
            admin_db=db,
            kv=kv,
            health_timeout=settings.health_timeout,
            check_admin_path=True,
            closers=tuple(opened),
        )


@contextmanager
def _building() -> Iterator[list[tuple[str, Callable[[], object]]]]:
    """Yield a list to record opened resources in; close them all again if building fails."""
    opened: list[tuple[str, Callable[[], object]]] = []
    try:
        yield opened
    except BaseException:
        _close_all(opened)
        raise


def _close_all(closers: Sequence[tuple[str, Callable[[], object]]]) -> None:
    """Call every closer in reverse order; log a failing one with its cause and go on."""
    for name, close in reversed(closers):
        try:
            close()
        except Exception:  # cleanup must go on; logged with its cause
            log.warning("closing %s failed", name, exc_info=True)


def _remember(opened: list[tuple[str, Callable[[], object]]], name: str, resource: object) -> None:
    close = getattr(resource, "close", None)
    if callable(close):
        opened.append((name, close))
