"""Short-lived database credentials under telemetry: through issue, renewal and the
replacement of the application's login (the admin login's lease outlives the test), no
generated login name, password or lease id, nor the Vault token, appears in any span or metric
point."""

from __future__ import annotations

import time
from uuid import uuid4

import pytest

from crm_infra.adapters import PostgresClient, VaultClient
from crm_infra.adapters.postgres import DynamicCredentials
from crm_infra.devservers.openbao import OpenBaoServer
from tests.fixtures.database_engine import DatabaseEngine
from tests.fixtures.openbao import VaultMount
from tests.fixtures.telemetry import Telemetry

pytestmark = pytest.mark.slow

WHO = "SELECT current_user::text AS who"


def _held(credentials: DynamicCredentials) -> list[str]:
    """What the credentials hold now that must never be shown: login, password, lease."""
    held = credentials._current
    assert held is not None
    return [held.user, held.password, held.grant.lease_id]


def test_no_login_password_or_lease_reaches_spans_or_metrics(
    vault_mount: VaultMount,
    openbao_server: OpenBaoServer,
    engine: DatabaseEngine,
    telemetry: Telemetry,
) -> None:
    engine.set_ttls(ttl=4, max_ttl=8)
    token = engine.token(vault_mount.name)
    planted = [token]
    with VaultClient(openbao_server.addr, token) as vault:
        app = DynamicCredentials(vault, engine.app_role, mount=engine.mount)
        admin = DynamicCredentials(vault, engine.admin_role, mount=engine.mount)
        with PostgresClient(
            engine.url, 2, admin_connection_url=engine.url, credentials=app,
            admin_credentials=admin,
        ) as db:
            first = str(db.execute_scalar(WHO, user_id=uuid4()))
            db.execute_admin("SELECT 1")
            planted += _held(app) + _held(admin)
            current, deadline = first, time.monotonic() + 60
            while current == first:  # past the maximum lifetime: new credentials take over
                current = str(db.execute_scalar(WHO, user_id=uuid4()))
                assert time.monotonic() < deadline, "no new credentials before the maximum"
            planted += _held(app)
            assert db.health_check() is True
    operations = {(s.attributes or {}).get("crm.operation") for s in telemetry.ours()}
    assert operations >= {"execute", "execute_admin", "health_check"}
    shown = [s.to_json() for s in telemetry.spans()]
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    shown.append(data.to_json())
    everything = "\n".join(shown)
    assert [p for p in planted if p and p in everything] == []
