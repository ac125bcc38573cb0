"""The leak scan: planted user ids, parameter values, literals written into SQL text, key
suffixes, user ids and names at the head of a key, secret values, the Vault token, AppRole
credentials and the database and Valkey passwords appear nowhere in what OpenTelemetry
receives (every span's name, attributes, events and status, every metric point and its
attributes), through successful calls and failing ones, sync and asyncio, with the drivers'
own instrumentation on as well. Every failing call is one failed span."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypedDict
from urllib.parse import quote
from uuid import UUID, uuid4

import pytest
from opentelemetry.trace import StatusCode

from crm_infra.adapters import (
    AsyncPostgresClient,
    AsyncValkeyClient,
    AsyncVaultClient,
    PostgresClient,
    ValkeyClient,
    VaultClient,
)
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.devservers.openbao import OpenBaoServer
from crm_infra.errors import InfraError
from crm_infra.redaction import password_of
from tests.fixtures.database_engine import AppRoleLogin, approle_login
from tests.fixtures.openbao import VaultMount, create_token, read_policy
from tests.fixtures.telemetry import Telemetry
from tests.fixtures.valkey import TOPOLOGY_PASSWORD, running_valkey

_REFUSED = (InfraError, ValueError, TypeError)


class Planted:
    """The markers planted in one test, and how many calls were made to fail."""

    def __init__(self) -> None:
        self.markers: list[str] = []
        self.failures = 0

    def marker(self, what: str) -> str:
        made = f"planted-{what}-{uuid4().hex}"
        self.markers.append(made)
        return made

    def fails(self, call: Callable[[], object]) -> None:
        """Make ``call``, which must fail with one of crm-infra's errors or a refusal."""
        with pytest.raises(_REFUSED):
            call()
        self.failures += 1

    async def fails_async(self, call: Callable[[], Awaitable[object]]) -> None:
        with pytest.raises(_REFUSED):
            await call()
        self.failures += 1


def _database_calls(db: PostgresClient, planted: Planted) -> None:
    email = planted.marker("email") + "@example.com"
    user: UUID = db.execute_admin("INSERT INTO users (email) VALUES (%s) RETURNING id", (email,))[
        0
    ]["id"]
    planted.markers += [str(user), user.hex]
    name, phone = planted.marker("name"), planted.marker("phone")
    db.execute("INSERT INTO contacts (name, phone) VALUES (%s, %s)", (name, phone), user_id=user)
    db.execute_one("SELECT * FROM contacts WHERE name = %s", (name,), user_id=user)
    with db.transaction(user) as tx:
        tx.execute("UPDATE contacts SET phone = %s WHERE name = %s", (phone, name))
    with db.admin_transaction() as admin:
        admin.execute("SELECT * FROM users WHERE email = %s", (email,))
    with db.connection(user) as conn:
        conn.execute("SELECT count(*) FROM contacts WHERE name = %s", (name,))
    # Values written into the SQL text, against the advice: the span shows placeholders.
    literal, comment = planted.marker("literal"), planted.marker("comment")
    db.execute(f"SELECT count(*) FROM contacts WHERE name = '{literal}' /* {comment} */",
               user_id=user)
    db.execute_admin(f"SELECT count(*) FROM users WHERE email = $${planted.marker('dollar')}$$")
    # Failures whose messages quote the value: a duplicate key, a cast, a bad user id.
    planted.fails(lambda: db.execute_admin("INSERT INTO users (email) VALUES (%s)", (email,)))
    planted.fails(lambda: db.execute("SELECT %s::int", (name,), user_id=user))
    not_a_user = planted.marker("user")
    planted.fails(lambda: db.execute("SELECT 1", user_id=not_a_user))
    planted.fails(lambda: db.execute(f"SELECT '{planted.marker('cast')}'::int", user_id=user))


async def _database_calls_async(db: AsyncPostgresClient, planted: Planted) -> None:
    email = planted.marker("email") + "@example.com"
    rows = await db.execute_admin("INSERT INTO users (email) VALUES (%s) RETURNING id", (email,))
    user: UUID = rows[0]["id"]
    planted.markers += [str(user), user.hex]
    name, phone = planted.marker("name"), planted.marker("phone")
    await db.execute(
        "INSERT INTO contacts (name, phone) VALUES (%s, %s)", (name, phone), user_id=user
    )
    await db.execute_one("SELECT * FROM contacts WHERE name = %s", (name,), user_id=user)
    async with db.transaction(user) as tx:
        await tx.execute("UPDATE contacts SET phone = %s WHERE name = %s", (phone, name))
    async with db.admin_transaction() as admin:
        await admin.execute("SELECT * FROM users WHERE email = %s", (email,))
    async with db.connection(user) as conn:
        await conn.execute("SELECT count(*) FROM contacts WHERE name = %s", (name,))
    literal = planted.marker("literal")
    await db.execute(f"SELECT count(*) FROM contacts WHERE name = '{literal}'", user_id=user)
    await planted.fails_async(
        lambda: db.execute_admin("INSERT INTO users (email) VALUES (%s)", (email,))
    )
    await planted.fails_async(lambda: db.execute("SELECT %s::int", (name,), user_id=user))
    not_a_user = planted.marker("user")
    await planted.fails_async(lambda: db.execute("SELECT 1", user_id=not_a_user))


def _valkey_calls(kv: ValkeyClient, planted: Planted) -> None:
    suffix, value = planted.marker("suffix"), planted.marker("value")
    kv.set(f"session:{suffix}", value)
    kv.get(f"session:{suffix}")
    kv.set_json(f"profile:{suffix}", {"secret": value})
    kv.get_json(f"profile:{suffix}")
    kv.hit(f"rate:{suffix}", 60)
    # An identifier at the head of a key, against the advice: not shown as a prefix.
    user, name = str(uuid4()), planted.marker("name").replace("-", "")
    planted.markers.append(user)
    kv.set(f"{user}:cart", value)
    kv.set(f"{name}:cart", value)
    kv.set(f"{planted.marker('upper').upper()}:cart", value)
    planted.fails(lambda: kv.incr(f"session:{suffix}"))  # not an integer
    planted.fails(lambda: kv.get_json(f"session:{suffix}"))  # not JSON
    planted.fails(lambda: kv.set(f"session:{suffix}", value, expire_seconds=-1))  # refused
    kv.delete(f"session:{suffix}")


async def _valkey_calls_async(kv: AsyncValkeyClient, planted: Planted) -> None:
    suffix, value = planted.marker("suffix"), planted.marker("value")
    await kv.set(f"session:{suffix}", value)
    await kv.get(f"session:{suffix}")
    await kv.set_json(f"profile:{suffix}", {"secret": value})
    await kv.get_json(f"profile:{suffix}")
    await kv.hit(f"rate:{suffix}", 60)
    user = str(uuid4())
    planted.markers.append(user)
    await kv.set(f"{user}:cart", value)
    await planted.fails_async(lambda: kv.incr(f"session:{suffix}"))
    await planted.fails_async(lambda: kv.get_json(f"session:{suffix}"))
    await kv.delete(f"session:{suffix}")


def _vault_calls(vault: VaultClient, mount: VaultMount, planted: Planted) -> None:
    secret = planted.marker("secret")
    mount.put("crm/email", {"api_key": secret, "from_address": "crm@example.com"})
    vault.get_email_credentials()
    planted.fails(lambda: vault.get_secret("crm/nothing-here"))
    planted.fails(lambda: vault.get_secret(f"../{planted.marker('path')}"))
    vault.health_check()


async def _vault_calls_async(vault: AsyncVaultClient, mount: VaultMount, planted: Planted) -> None:
    secret = planted.marker("secret")
    mount.put("crm/email", {"api_key": secret, "from_address": "crm@example.com"})
    await vault.get_email_credentials()
    await planted.fails_async(lambda: vault.get_secret("crm/nothing-here"))
    await vault.health_check()


def _scan(telemetry: Telemetry, markers: list[str]) -> list[str]:
    shown = [span.to_json() for span in telemetry.spans()]
    data = telemetry.reader.get_metrics_data()
    if data is not None:
        shown.append(data.to_json())
    everything = "\n".join(shown)
    return [m for m in markers if m in everything]


def _failed(telemetry: Telemetry) -> int:
    return sum(s.status.status_code is StatusCode.ERROR for s in telemetry.ours())


@pytest.fixture
def approle(openbao_root: Any, vault_mount: VaultMount) -> Iterator[AppRoleLogin]:
    with approle_login(
        openbao_root, read_policy(vault_mount.name, "crm/*"), token_ttl="1h", token_max_ttl="1h"
    ) as login:
        yield login


@pytest.fixture(params=[False, True], ids=["alone", "with-driver-instrumentation"])
def recorded(request: pytest.FixtureRequest) -> Telemetry:
    fixture = "driver_instrumentation" if request.param else "telemetry"
    telemetry: Telemetry = request.getfixturevalue(fixture)
    return telemetry


class _LoggingIn(TypedDict):
    role_id: str
    secret_id: str
    approle_mount_point: str
    mount_point: str


def _logging_in(approle: AppRoleLogin, mount: VaultMount) -> _LoggingIn:
    """A Vault client's arguments to log in with ``approle`` and read from ``mount``."""
    return {
        "role_id": approle.role_id,
        "secret_id": approle.secret_id,
        "approle_mount_point": approle.mount,
        "mount_point": mount.name,
    }


def _secrets(
    pg_database: BootstrappedDatabase, token: str, approle: AppRoleLogin, planted: Planted
) -> None:
    passwords = [password_of(pg_database.app_url), password_of(pg_database.admin_url)]
    assert all(passwords)  # the test roles log in with passwords
    planted.markers += [token, approle.role_id, approle.secret_id, *(p for p in passwords if p)]


def test_nothing_planted_reaches_spans_or_metrics(  # noqa: PLR0917 - pytest fixtures
    recorded: Telemetry,
    pg_database: BootstrappedDatabase,
    valkey_url: str,
    openbao_server: OpenBaoServer,
    openbao_root: Any,
    vault_mount: VaultMount,
    approle: AppRoleLogin,
) -> None:
    planted = Planted()
    token = create_token(openbao_root, read_policy(vault_mount.name, "crm/*"))
    _secrets(pg_database, token, approle, planted)
    valkey_password = planted.marker("valkey-password")
    with (
        running_valkey(password=valkey_password) as guarded,
        PostgresClient(pg_database.app_url, 2, admin_connection_url=pg_database.admin_url) as db,
        ValkeyClient(valkey_url, key_prefix="crm:") as kv,
        ValkeyClient(guarded.url, key_prefix="crm:") as guarded_kv,
        VaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as vault,
        VaultClient(openbao_server.addr, **_logging_in(approle, vault_mount)) as by_approle,
    ):
        _database_calls(db, planted)
        _valkey_calls(kv, planted)
        _valkey_calls(guarded_kv, planted)
        _vault_calls(vault, vault_mount, planted)
        _vault_calls(by_approle, vault_mount, planted)
    assert len(recorded.ours()) >= 40  # the scan saw the calls
    # Nothing planted is shown, and each failing call is one failed span.
    assert (_scan(recorded, planted.markers), _failed(recorded)) == ([], planted.failures)


@pytest.mark.asyncio
async def test_nothing_planted_reaches_spans_or_metrics_from_asyncio(  # noqa: PLR0917
    recorded: Telemetry,
    pg_database: BootstrappedDatabase,
    valkey_url: str,
    openbao_server: OpenBaoServer,
    openbao_root: Any,
    vault_mount: VaultMount,
    approle: AppRoleLogin,
) -> None:
    planted = Planted()
    token = create_token(openbao_root, read_policy(vault_mount.name, "crm/*"))
    _secrets(pg_database, token, approle, planted)
    async with (
        AsyncPostgresClient(
            pg_database.app_url, 2, admin_connection_url=pg_database.admin_url
        ) as db,
        AsyncValkeyClient(valkey_url, key_prefix="crm:") as kv,
        AsyncVaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as vault,
        AsyncVaultClient(openbao_server.addr, **_logging_in(approle, vault_mount)) as by_approle,
    ):
        await _database_calls_async(db, planted)
        await _valkey_calls_async(kv, planted)
        await _vault_calls_async(vault, vault_mount, planted)
        await _vault_calls_async(by_approle, vault_mount, planted)
    assert len(recorded.ours()) >= 25
    assert (_scan(recorded, planted.markers), _failed(recorded)) == ([], planted.failures)


def test_a_valkey_topologys_password_reaches_no_span(
    telemetry: Telemetry, valkey_sentinel_url: str, valkey_cluster_url: str
) -> None:
    planted = Planted()
    planted.markers += [TOPOLOGY_PASSWORD, quote(TOPOLOGY_PASSWORD, safe="")]
    for url in (valkey_sentinel_url, valkey_cluster_url):
        with ValkeyClient(url, key_prefix="crm:") as kv:
            _valkey_calls(kv, planted)
            kv.health_check()
    assert len(telemetry.ours()) >= 20
    assert (_scan(telemetry, planted.markers), _failed(telemetry)) == ([], planted.failures)


def test_the_scan_finds_a_planted_value_where_one_is(telemetry: Telemetry) -> None:
    from opentelemetry import trace

    planted = Planted()
    marker = planted.marker("control")
    with trace.get_tracer("control").start_as_current_span("x", attributes={"v": marker}):
        pass
    assert _scan(telemetry, planted.markers) == [marker]
