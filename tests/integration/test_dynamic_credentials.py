"""Short-lived database credentials from a real OpenBao's database secrets engine, under a
live pool: rotations and token renewals with no failed call, a revoked lease, an unreachable
Vault, the maximum lifetime.

Leases here last seconds. The minute of calls from eight threads runs ``CRM_CREDS_SOAK_SECONDS``
(default 60, what CI runs).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any
from uuid import UUID, uuid4

import hvac
import pytest

from crm_infra import BackendUnavailableError, DatabaseCredentialsExpiredError
from crm_infra.adapters import PostgresClient, VaultClient
from crm_infra.adapters.postgres import DynamicCredentials
from crm_infra.adapters.postgres.credentials import CREDENTIAL_EVENTS
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.devservers.openbao import OpenBaoServer, openbao_dev_server
from tests.fixtures.common import wait_until
from tests.fixtures.database_engine import (
    DatabaseEngine,
    approle_login,
    drop_engine_logins,
    role_connections,
    role_exists,
    setup_database_engine,
)
from tests.fixtures.openbao import VaultMount
from tests.fixtures.tcp_proxy import TcpProxy
from tests.fixtures.telemetry import Telemetry

pytestmark = pytest.mark.slow

WHO = "SELECT current_user::text AS who"


def soak_seconds() -> float:
    """How long the eight threads call: ``CRM_CREDS_SOAK_SECONDS`` (default 60)."""
    return float(os.environ.get("CRM_CREDS_SOAK_SECONDS", "60"))


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, "crm_infra")
    return caplog


def client(engine: DatabaseEngine, vault: VaultClient, **options: Any) -> PostgresClient:
    """A client whose two paths both log in with credentials from the engine."""
    options.setdefault("pool_size", 4)
    return PostgresClient(
        engine.url,
        admin_connection_url=engine.url,
        credentials=DynamicCredentials(vault, engine.app_role, mount=engine.mount),
        admin_credentials=DynamicCredentials(vault, engine.admin_role, mount=engine.mount),
        **options,
    )


def who(db: PostgresClient, user: UUID | None = None) -> str:
    return str(db.execute_scalar(WHO, user_id=user or uuid4()))


def until_ok(call: Callable[[], str], *, timeout: float = 30.0) -> tuple[str, list[Exception]]:
    """Call until it succeeds; return its value and the errors on the way."""
    errors: list[Exception] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(), errors
        except Exception as exc:
            errors.append(exc)
            if time.monotonic() > deadline:
                raise


def first_failure(
    call: Callable[[], object], *, timeout: float = 60.0
) -> tuple[Exception, float]:
    """Call until it raises; return what it raised, and when."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            call()
        except Exception as exc:
            return exc, time.monotonic()
    pytest.fail(f"no failure within {timeout:g} s")


def test_a_minute_of_calls_from_eight_threads_across_rotations_and_token_renewals_fails_none(
    openbao_server: OpenBaoServer,
    openbao_root: Any,
    vault_mount: VaultMount,
    engine: DatabaseEngine,
    logs: pytest.LogCaptureFixture,
) -> None:
    # Leases of 6 s renewable to 14 s: new credentials about every 12 s. AppRole tokens of 8 s
    # renewable to 24 s: a new login about every 21 s, and with it new credentials again.
    engine.set_ttls(ttl=6, max_ttl=14)
    seen: set[str] = set()
    errors: list[str] = []
    calls = [0] * 8
    with (
        approle_login(
            openbao_root, engine.policy(vault_mount.name), token_ttl="8s", token_max_ttl="24s"
        ) as login,
        VaultClient(
            openbao_server.addr,
            role_id=login.role_id,
            secret_id=login.secret_id,
            approle_mount_point=login.mount,
            mount_point=vault_mount.name,
        ) as vault,
        client(engine, vault) as db,
    ):
        stop = time.monotonic() + soak_seconds()

        def work(k: int) -> None:
            user = uuid4()
            while time.monotonic() < stop:
                try:
                    seen.add(who(db, user))
                    calls[k] += 1
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert db.execute_admin("SELECT 1 AS one") == [{"one": 1}]
    assert errors == []
    assert all(n > 0 for n in calls)
    messages = [r.getMessage() for r in logs.records]
    rotations = sum("database credentials replaced" in m for m in messages)
    minimum = int(soak_seconds() // 15)
    assert rotations >= minimum, messages
    assert len(seen) >= minimum + 1
    assert any("Vault token renewed" in m for m in messages)
    if soak_seconds() >= 30:  # the first token meets its maximum after about 21 s
        assert any("logged in again" in m for m in messages)


def test_dynamic_logins_pass_the_role_check_and_stay_under_row_level_security(
    vault_mount: VaultMount, openbao_server: OpenBaoServer, engine: DatabaseEngine
) -> None:
    with (
        VaultClient(openbao_server.addr, engine.token(vault_mount.name)) as vault,
        client(engine, vault, pool_size=2) as db,
    ):
        alice, bob = uuid4(), uuid4()
        with db.admin_transaction() as tx:
            for user in (alice, bob):
                tx.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (user, f"{user}@x"))
                tx.execute(
                    "INSERT INTO contacts (user_id, name) VALUES (%s, 'c')", (user,)
                )
        assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=alice) == 1
        assert db.execute_scalar("SELECT count(*) FROM contacts", user_id=bob) == 1
        app_user = who(db)
        admin_user = db.execute_admin("SELECT current_user::text AS who")[0]["who"]
        assert app_user.startswith("v-")
        assert admin_user.startswith("v-")
        assert app_user != admin_user
        db.execute_admin("DELETE FROM contacts; DELETE FROM users")
        assert "password" not in repr(db).lower()


def test_a_revoked_lease_ends_its_connections_and_the_client_recovers_with_new_credentials(
    vault_mount: VaultMount,
    openbao_server: OpenBaoServer,
    engine: DatabaseEngine,
    creds_db: BootstrappedDatabase,
) -> None:
    engine.set_ttls(ttl=60, max_ttl=600)
    with (
        VaultClient(openbao_server.addr, engine.token(vault_mount.name)) as vault,
        client(engine, vault, pool_size=2) as db,
    ):
        db.pool.wait(timeout=10)
        before = who(db)
        assert role_connections(creds_db, before) == 2
        engine.revoke_all(engine.app_role)
        # The revocation statements end the role's sessions and drop it.
        wait_until(
            lambda: role_connections(creds_db, before) == 0 and not role_exists(creds_db, before),
            timeout=30,
            what="the revoked login's sessions to end",
        )
        after, errors = until_ok(lambda: who(db))
        # A call that meets a connection the server closed fails as an outage, and has the
        # client check its lease at once: new credentials, the other connections replaced.
        assert len(errors) <= 2, errors
        assert all(isinstance(e, BackendUnavailableError) for e in errors), errors
        assert after != before
        for _ in range(20):
            assert who(db) == after


def test_with_vault_unreachable_the_pool_serves_until_the_credentials_end_then_fails_typed(
    vault_mount: VaultMount,
    openbao_server: OpenBaoServer,
    engine: DatabaseEngine,
    logs: pytest.LogCaptureFixture,
    telemetry: Telemetry,
) -> None:
    engine.set_ttls(ttl=9, max_ttl=600)
    token = engine.token(vault_mount.name)
    with (
        TcpProxy(openbao_server.port) as proxy,
        VaultClient(f"http://127.0.0.1:{proxy.port}", token, timeout=1) as vault,
    ):
        opened = time.monotonic()
        with client(engine, vault, pool_size=2, pool_timeout=2) as db:
            first = who(db)
            proxy.blackhole()  # the lease ends 9 s after it was read: Vault never hears again
            wait_until(
                lambda: "could not renew them" in logs.text,
                timeout=30,
                what="a failed renewal",
            )
            failed = sum(
                p.value for p in telemetry.points(CREDENTIAL_EVENTS)
                if p.attributes["crm.event"] == "renewal_failed"
                and p.attributes["crm.database.creds_role"] == engine.app_role
            )
            assert failed >= 1  # the failed renewal is counted too
            assert who(db) == first  # still served on the credentials held

            def still_first() -> None:
                assert who(db) == first

            error, failed_at = first_failure(still_first)
            assert isinstance(error, DatabaseCredentialsExpiredError), error
            # Given up a margin (1.5 s) before their end, never earlier.
            assert failed_at >= opened + 9.0 - 1.5
            assert engine.app_role in str(error)
            assert "ended" in str(error)
            assert "ended without renewal or replacement" in logs.text
            # Vault answers again: new credentials, and calls work again.
            proxy.heal()
            proxy.cut()
            after, errors = until_ok(lambda: who(db), timeout=60)
            assert after != first
            assert all(isinstance(e, DatabaseCredentialsExpiredError) for e in errors), errors


def test_with_vault_stopped_the_pool_serves_until_the_credentials_end_then_fails_typed(
    creds_db: BootstrappedDatabase, manager_url: str, logs: pytest.LogCaptureFixture
) -> None:
    # A Vault of its own, stopped for good: nothing revokes the lease at its end, so only the
    # client's own accounting ends the use of the credentials.
    with ExitStack() as stopping:
        own = stopping.enter_context(openbao_dev_server())
        root = hvac.Client(url=own.addr, token=own.token, timeout=10)
        engine = setup_database_engine(root, creds_db, manager_url)
        engine.set_ttls(ttl=9, max_ttl=600)
        try:
            with VaultClient(own.addr, own.token, timeout=1) as vault:
                opened = time.monotonic()
                with client(engine, vault, pool_size=2, pool_timeout=2) as db:
                    first = who(db)
                    stopping.close()  # Vault stops
                    wait_until(
                        lambda: "could not renew them" in logs.text,
                        timeout=30,
                        what="a failed renewal",
                    )
                    assert who(db) == first

                    def still_first() -> None:
                        assert who(db) == first

                    error, failed_at = first_failure(still_first)
                    assert isinstance(error, DatabaseCredentialsExpiredError), error
                    assert failed_at >= opened + 9.0 - 1.5
                    assert "cannot connect" in str(error)
        finally:
            for role in (engine.app_role, engine.admin_role):
                drop_engine_logins(creds_db, role)
            root.adapter.close()


def test_at_the_maximum_lifetime_new_credentials_take_over_with_no_failed_call(
    vault_mount: VaultMount,
    openbao_server: OpenBaoServer,
    engine: DatabaseEngine,
    creds_db: BootstrappedDatabase,
    telemetry: Telemetry,
) -> None:
    engine.set_ttls(ttl=4, max_ttl=8)
    with (
        VaultClient(openbao_server.addr, engine.token(vault_mount.name)) as vault,
        client(engine, vault, pool_size=2) as db,
    ):
        first = who(db)
        current = first
        deadline = time.monotonic() + 60
        while current == first:
            current = who(db)  # never raises: the switch happens before the end
            assert time.monotonic() < deadline, "no new credentials before the maximum"
        # The first login's connections were retired; at its end Vault dropped it.
        wait_until(
            lambda: role_connections(creds_db, first) == 0 and not role_exists(creds_db, first),
            timeout=30,
            what="the first login to end",
        )
        assert who(db) != first
    # Each step of the credentials' lives is counted, by event and engine role.
    counted = {
        (p.attributes["crm.event"], p.attributes["crm.database.creds_role"]): p.value
        for p in telemetry.points(CREDENTIAL_EVENTS)
    }
    role = engine.app_role
    assert counted.get(("issued", role), 0) == 1
    assert counted.get(("renewed", role), 0) >= 1
    assert counted.get(("replaced", role), 0) >= 1
    assert "renewal_failed" not in {event for event, _ in counted}
