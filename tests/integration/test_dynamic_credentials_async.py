"""AsyncPostgresClient on short-lived credentials from a real OpenBao: rotations under eight
concurrent tasks with no failed call, and a revoked lease recovered from.

The keeper is the same object as under the threaded client (its Vault requests run in its own
thread, never on the event loop); what differs is how the pool is drained: on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from uuid import UUID, uuid4

import pytest

from crm_infra import BackendUnavailableError
from crm_infra.adapters import AsyncPostgresClient, VaultClient
from crm_infra.adapters.postgres import DynamicCredentials
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.devservers.openbao import OpenBaoServer
from tests.fixtures.database_engine import (
    DatabaseEngine,
    role_connections,
    role_exists,
)
from tests.fixtures.openbao import VaultMount

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

WHO = "SELECT current_user::text AS who"


def client(engine: DatabaseEngine, vault: VaultClient, **options: Any) -> AsyncPostgresClient:
    options.setdefault("pool_size", 4)
    return AsyncPostgresClient(
        engine.url,
        admin_connection_url=engine.url,
        credentials=DynamicCredentials(vault, engine.app_role, mount=engine.mount),
        admin_credentials=DynamicCredentials(vault, engine.admin_role, mount=engine.mount),
        **options,
    )


async def who(db: AsyncPostgresClient, user: UUID | None = None) -> str:
    return str(await db.execute_scalar(WHO, user_id=user or uuid4()))


async def test_rotations_under_eight_tasks_fail_no_call(
    vault_mount: VaultMount,
    openbao_server: OpenBaoServer,
    engine: DatabaseEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "crm_infra")
    engine.set_ttls(ttl=4, max_ttl=8)  # new credentials about every 7 s
    seen: set[str] = set()
    errors: list[str] = []
    with VaultClient(openbao_server.addr, engine.token(vault_mount.name)) as vault:
        async with client(engine, vault) as db:
            stop = time.monotonic() + 60

            async def work() -> None:
                user = uuid4()
                while time.monotonic() < stop and len(seen) < 4:
                    try:
                        seen.add(await who(db, user))
                    except Exception as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")

            await asyncio.gather(*(work() for _ in range(8)))
            assert await db.execute_admin("SELECT 1 AS one") == [{"one": 1}]
    assert errors == []
    assert len(seen) >= 4, "fewer than three rotations within a minute"
    replaced = [r for r in caplog.records if "database credentials replaced" in r.getMessage()]
    assert len(replaced) >= 3


async def test_a_revoked_lease_ends_its_connections_and_the_client_recovers(
    vault_mount: VaultMount,
    openbao_server: OpenBaoServer,
    engine: DatabaseEngine,
    creds_db: BootstrappedDatabase,
) -> None:
    engine.set_ttls(ttl=60, max_ttl=600)
    with VaultClient(openbao_server.addr, engine.token(vault_mount.name)) as vault:
        async with client(engine, vault, pool_size=2) as db:
            pool = db.pool
            assert pool is not None
            await pool.wait(timeout=10)
            before = await who(db)
            assert role_connections(creds_db, before) == 2
            engine.revoke_all(engine.app_role)
            deadline = time.monotonic() + 30
            while role_connections(creds_db, before) or role_exists(creds_db, before):
                assert time.monotonic() < deadline, "the revoked login's sessions did not end"
                await asyncio.sleep(0.05)
            errors: list[Exception] = []
            while True:
                try:
                    after = await who(db)
                    break
                except Exception as exc:
                    errors.append(exc)
                    assert time.monotonic() < deadline + 30, errors
            assert len(errors) <= 2, errors
            assert all(isinstance(e, BackendUnavailableError) for e in errors), errors
            assert after != before
            for _ in range(20):
                assert await who(db) == after
