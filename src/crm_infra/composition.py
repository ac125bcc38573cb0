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
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, cast

import attrs

from crm_infra.errors import InfraError, UnsafeRoleError
from crm_infra.health import (
    ComponentHealth,
    HealthReport,
    redact,
    redact_address,
    run_checks,
    short_error,
)
from crm_infra.ports import AdminDB, KeyValueStore, SecretStore, UserScopedDB
from crm_infra.secret_paths import (
    DATABASE_ADMIN_URL_FIELD,
    DATABASE_PATH,
    DATABASE_URL_FIELD,
    EMAIL_API_KEY_FIELD,
    EMAIL_FROM_ADDRESS_FIELD,
    EMAIL_PATH,
    VALKEY_PATH,
    VALKEY_URL_FIELD,
)
from crm_infra.settings import Settings

__all__ = [
    "COMPONENTS",
    "ComponentHealth",
    "HealthReport",
    "Infrastructure",
    "Settings",
    "StartupError",
    "build_infrastructure",
    "error_line",
    "unhealthy_report",
]

log = logging.getLogger(__name__)

COMPONENTS = ("secrets", "database", "keyvalue")
"""The component names used by :meth:`Infrastructure.health` and ``crm-infra check``."""

# What the in-memory secret store holds: the same layout as Vault, with placeholder values that
# pass the typed accessors' checks. Nothing here is a real credential.
_MEMORY_SECRETS: dict[str, dict[str, Any]] = {
    DATABASE_PATH: {
        DATABASE_URL_FIELD: "postgresql://crm_app@localhost:5432/crm",
        DATABASE_ADMIN_URL_FIELD: "postgresql://crm_admin@localhost:5432/crm",
    },
    VALKEY_PATH: {VALKEY_URL_FIELD: "redis://localhost:6379/0"},
    EMAIL_PATH: {
        EMAIL_API_KEY_FIELD: "in-memory-placeholder",
        EMAIL_FROM_ADDRESS_FIELD: "crm@example.com",
    },
}


class StartupError(InfraError):
    """A component of the infrastructure could not be built; ``component`` names which.

    The underlying error (for example a :class:`~crm_infra.errors.SecretStoreUnavailableError`)
    is chained as ``__cause__``. ``started`` maps each component whose start-up was tried (the
    failed ones included) to how long it took, in milliseconds. ``failures`` maps every
    component that failed to its reason: once the secrets are read, the database and the
    key-value store are each tried even when the other fails, so more than one may be listed.
    """

    def __init__(
        self,
        component: str,
        message: str,
        started: Mapping[str, float] | None = None,
        *,
        failures: Mapping[str, str] | None = None,
    ) -> None:
        self.failures = dict(failures or {component: message})
        shown = "; ".join(f"{name}: {reason}" for name, reason in self.failures.items())
        super().__init__(shown)
        self.component = component
        self.reason = message
        self.started = dict(started or {})


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


def error_line(exc: BaseException) -> str:
    """Return ``exc`` as one line, its class and whole message, with passwords redacted.

    Unlike :func:`crm_infra.health.short_error` it never cuts: reports, JSON and error messages
    keep every word (a cut once hid the very hint that said how to fix the problem).
    """
    return redact(f"{type(exc).__name__}: {' '.join(str(exc).split()) or '(no message)'}")


def _uncut(report: HealthReport, raised: Mapping[str, Exception]) -> HealthReport:
    """Give back each error :func:`run_checks` shortened, whole.

    Only where the report holds exactly the short form of what the check raised: a check that
    raised after its deadline keeps its "no answer" error.
    """
    components = dict(report.components)
    for name, exc in raised.items():
        component = components.get(name)
        if component is not None and component.error == short_error(exc):
            components[name] = ComponentHealth(False, component.latency_ms, error_line(exc))
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
        with _component(timings, "secrets"):
            secrets = InMemorySecretStore(_MEMORY_SECRETS)
        with _component(timings, "database"):
            db = InMemoryUserScopedDB()
        _remember(opened, "database", db)
        with _component(timings, "keyvalue"):
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
    from crm_infra import secret_paths  # noqa: PLC0415
    from crm_infra.adapters import PostgresClient, ValkeyClient, VaultClient  # noqa: PLC0415
    from crm_infra.adapters.postgres.credentials import credentials_from_secret  # noqa: PLC0415

    timings: dict[str, float] = {}
    with _building() as opened:
        shown_addr = redact_address(settings.vault_addr)
        with _component(timings, "secrets", f"could not log in to Vault at {shown_addr}"):
            vault = VaultClient(
                settings.vault_addr,
                settings.vault_token,
                mount_point=settings.vault_mount_point,
                timeout=settings.vault_timeout,
                role_id=settings.vault_role_id,
                secret_id=settings.vault_secret_id,
            )
        _remember(opened, "secrets", vault)
        with _component(timings, "secrets", "could not read the database and Valkey credentials"):
            database = secret_paths.database_secret(vault)
            database_url, admin_database_url = database.url, database.admin_url
            valkey_url = secret_paths.valkey_url(vault)
        # From here on each component is built on its own: a dead database must not hide the
        # state of Valkey (and the other way round), whose address is already known.
        failures: dict[str, StartupError] = {}
        db: PostgresClient | None = None
        kv: ValkeyClient | None = None
        try:
            with _component(timings, "database", "could not connect to PostgreSQL"):
                db = PostgresClient(
                    database_url,
                    settings.db_pool_size,
                    admin_connection_url=admin_database_url,
                    connect_timeout=settings.db_timeout,
                    # Short-lived logins from Vault's database secrets engine, if named.
                    **credentials_from_secret(vault, database),
                )
        except StartupError as exc:
            if isinstance(exc.__cause__, UnsafeRoleError):
                exc = _with_bootstrap_hint(exc, admin_database_url)
            failures["database"] = exc
        else:
            _remember(opened, "database", db)
        try:
            with _component(timings, "keyvalue", "could not connect to Valkey"):
                # CRM_KV_TIMEOUT is the whole budget of one call; connecting and each reply
                # get the adapter's default shares of it (1 s and 2 s of 5 s), scaled down if
                # smaller.
                kv = ValkeyClient(
                    valkey_url,
                    key_prefix=settings.key_prefix,
                    timeout=settings.kv_timeout,
                    connect_timeout=min(1.0, settings.kv_timeout / 3),
                    socket_timeout=min(2.0, settings.kv_timeout * 2 / 3),
                )
        except StartupError as exc:
            failures["keyvalue"] = exc
        else:
            _remember(opened, "keyvalue", kv)
        if failures:
            first = next(iter(failures.values()))
            raise StartupError(
                first.component,
                first.reason,
                timings,
                failures={name: exc.reason for name, exc in failures.items()},
            ) from first.__cause__
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


def _with_bootstrap_hint(error: StartupError, admin_url: str) -> StartupError:
    """Add the command that bootstraps the database to a refused application role.

    A database set up by hand without ``sql/bootstrap/roles.sql`` is the usual cause: it leaves
    PUBLIC the privileges the start-up role check refuses.
    """
    import psycopg  # noqa: PLC0415  # real mode only
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    from crm_infra.migrations import bootstrap_command  # noqa: PLC0415

    try:
        parts = conninfo_to_dict(admin_url)
    except psycopg.Error:  # the client parsed it already; never fail over a hint
        return error
    database = str(parts.get("dbname") or parts.get("user") or "")
    host = str(parts.get("host") or "")
    command = bootstrap_command(
        database, host=None if host.startswith("/") else host or None, port=parts.get("port")
    )
    hinted = StartupError(
        error.component,
        f"{error.reason}; if the bootstrap file has not run in database {database}, run it "
        f"there once as a superuser: {command}",
        error.started,
    )
    hinted.__cause__ = error.__cause__
    return hinted


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


@contextmanager
def _component(
    timings: dict[str, float], name: str, doing: str | None = None
) -> Iterator[None]:
    """Time building ``name``; turn any failure into a :class:`StartupError` naming it."""
    start = time.perf_counter()
    try:
        yield
    except StartupError:
        raise
    except Exception as exc:
        _add_time(timings, name, start)
        what = f"{doing}: " if doing else ""
        raise StartupError(name, what + error_line(exc), timings) from exc
    _add_time(timings, name, start)


def _add_time(timings: dict[str, float], name: str, start: float) -> None:
    timings[name] = round(timings.get(name, 0.0) + (time.perf_counter() - start) * 1000, 1)


def unhealthy_report(error: StartupError) -> HealthReport:
    """Return a report for infrastructure that could not be built.

    Every component listed in ``error.failures`` carries its reason; the others answered during
    start-up and are reported healthy, with the time building them took. The one exception:
    when the secrets failed, the database and Valkey are reported "not checked", since their
    addresses come from Vault.
    """
    components: dict[str, ComponentHealth] = {}
    for name in COMPONENTS:
        latency = error.started.get(name, 0.0)
        if name in error.failures:
            components[name] = ComponentHealth(False, latency, error.failures[name])
        elif "secrets" not in error.failures:
            components[name] = ComponentHealth(True, latency)
        else:
            components[name] = ComponentHealth(
                False, 0.0, f"not checked: start-up stopped at {error.component}"
            )
    return HealthReport(components)
