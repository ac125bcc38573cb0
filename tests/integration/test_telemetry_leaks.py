"""The leak scan: planted user ids, parameter values, key suffixes, secret values, the Vault
token and the database passwords appear nowhere in what OpenTelemetry receives (every span's
name, attributes, events and status, every metric point and its attributes), through
successful calls and failing ones, with the drivers' own instrumentation on as well."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import pytest

from crm_infra.adapters import PostgresClient, ValkeyClient, VaultClient
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.devservers.openbao import OpenBaoServer
from crm_infra.errors import InfraError
from crm_infra.redaction import password_of
from tests.fixtures.openbao import VaultMount, create_token, read_policy
from tests.fixtures.telemetry import Telemetry


def _marker(what: str) -> str:
    return f"planted-{what}-{uuid4().hex}"


def _failing(call: Callable[[], object]) -> None:
    with contextlib.suppress(InfraError, ValueError, TypeError):
        call()


def _database_calls(db: PostgresClient, markers: list[str]) -> None:
    email = _marker("email") + "@example.com"
    markers.append(email)
    user: UUID = db.execute_admin("INSERT INTO users (email) VALUES (%s) RETURNING id", (email,))[
        0
    ]["id"]
    markers += [str(user), user.hex]
    name, phone = _marker("name"), _marker("phone")
    markers += [name, phone]
    db.execute("INSERT INTO contacts (name, phone) VALUES (%s, %s)", (name, phone), user_id=user)
    db.execute_one("SELECT * FROM contacts WHERE name = %s", (name,), user_id=user)
    with db.transaction(user) as tx:
        tx.execute("UPDATE contacts SET phone = %s WHERE name = %s", (phone, name))
    with db.admin_transaction() as admin:
        admin.execute("SELECT * FROM users WHERE email = %s", (email,))
    with db.connection(user) as conn:
        conn.execute("SELECT count(*) FROM contacts WHERE name = %s", (name,))
    # Failures whose messages quote the value: a duplicate key, a cast, a bad user id.
    _failing(lambda: db.execute_admin("INSERT INTO users (email) VALUES (%s)", (email,)))
    _failing(lambda: db.execute("SELECT %s::int", (name,), user_id=user))
    not_a_user = _marker("user")
    markers.append(not_a_user)
    _failing(lambda: db.execute("SELECT 1", user_id=not_a_user))


def _valkey_calls(kv: ValkeyClient, markers: list[str]) -> None:
    suffix, value = _marker("suffix"), _marker("value")
    markers += [suffix, value]
    kv.set(f"session:{suffix}", value)
    kv.get(f"session:{suffix}")
    kv.set_json(f"profile:{suffix}", {"secret": value})
    kv.get_json(f"profile:{suffix}")
    kv.hit(f"rate:{suffix}", 60)
    _failing(lambda: kv.incr(f"session:{suffix}"))  # not an integer
    _failing(lambda: kv.get_json(f"session:{suffix}"))  # not JSON
    kv.delete(f"session:{suffix}")


def _vault_calls(vault: VaultClient, mount: VaultMount, markers: list[str]) -> None:
    secret = _marker("secret")
    markers.append(secret)
    mount.put("crm/email", {"api_key": secret, "from_address": "crm@example.com"})
    vault.get_email_credentials()
    _failing(lambda: vault.get_secret("crm/nothing-here"))
    vault.health_check()


def _scan(telemetry: Telemetry, markers: list[str]) -> list[str]:
    shown = [span.to_json() for span in telemetry.spans()]
    data = telemetry.reader.get_metrics_data()
    if data is not None:
        shown.append(data.to_json())
    everything = "\n".join(shown)
    return [m for m in markers if m in everything]


@pytest.mark.parametrize("drivers", [False, True], ids=["alone", "with-driver-instrumentation"])
def test_nothing_planted_reaches_spans_or_metrics(  # noqa: PLR0917 - pytest fixtures
    request: pytest.FixtureRequest,
    drivers: bool,
    pg_database: BootstrappedDatabase,
    valkey_url: str,
    openbao_server: OpenBaoServer,
    openbao_root: Any,
    vault_mount: VaultMount,
) -> None:
    telemetry: Telemetry = request.getfixturevalue(
        "driver_instrumentation" if drivers else "telemetry"
    )
    token = create_token(openbao_root, read_policy(vault_mount.name, "crm/*"))
    passwords = [password_of(pg_database.app_url), password_of(pg_database.admin_url)]
    markers = [token, *(p for p in passwords if p)]
    assert len(markers) == 3  # the test roles log in with passwords
    with (
        PostgresClient(
            pg_database.app_url, 2, admin_connection_url=pg_database.admin_url
        ) as db,
        ValkeyClient(valkey_url, key_prefix="crm:") as kv,
        VaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as vault,
    ):
        _database_calls(db, markers)
        _valkey_calls(kv, markers)
        _vault_calls(vault, vault_mount, markers)
    spans = telemetry.ours()
    assert len(spans) >= 20  # the scan saw the calls
    assert any(s.status.description for s in spans)  # and failures among them
    assert _scan(telemetry, markers) == []


def test_the_scan_finds_a_planted_value_where_one_is(telemetry: Telemetry) -> None:
    from opentelemetry import trace

    marker = _marker("control")
    with trace.get_tracer("control").start_as_current_span("x", attributes={"v": marker}):
        pass
    assert _scan(telemetry, [marker]) == [marker]
