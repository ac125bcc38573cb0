"""The composition roots: memory mode builds the fakes; both roots' infrastructures close and
report health alike."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from crm_infra import (
    AdminDB,
    ConfigError,
    HealthReport,
    Infrastructure,
    KeyValueStore,
    SecretStore,
    SecretStoreUnavailableError,
    Settings,
    StartupError,
    UserScopedDB,
    build_infrastructure,
    secret_paths,
    user_context,
)
from crm_infra.async_composition import AsyncInfrastructure
from crm_infra.composition import COMPONENTS, unhealthy_report
from crm_infra.fakes import InMemoryKeyValueStore, InMemorySecretStore, InMemoryUserScopedDB

# --- memory mode -----------------------------------------------------------------------------


@pytest.fixture
def memory_infra() -> Iterator[Infrastructure]:
    with build_infrastructure(Settings()) as infra:
        yield infra


def test_memory_mode_builds_the_fakes_typed_as_the_ports(memory_infra: Infrastructure) -> None:
    assert isinstance(memory_infra.secrets, InMemorySecretStore)
    assert isinstance(memory_infra.db, InMemoryUserScopedDB)
    assert isinstance(memory_infra.kv, InMemoryKeyValueStore)
    assert memory_infra.admin_db is memory_infra.db
    assert isinstance(memory_infra.secrets, SecretStore)
    assert isinstance(memory_infra.db, UserScopedDB)
    assert isinstance(memory_infra.admin_db, AdminDB)
    assert isinstance(memory_infra.kv, KeyValueStore)


def test_memory_mode_has_the_schema_and_row_level_security(memory_infra: Infrastructure) -> None:
    alice, bob = (
        memory_infra.admin_db.execute_admin(
            "INSERT INTO users (email) VALUES (%s) RETURNING id", [email]
        )[0]["id"]
        for email in ("alice@example.com", "bob@example.com")
    )
    with user_context(alice):
        memory_infra.db.execute("INSERT INTO contacts (name) VALUES (%s)", ["Ada"])
    assert memory_infra.db.execute("SELECT name FROM contacts", user_id=alice) == [{"name": "Ada"}]
    assert memory_infra.db.execute("SELECT name FROM contacts", user_id=bob) == []


def test_memory_mode_secrets_follow_the_vault_layout(memory_infra: Infrastructure) -> None:
    assert secret_paths.database_url(memory_infra.secrets).startswith("postgresql://")
    assert secret_paths.admin_database_url(memory_infra.secrets).startswith("postgresql://")
    assert secret_paths.valkey_url(memory_infra.secrets).startswith("redis://")
    assert secret_paths.email_credentials(memory_infra.secrets) is not None


def test_memory_mode_applies_the_key_prefix() -> None:
    with (
        build_infrastructure(Settings(key_prefix="tenant-a:")) as a,
        build_infrastructure(Settings(key_prefix="tenant-b:")) as b,
    ):
        a.kv.set("k", "from a")
        assert a.kv.get("k") == "from a"
        assert b.kv.get("k") is None


def test_memory_mode_is_healthy(memory_infra: Infrastructure) -> None:
    report = memory_infra.health()
    assert report.ok
    assert tuple(report.components) == COMPONENTS


def test_without_settings_it_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_BACKEND", "memory")
    monkeypatch.setenv("CRM_HEALTH_TIMEOUT", "1.5")
    with build_infrastructure() as infra:
        assert infra.health_timeout == 1.5
    monkeypatch.setenv("CRM_BACKEND", "bogus")
    with pytest.raises(ConfigError, match="CRM_BACKEND"):
        build_infrastructure()


# --- stand-ins for the lifecycle and health tests, on both roots --------------------------------


class StandIn:
    """A minimal object playing every port's health_check and a close(); records its calls."""

    def __init__(self, name: str, log: list[str], *, healthy: Any = True) -> None:
        self.name = name
        self.log = log
        self.healthy = healthy

    def health_check(self) -> bool:
        if isinstance(self.healthy, BaseException):
            raise self.healthy
        if callable(self.healthy):
            return bool(self.healthy())
        return bool(self.healthy)

    def close(self) -> None:
        self.log.append(self.name)
        if self.name == "broken":
            raise RuntimeError("close failed")


class AdminStandIn(StandIn):
    """A stand-in database whose admin path (``execute_admin``) can fail on its own."""

    def __init__(self, log: list[str], *, admin_error: BaseException | None) -> None:
        super().__init__("database", log)
        self.admin_error = admin_error
        self.admin_queries: list[str] = []

    def execute_admin(self, query: str, params: Any = ()) -> list[dict[str, Any]]:
        self.admin_queries.append(query)
        if self.admin_error is not None:
            raise self.admin_error
        return [{"?column?": 1}]


THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stand-in")


class AsyncStandIn:
    """A stand-in's asyncio face: each call runs the sync stand-in in a thread, so a hanging
    check hangs as a real one would, without blocking the loop."""

    def __init__(self, inner: StandIn) -> None:
        self.inner = inner

    async def health_check(self) -> bool:
        # Not the loop's default executor: asyncio.run would wait for a hanging check.
        return await asyncio.get_running_loop().run_in_executor(THREADS, self.inner.health_check)

    async def execute_admin(self, query: str, params: Any = ()) -> list[dict[str, Any]]:
        return cast(AdminStandIn, self.inner).execute_admin(query, params)

    async def close(self) -> None:
        self.inner.close()


class Root:
    """Build and drive either composition root's infrastructure the same way."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def build(
        self,
        secrets: StandIn,
        db: StandIn,
        admin_db: StandIn,
        kv: StandIn,
        *,
        check: bool,
        closing: tuple[StandIn, ...] = (),
    ) -> Any:
        if self.kind == "sync":
            return Infrastructure(
                secrets=cast(Any, secrets),
                db=cast(Any, db),
                admin_db=cast(Any, admin_db),
                kv=cast(Any, kv),
                health_timeout=0.5,
                check_admin_path=check,
                closers=tuple((p.name, p.close) for p in closing),
            )
        wrapped = {id(p): AsyncStandIn(p) for p in (secrets, db, admin_db, kv, *closing)}
        return AsyncInfrastructure(
            secrets=cast(Any, wrapped[id(secrets)]),
            db=cast(Any, wrapped[id(db)]),
            admin_db=cast(Any, wrapped[id(admin_db)]),
            kv=cast(Any, wrapped[id(kv)]),
            health_timeout=0.5,
            check_admin_path=check,
            closers=tuple((p.name, wrapped[id(p)].close) for p in closing),
        )

    def health(self, infra: Any, timeout: float | None = None) -> HealthReport:
        if self.kind == "sync":
            return cast(HealthReport, infra.health(timeout))
        return cast(HealthReport, asyncio.run(infra.health(timeout)))

    def close(self, infra: Any) -> None:
        if self.kind == "sync":
            infra.close()
        else:
            asyncio.run(infra.aclose())

    def using(self, infra: Any, body: Callable[[], object]) -> None:
        """Run ``body`` inside ``with infra`` (or ``async with``)."""
        if self.kind == "sync":
            with infra:
                body()
            return

        async def run() -> None:
            async with infra:
                body()

        asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def root(request: pytest.FixtureRequest) -> Root:
    return Root(request.param)


def stand_in_infra(
    root: Root, log: list[str], *, names: tuple[str, str, str] = COMPONENTS, **health: Any
) -> Any:
    """Build an infrastructure of stand-ins; ``health`` maps a component to its behaviour."""
    secrets, db, kv = (
        StandIn(name, log, healthy=health.get(component, True))
        for name, component in zip(names, COMPONENTS, strict=True)
    )
    admin = StandIn("admin", log, healthy=health.get("admin", True))
    return root.build(secrets, db, admin, kv, check=False, closing=(secrets, db, kv))


def admin_path_infra(root: Root, admin_error: BaseException | None, *, check: bool) -> Any:
    log: list[str] = []
    db = AdminStandIn(log, admin_error=admin_error)
    # One object plays both ports, as in real mode.
    return root.build(StandIn("secrets", log), db, db, StandIn("keyvalue", log), check=check)


def admin_queries(infra: Any) -> list[str]:
    admin = infra.admin_db
    return cast(AdminStandIn, getattr(admin, "inner", admin)).admin_queries


def test_the_database_check_pings_the_admin_path_when_asked(root: Root) -> None:
    healthy = admin_path_infra(root, None, check=True)
    assert root.health(healthy).ok
    assert admin_queries(healthy) == ["SELECT 1"]

    broken = root.health(
        admin_path_infra(root, RuntimeError("admin role MARKER-admin-down"), check=True)
    )
    assert not broken.components["database"].ok
    assert "MARKER-admin-down" in (broken.components["database"].error or "")
    assert broken.components["secrets"].ok
    assert broken.components["keyvalue"].ok


def test_the_database_check_leaves_the_admin_path_alone_unless_asked(root: Root) -> None:
    infra = admin_path_infra(root, RuntimeError("never reached"), check=False)
    assert root.health(infra).ok
    assert admin_queries(infra) == []


def test_close_runs_in_reverse_order_of_opening_and_only_once(root: Root) -> None:
    log: list[str] = []
    infra = stand_in_infra(root, log)
    root.using(infra, lambda: None)
    root.close(infra)
    assert log == ["keyvalue", "database", "secrets"]


def test_a_failing_close_is_logged_and_the_others_still_close(
    root: Root, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    infra = stand_in_infra(root, log, names=("secrets", "broken", "keyvalue"))
    with caplog.at_level(logging.WARNING, logger="crm_infra"):
        root.close(infra)
    assert log == ["keyvalue", "broken", "secrets"]
    assert "closing broken failed" in caplog.text
    assert "RuntimeError: close failed" in caplog.text


def test_a_failing_close_does_not_mask_the_error_in_the_block(root: Root) -> None:
    log: list[str] = []
    infra = stand_in_infra(root, log, names=("secrets", "broken", "keyvalue"))

    def fail() -> None:
        raise ValueError("the real problem")

    with pytest.raises(ValueError, match="the real problem"):
        root.using(infra, fail)
    assert log == ["keyvalue", "broken", "secrets"]


def test_health_reports_every_component_by_name(root: Root) -> None:
    report = root.health(stand_in_infra(root, []))
    assert isinstance(report, HealthReport)
    assert tuple(report.components) == ("secrets", "database", "keyvalue")
    assert report.ok


def test_one_hanging_component_neither_hangs_the_report_nor_hides_the_others(
    root: Root,
) -> None:
    release = threading.Event()
    infra = stand_in_infra(
        root,
        [],
        keyvalue=lambda: release.wait(30),
        secrets=SecretStoreUnavailableError("Vault at http://127.0.0.1:1 is unreachable"),
    )
    try:
        report = root.health(infra, timeout=0.3)
    finally:
        release.set()
    assert not report.ok
    assert report.components["keyvalue"].error == "no answer within 0.3 s"
    assert report.components["secrets"].error == (
        "SecretStoreUnavailableError: Vault at http://127.0.0.1:1 is unreachable"
    )
    assert report.components["database"].ok


def test_database_health_includes_a_separate_admin_path(root: Root) -> None:
    report = root.health(stand_in_infra(root, [], admin=RuntimeError("admin pool exhausted")))
    assert report.components["database"].error == "RuntimeError: admin pool exhausted"


def test_health_keeps_a_long_error_whole(root: Root) -> None:
    reason = "the start " + "x" * 1000 + " the end"
    report = root.health(stand_in_infra(root, [], database=RuntimeError(reason)))
    assert report.components["database"].error == f"RuntimeError: {reason}"


def test_health_errors_carry_no_password(root: Root) -> None:
    report = root.health(
        stand_in_infra(
            root, [], database=RuntimeError("connect to postgresql://app:MARKER-pw@db/crm refused")
        )
    )
    error = report.components["database"].error
    assert error is not None
    assert "MARKER-pw" not in error
    assert "postgresql://app:***@db/crm" in error


def test_unhealthy_report_names_the_component_that_failed_to_start() -> None:
    report = unhealthy_report(
        StartupError(
            "database",
            "could not connect to PostgreSQL: down",
            {"secrets": 12.5, "database": 5000.0, "keyvalue": 3.0},
        )
    )
    assert not report.ok
    assert report.components["secrets"].ok
    assert report.components["secrets"].latency_ms == 12.5
    assert report.components["database"].latency_ms == 5000.0
    assert report.components["database"].error == "could not connect to PostgreSQL: down"
    # Valkey was built on its own after the database failed: its state is not hidden.
    assert report.components["keyvalue"].ok
    assert report.components["keyvalue"].latency_ms == 3.0


def test_unhealthy_report_lists_every_failed_component() -> None:
    error = StartupError(
        "database",
        "could not connect to PostgreSQL: down",
        {"secrets": 1.0, "database": 2.0, "keyvalue": 3.0},
        failures={
            "database": "could not connect to PostgreSQL: down",
            "keyvalue": "could not connect to Valkey: refused",
        },
    )
    assert str(error) == (
        "database: could not connect to PostgreSQL: down; "
        "keyvalue: could not connect to Valkey: refused"
    )
    report = unhealthy_report(error)
    assert report.components["secrets"].ok
    assert report.components["database"].error == "could not connect to PostgreSQL: down"
    assert report.components["keyvalue"].error == "could not connect to Valkey: refused"


def test_unhealthy_report_leaves_the_others_unchecked_only_when_the_secrets_failed() -> None:
    report = unhealthy_report(
        StartupError("secrets", "could not log in to Vault: refused", {"secrets": 4.0})
    )
    assert report.components["secrets"].error == "could not log in to Vault: refused"
    for name in ("database", "keyvalue"):
        assert report.components[name].error == "not checked: start-up stopped at secrets"


def test_startup_error_is_an_infra_error_naming_its_component() -> None:
    error = StartupError("keyvalue", "could not connect to Valkey")
    assert str(error) == "keyvalue: could not connect to Valkey"
    assert error.component == "keyvalue"
