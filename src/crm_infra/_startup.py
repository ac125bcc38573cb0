"""What the sync and the asyncio composition roots share: start-up errors, timings, and the
settings each real adapter is built with.

Each root differs only in how it opens and closes what it builds (a call, or an ``await``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import attrs

from crm_infra import secret_paths
from crm_infra.errors import InfraError, UnsafeRoleError
from crm_infra.health import ComponentHealth, HealthReport, short_error
from crm_infra.ports import SecretStore
from crm_infra.settings import Settings

__all__ = [
    "COMPONENTS",
    "MEMORY_SECRETS",
    "Driver",
    "Kinds",
    "Open",
    "Parts",
    "ReadUrls",
    "RealUrls",
    "StartupError",
    "Step",
    "assemble",
    "collected_failures",
    "component",
    "database_checks",
    "postgres_arguments",
    "unhealthy_report",
    "valkey_arguments",
    "vault_arguments",
    "with_bootstrap_hint",
]

COMPONENTS = ("secrets", "database", "keyvalue")
"""The component names used by ``health()`` and ``crm-infra check``."""

# What the in-memory secret store holds: the same layout as Vault, with placeholder values that
# pass the typed accessors' checks. Nothing here is a real credential.
MEMORY_SECRETS: Mapping[str, Mapping[str, Any]] = secret_paths.layout(
    database_url="postgresql://crm_app@localhost:5432/crm",
    admin_database_url="postgresql://crm_admin@localhost:5432/crm",
    valkey_url="redis://localhost:6379/0",
    email_api_key="in-memory-placeholder",
    email_from_address="crm@example.com",
)


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


@contextmanager
def component(timings: dict[str, float], name: str, doing: str | None = None) -> Iterator[None]:
    """Time building ``name``; turn any failure into a :class:`StartupError` naming it.

    Works around an ``await`` too: the timing is wall-clock.
    """
    start = time.perf_counter()
    try:
        yield
    except StartupError:
        raise
    except Exception as exc:
        _add_time(timings, name, start)
        what = f"{doing}: " if doing else ""
        raise StartupError(name, what + short_error(exc, limit=None), timings) from exc
    _add_time(timings, name, start)


def _add_time(timings: dict[str, float], name: str, start: float) -> None:
    timings[name] = round(timings.get(name, 0.0) + (time.perf_counter() - start) * 1000, 1)


def collected_failures(
    failures: Mapping[str, StartupError], timings: Mapping[str, float]
) -> StartupError:
    """One error for every component that failed, chained to the first one's cause."""
    first = next(iter(failures.values()))
    error = StartupError(
        first.component,
        first.reason,
        timings,
        failures={name: exc.reason for name, exc in failures.items()},
    )
    error.__cause__ = first.__cause__
    return error


@attrs.frozen
class RealUrls:
    """The credentials real mode reads from Vault (reprs never show them).

    ``database_secret`` is ``crm/database`` whole: it also says which paths take short-lived
    logins from Vault's database secrets engine instead of the ones in the URLs.
    """

    database: str = attrs.field(repr=False)
    admin_database: str = attrs.field(repr=False)
    valkey: str = attrs.field(repr=False)
    database_secret: secret_paths.DatabaseSecret | None = None

    @classmethod
    def read(cls, store: SecretStore) -> RealUrls:
        """Read and check ``crm/database`` and ``crm/valkey`` (:mod:`crm_infra.secret_paths`)."""
        database = secret_paths.database_secret(store)
        return cls(
            database=database.url,
            admin_database=database.admin_url,
            valkey=secret_paths.valkey_url(store),
            database_secret=database,
        )


def vault_arguments(settings: Settings) -> dict[str, Any]:
    """The Vault client's arguments: the same for the sync and the asyncio twin."""
    return {
        "addr": settings.vault_addr,
        "token": settings.vault_token,
        "mount_point": settings.vault_mount_point,
        "timeout": settings.vault_timeout,
        "role_id": settings.vault_role_id,
        "secret_id": settings.vault_secret_id,
    }


def postgres_arguments(settings: Settings, urls: RealUrls) -> dict[str, Any]:
    """The PostgreSQL client's arguments: the same for the sync and the asyncio twin."""
    return {
        "connection_url": urls.database,
        "pool_size": settings.db_pool_size,
        "admin_connection_url": urls.admin_database,
        "connect_timeout": settings.db_timeout,
    }


def valkey_arguments(settings: Settings, urls: RealUrls) -> dict[str, Any]:
    """The Valkey client's arguments: the same for the sync and the asyncio twin.

    ``CRM_KV_TIMEOUT`` is the whole budget of one call; connecting and each reply get the
    adapter's default shares of it (1 s and 2 s of 5 s), scaled down if smaller.
    """
    return {
        "connection_url": urls.valkey,
        "key_prefix": settings.key_prefix,
        "timeout": settings.kv_timeout,
        "connect_timeout": min(1.0, settings.kv_timeout / 3),
        "socket_timeout": min(2.0, settings.kv_timeout * 2 / 3),
    }


def with_bootstrap_hint(error: StartupError, admin_url: str) -> StartupError:
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


# --- the build, written once ------------------------------------------------------------------
# Both roots run the same generator: it yields what to open or read, and the root's driver does
# it (a call, or an ``await``) and sends back the result or throws in the error.


@attrs.frozen
class Open:
    """Make a component's object and open it (``async with`` semantics on asyncio)."""

    component: str
    make: Callable[[], object]


@attrs.frozen
class ReadUrls:
    """Read the database and Valkey URLs from the secret store (sync or asyncio)."""

    store: object


Step = Open | ReadUrls


@attrs.frozen
class Kinds:
    """The classes one root builds: sync or asyncio, real or in memory.

    ``credentials`` makes the database client's short-lived credentials from the secret store
    and ``crm/database`` (its ``credentials=``/``admin_credentials=`` arguments); real mode
    only.
    """

    secrets: Callable[..., object]
    database: Callable[..., object]
    keyvalue: Callable[..., object]
    credentials: Callable[[Any, secret_paths.DatabaseSecret], Mapping[str, Any]] | None = None


@attrs.frozen
class Parts:
    """What the build made, in the order it opened them."""

    secrets: Any
    db: Any
    kv: Any
    real: bool

    def fields(self, settings: Settings) -> dict[str, Any]:
        """The ports and checks of a root's infrastructure object (both roots' names)."""
        return {
            "secrets": self.secrets,
            "db": self.db,
            "admin_db": self.db,
            "kv": self.kv,
            "health_timeout": settings.health_timeout,
            "check_admin_path": self.real,
        }


def assemble(settings: Settings, kinds: Kinds) -> Generator[Step, Any, Parts]:
    """Build the three components, yielding each step to the root's driver.

    Real mode logs in to Vault and reads every other credential from it; from then on the
    database and Valkey are each tried even when the other fails, so that one dead dependency
    cannot hide the state of the other. Raises :class:`StartupError` naming every failure.
    """
    timings: dict[str, float] = {}
    real = settings.backend == "real"
    if real:
        # The Vault client's own errors name the address.
        with component(timings, "secrets", "could not log in to Vault"):
            secrets = yield Open("secrets", lambda: kinds.secrets(**vault_arguments(settings)))
        with component(timings, "secrets", "could not read the database and Valkey credentials"):
            urls: RealUrls = yield ReadUrls(secrets)
        database = lambda: kinds.database(  # noqa: E731
            **postgres_arguments(settings, urls), **_credentials(kinds, secrets, urls)
        )
        keyvalue = lambda: kinds.keyvalue(**valkey_arguments(settings, urls))  # noqa: E731
    else:
        with component(timings, "secrets"):
            secrets = yield Open("secrets", lambda: kinds.secrets(MEMORY_SECRETS))
        database = kinds.database
        keyvalue = lambda: kinds.keyvalue(key_prefix=settings.key_prefix)  # noqa: E731
    failures: dict[str, StartupError] = {}
    db = kv = None
    try:
        with component(timings, "database", "could not connect to PostgreSQL" if real else None):
            db = yield Open("database", database)
    except StartupError as exc:
        if real and isinstance(exc.__cause__, UnsafeRoleError):
            exc = with_bootstrap_hint(exc, urls.admin_database)
        failures["database"] = exc
    try:
        with component(timings, "keyvalue", "could not connect to Valkey" if real else None):
            kv = yield Open("keyvalue", keyvalue)
    except StartupError as exc:
        failures["keyvalue"] = exc
    if failures:
        raise collected_failures(failures, timings)
    return Parts(secrets=secrets, db=db, kv=kv, real=real)


class Driver:
    """Runs a build for a root: iterate it for the steps, and report each step's outcome with
    :meth:`done` or :meth:`failed` before the next; :attr:`parts` holds the result at the end.

    The roots differ only in how they do a step (a call, or an ``await``)::

        driver = Driver(assemble(settings, kinds))
        for step in driver:
            try:
                driver.done(do(step))
            except Exception as exc:
                driver.failed(exc)
        return driver.parts
    """

    def __init__(self, build: Generator[Step, Any, Parts]) -> None:
        self._build = build
        self._result: Any = None
        self._error: Exception | None = None
        self._parts: Parts | None = None

    def __iter__(self) -> Driver:
        return self

    def __next__(self) -> Step:
        result, error = self._result, self._error
        self._result = self._error = None
        try:
            return self._build.send(result) if error is None else self._build.throw(error)
        except StopIteration as finished:
            self._parts = cast(Parts, finished.value)
            raise StopIteration from None

    def done(self, result: object) -> None:
        """The step succeeded with ``result`` (sent into the build)."""
        self._result = result

    def failed(self, error: Exception) -> None:
        """The step failed with ``error`` (thrown into the build, which names it)."""
        self._error = error

    @property
    def parts(self) -> Parts:
        """What the build made (once iterating has ended)."""
        assert self._parts is not None, "the build has not finished"
        return self._parts


def _credentials(kinds: Kinds, secrets: Any, urls: RealUrls) -> Mapping[str, Any]:
    """The database client's short-lived credentials, for the paths ``crm/database`` names
    roles for (none otherwise)."""
    if kinds.credentials is None or urls.database_secret is None:
        return {}
    return kinds.credentials(secrets, urls.database_secret)


def database_checks(db: Any, admin_db: Any, *, check_admin_path: bool) -> list[Callable[[], Any]]:
    """The calls the ``database`` health check makes, for either root to run (or await).

    One object usually plays both ports; a separate admin object is checked as well. With
    ``check_admin_path`` the admin role also runs ``SELECT 1`` from its own pool and URL: a
    wrong admin password or a dropped admin role shows here, not at the first migration.
    """
    checks: list[Callable[[], Any]] = [db.health_check]
    if admin_db is not db:
        checks.append(admin_db.health_check)
    if check_admin_path:
        checks.append(lambda: admin_db.execute_admin("SELECT 1"))
    return checks
