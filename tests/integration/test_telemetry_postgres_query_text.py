"""Literals written into SQL text, and comments, reach no span on a real server: the user-scoped
and the admin path, sync and asyncio, alone and with psycopg's own instrumentation on; each
statement's ``db.query.text`` is the text with ``$n`` where the literals were."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from opentelemetry.trace import StatusCode

from crm_infra.adapters import AsyncPostgresClient, PostgresClient
from crm_infra.adapters.postgres.telemetry import UNPARSED
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.errors import InfraError
from tests.fixtures.telemetry import Telemetry

NEW_USER = "INSERT INTO users (email) VALUES (%s) RETURNING id"


def _statements(marker: str) -> list[tuple[str, str, str]]:
    """(operation, SQL with ``marker`` in literals and comments, what db.query.text shows)."""
    return [
        ("execute",
         f"SELECT count(*) FROM contacts WHERE name = '{marker}' /* {marker} */",
         "SELECT count(*) FROM contacts WHERE name = $1"),
        ("execute",
         f"SELECT count(*) FROM contacts WHERE name = %s OR name = E'{marker}\\n' -- {marker}",
         "SELECT count(*) FROM contacts WHERE name = %s OR name = $2"),
        ("transaction.execute",
         f"SELECT count(*) FROM contacts WHERE name = $q${marker}$q$ LIMIT 5",
         "SELECT count(*) FROM contacts WHERE name = $1 LIMIT $2"),
        ("execute_admin",
         f"SELECT count(*) FROM users WHERE email = '{marker}'; SELECT '{marker}' AS again",
         "SELECT count(*) FROM users WHERE email = $1; SELECT $2 AS again"),
        ("execute_admin",
         f"-- {marker}\nSELECT count(*) FROM users WHERE email = U&'{marker}'",
         "SELECT count(*) FROM users WHERE email = $1"),
    ]


def _run(db: PostgresClient, user: UUID, marker: str) -> int:
    """Run the statements of :func:`_statements`, and two that fail; return how many fail."""
    for operation, sql, _ in _statements(marker):
        if operation == "execute":
            db.execute(sql, ("x",) if "%s" in sql else (), user_id=user)
        elif operation == "transaction.execute":
            with db.transaction(user) as tx:
                tx.execute(sql)
        else:
            db.execute_admin(sql)
    with pytest.raises(InfraError):  # refused before it is sent: it does not parse
        db.execute(f"SELEC name FROM contacts WHERE name = '{marker}'", user_id=user)
    with pytest.raises(InfraError):  # sent, and the server says why (quoting it)
        db.execute_admin(f"SELECT * FROM users WHERE email = '{marker}")
    return 2


async def _run_async(db: AsyncPostgresClient, user: UUID, marker: str) -> int:
    """:func:`_run` on the asyncio client."""
    for operation, sql, _ in _statements(marker):
        if operation == "execute":
            await db.execute(sql, ("x",) if "%s" in sql else (), user_id=user)
        elif operation == "transaction.execute":
            async with db.transaction(user) as tx:
                await tx.execute(sql)
        else:
            await db.execute_admin(sql)
    with pytest.raises(InfraError):
        await db.execute(f"SELEC name FROM contacts WHERE name = '{marker}'", user_id=user)
    with pytest.raises(InfraError):
        await db.execute_admin(f"SELECT * FROM users WHERE email = '{marker}")
    return 2


def _check(telemetry: Telemetry, marker: str, failures: int) -> None:
    everything = "\n".join(span.to_json() for span in telemetry.spans())
    assert marker not in everything
    shown = [
        (str(attributes["crm.operation"]), attributes.get("db.query.text"))
        for span in telemetry.ours()
        if (attributes := span.attributes or {}).get("db.query.text") is not None
    ]
    expected = [(operation, text) for operation, _, text in _statements(marker)]
    assert shown[: len(expected)] == expected
    assert shown[len(expected):] == [("execute", UNPARSED), ("execute_admin", UNPARSED)]
    failed = [s for s in telemetry.ours() if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == failures


@pytest.fixture(params=[False, True], ids=["alone", "with-driver-instrumentation"])
def recorded(request: pytest.FixtureRequest) -> Telemetry:
    fixture = "driver_instrumentation" if request.param else "telemetry"
    telemetry: Telemetry = request.getfixturevalue(fixture)
    return telemetry


def test_no_literal_or_comment_reaches_a_span(
    recorded: Telemetry, pg_database: BootstrappedDatabase
) -> None:
    marker = f"planted-literal-{uuid4().hex}"
    with PostgresClient(
        pg_database.app_url, 2, admin_connection_url=pg_database.admin_url
    ) as db:
        user: UUID = db.execute_admin(NEW_USER, (f"{uuid4().hex}@example.com",))[0]["id"]
        recorded.clear()
        failures = _run(db, user, marker)
    _check(recorded, marker, failures)


@pytest.mark.asyncio
async def test_no_literal_or_comment_reaches_a_span_of_the_asyncio_client(
    recorded: Telemetry, pg_database: BootstrappedDatabase
) -> None:
    marker = f"planted-literal-{uuid4().hex}"
    async with AsyncPostgresClient(
        pg_database.app_url, 2, admin_connection_url=pg_database.admin_url
    ) as db:
        user: UUID = (await db.execute_admin(NEW_USER, (f"{uuid4().hex}@example.com",)))[0]["id"]
        recorded.clear()
        failures = await _run_async(db, user, marker)
    _check(recorded, marker, failures)
