"""PostgreSQL port calls on a real server: one span each, sync and asyncio alike, with the SQL
template and the row count; one span also with psycopg's own instrumentation on; duration
points per operation and the pools' state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from uuid import UUID, uuid4

import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from psycopg.conninfo import conninfo_to_dict

from crm_infra.adapters import AsyncPostgresClient, PostgresClient
from crm_infra.adapters.postgres.errors import PostgresIntegrityError
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.telemetry.pools import client_number
from tests.fixtures.telemetry import Telemetry

NEW_USER = "INSERT INTO users (email) VALUES (%s) RETURNING id"
BY_NAME = "SELECT id, name FROM contacts WHERE name = %s"
ADD_CONTACT = "INSERT INTO contacts (name) VALUES (%s) RETURNING id"

# (crm.operation, span name, the span's parent operation or None) for every call below.
EXPECTED = [
    ("execute_admin", "INSERT", None),
    ("execute", "INSERT", None),
    ("execute", "SELECT", None),  # execute_one
    ("execute", "SELECT", None),  # execute_scalar
    ("transaction.execute", "INSERT", "transaction"),
    ("transaction.execute", "SELECT", "transaction"),  # in the nested block
    ("transaction", "transaction", "transaction"),  # the nested block itself
    ("transaction", "transaction", None),
    ("health_check", "SELECT", None),
    ("admin_transaction.execute", "SELECT", "admin_transaction"),
    ("admin_transaction", "admin_transaction", None),
    ("connection", "connection", None),
    ("admin_connection", "admin_connection", None),
]


@pytest.fixture
def client(pg_database: BootstrappedDatabase) -> Iterator[PostgresClient]:
    """A client of this test's own: connections made now, under this test's instrumentation."""
    with PostgresClient(
        pg_database.app_url, 2, admin_connection_url=pg_database.admin_url
    ) as made:
        yield made


@pytest_asyncio.fixture
async def async_client(pg_database: BootstrappedDatabase) -> AsyncIterator[AsyncPostgresClient]:
    async with AsyncPostgresClient(
        pg_database.app_url, 2, admin_connection_url=pg_database.admin_url
    ) as made:
        yield made


def _email() -> str:
    return f"{uuid4().hex}@example.com"


def every_call(db: PostgresClient) -> UUID:
    """Run each operation of both ports once, in the order of :data:`EXPECTED`."""
    user: UUID = db.execute_admin(NEW_USER, (_email(),))[0]["id"]
    db.execute(ADD_CONTACT, ("Ada",), user_id=user)
    assert db.execute_one(BY_NAME, ("Ada",), user_id=user) is not None
    db.execute_scalar(BY_NAME, ("Ada",), user_id=user)
    with db.transaction(user) as tx:
        tx.execute(ADD_CONTACT, ("Grace",))
        with db.transaction(user) as inner:
            inner.execute(BY_NAME, ("Grace",))
    db.health_check()
    with db.admin_transaction() as admin:
        admin.execute("SELECT count(*) FROM users")
    with db.connection(user) as conn:
        conn.execute("SELECT 1")
    with db.admin_connection() as conn:
        conn.execute("SELECT 1")
    return user


async def every_call_async(db: AsyncPostgresClient) -> UUID:
    """:func:`every_call` on the asyncio client."""
    user: UUID = (await db.execute_admin(NEW_USER, (_email(),)))[0]["id"]
    await db.execute(ADD_CONTACT, ("Ada",), user_id=user)
    assert await db.execute_one(BY_NAME, ("Ada",), user_id=user) is not None
    await db.execute_scalar(BY_NAME, ("Ada",), user_id=user)
    async with db.transaction(user) as tx:
        await tx.execute(ADD_CONTACT, ("Grace",))
        async with db.transaction(user) as inner:
            await inner.execute(BY_NAME, ("Grace",))
    await db.health_check()
    async with db.admin_transaction() as admin:
        await admin.execute("SELECT count(*) FROM users")
    async with db.connection(user) as conn:
        await conn.execute("SELECT 1")
    async with db.admin_connection() as conn:
        await conn.execute("SELECT 1")
    return user


def _shape(spans: list[ReadableSpan]) -> list[tuple[str, str, str | None]]:
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    shape = []
    for span in spans:
        attributes = span.attributes or {}
        parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        parent_op = None if parent is None else str((parent.attributes or {})["crm.operation"])
        shape.append((str(attributes["crm.operation"]), span.name, parent_op))
    return shape


def _check_attributes(telemetry: Telemetry, database: BootstrappedDatabase) -> None:
    for span in telemetry.ours():
        attributes = span.attributes or {}
        assert attributes["db.system.name"] == "postgresql"
        assert attributes["server.address"] == "127.0.0.1"
        assert isinstance(attributes["server.port"], int)
        assert attributes["db.namespace"] == database.database
        block = span.name in {"transaction", "admin_transaction", "connection", "admin_connection"}
        assert span.kind is (SpanKind.INTERNAL if block else SpanKind.CLIENT)
        assert span.status.status_code is StatusCode.UNSET
    (insert,) = [s for s in telemetry.named("execute") if s.name == "INSERT"]
    assert insert.attributes is not None
    assert insert.attributes["db.query.text"] == ADD_CONTACT
    assert insert.attributes["db.operation.name"] == "INSERT"
    assert insert.attributes["db.response.returned_rows"] == 1
    assert insert.attributes["crm.port"] == "UserScopedDB"
    (admin,) = telemetry.named("execute_admin")
    assert admin.attributes is not None
    assert admin.attributes["crm.port"] == "AdminDB"


def test_every_operation_is_one_span_in_its_block(
    telemetry: Telemetry, client: PostgresClient, pg_database: BootstrappedDatabase
) -> None:
    telemetry.clear()
    every_call(client)
    assert _shape(telemetry.ours()) == EXPECTED
    assert telemetry.spans() == telemetry.ours()  # the raw blocks' own SELECT 1 not traced
    _check_attributes(telemetry, pg_database)


@pytest.mark.asyncio
async def test_every_operation_of_the_asyncio_client_is_one_span_in_its_block(
    telemetry: Telemetry, async_client: AsyncPostgresClient, pg_database: BootstrappedDatabase
) -> None:
    telemetry.clear()
    await every_call_async(async_client)
    assert _shape(telemetry.ours()) == EXPECTED
    _check_attributes(telemetry, pg_database)


def test_with_psycopgs_instrumentation_on_only_the_raw_blocks_own_statements_add_spans(
    driver_instrumentation: Telemetry, pg_database: BootstrappedDatabase
) -> None:
    telemetry = driver_instrumentation
    with PostgresClient(
        pg_database.app_url, 2, admin_connection_url=pg_database.admin_url
    ) as client:
        telemetry.clear()
        every_call(client)
    assert _shape(telemetry.ours()) == EXPECTED
    theirs = telemetry.theirs()
    # The caller's own statements in connection() and admin_connection(), as children of
    # those blocks; nothing of what crm-infra sends (admin SQL, BEGIN, set_config, COMMIT).
    assert [(s.name, (s.attributes or {}).get("db.statement")) for s in theirs] == [
        ("SELECT", "SELECT 1"),
        ("SELECT", "SELECT 1"),
    ]
    blocks = {s.context.span_id: s.name for s in telemetry.ours() if s.context is not None}
    assert [blocks[s.parent.span_id] for s in theirs if s.parent is not None] == [
        "connection",
        "admin_connection",
    ]


@pytest.mark.asyncio
async def test_with_psycopgs_instrumentation_on_the_asyncio_client_adds_no_span_of_its_own(
    driver_instrumentation: Telemetry, pg_database: BootstrappedDatabase
) -> None:
    telemetry = driver_instrumentation
    async with AsyncPostgresClient(
        pg_database.app_url, 2, admin_connection_url=pg_database.admin_url
    ) as client:
        telemetry.clear()
        await every_call_async(client)
    assert _shape(telemetry.ours()) == EXPECTED
    theirs = telemetry.theirs()
    assert len(theirs) == 2  # the raw blocks' SELECT 1, nothing else


def test_a_failed_statement_says_its_class_and_sqlstate_and_nothing_more(
    telemetry: Telemetry, client: PostgresClient
) -> None:
    email = f"planted-{uuid4().hex}@example.com"
    client.execute_admin(NEW_USER, (email,))
    with pytest.raises(PostgresIntegrityError):
        client.execute_admin(NEW_USER, (email,))
    span = telemetry.named("execute_admin")[-1]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "PostgresIntegrityError"
    assert span.attributes is not None
    assert span.attributes["db.response.status_code"] == "23505"
    assert str(span.attributes["error.type"]).endswith(".PostgresIntegrityError")
    assert email not in span.to_json()  # the server's message quotes the duplicate value


def test_calls_are_timed_by_port_and_operation(
    telemetry: Telemetry, client: PostgresClient
) -> None:
    every_call(client)
    counts = {
        (p.attributes["crm.port"], p.attributes["crm.operation"]): p.count
        for p in telemetry.points("crm.call.duration")
    }
    assert counts[("UserScopedDB", "execute")] == 3
    assert counts[("UserScopedDB", "transaction")] == 2
    assert counts[("AdminDB", "admin_transaction.execute")] == 1
    assert all(p.sum > 0 for p in telemetry.points("crm.call.duration"))


def test_each_pool_reports_its_size_use_waits_and_limit(
    telemetry: Telemetry, client: PostgresClient, pg_database: BootstrappedDatabase
) -> None:
    every_call(client)
    where = f"127.0.0.1:{_port(pg_database)}/{pg_database.database}"
    number = client_number(client)
    app, admin = f"crm-app {where} #{number}", f"crm-admin {where} #{number}"
    assert set(client.pool_stats()) == {app, admin}
    assert client.pool_stats()[app].max == 2
    assert client.pool_stats()[app].requests is not None
    limits = {p.attributes["db.client.connection.pool.name"]: p.value
              for p in telemetry.points("db.client.connection.max")}
    assert limits[app] == 2
    states = {(p.attributes["db.client.connection.pool.name"],
               p.attributes["db.client.connection.state"]) for p in
              telemetry.points("db.client.connection.count")}
    assert {(app, "idle"), (app, "used"), (admin, "idle"), (admin, "used")} <= states
    requests = {p.attributes["db.client.connection.pool.name"]: p.value
                for p in telemetry.points("crm.pool.requests")}
    assert requests[app] == 6  # each user-scoped call and block borrowed one
    assert {p.attributes["db.client.connection.pool.name"]
            for p in telemetry.points("crm.pool.wait_time")} >= {app, admin}
    assert {p.attributes["db.client.connection.pool.name"]
            for p in telemetry.points("db.client.connection.pending_requests")} >= {app, admin}


def _port(database: BootstrappedDatabase) -> str:
    return str(conninfo_to_dict(database.app_url).get("port") or 5432)
