"""The one-round-trip ``execute`` path (a libpq pipeline) against the real server: errors leave
the connection usable and clean, plans are reused, and a changed table is re-planned."""

from __future__ import annotations

import dis
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow, dict_row

from crm_infra import (
    BackendUnavailableError,
    DatabaseError,
    DatabaseInputError,
    IntegrityError,
    RowSecurityError,
    TransactionUsageError,
    UnsafeQueryError,
)
from crm_infra.adapters import PostgresClient
from crm_infra.adapters.postgres import pipeline as _pg_pipeline
from crm_infra.adapters.postgres.base import left_clean
from crm_infra.adapters.postgres.statements import StatementCache, check_call, prepare_call
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.ports import Params, Row


@pytest.fixture
def client(pg_database: BootstrappedDatabase) -> Iterator[PostgresClient]:
    """A client with ONE pooled connection, so every call reuses the connection under test."""
    with PostgresClient(
        pg_database.app_url, 1, admin_connection_url=pg_database.admin_url, min_pool_size=1
    ) as db:
        yield db


def _user(db: PostgresClient) -> UUID:
    user: UUID = db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid4()}@example.com",)
    )[0]["id"]
    return user


def _session_state(db: PostgresClient) -> dict[str, object]:
    """What the pooled connection's session holds, read outside the client's calls."""
    conn = db.pool.getconn()
    try:
        row = conn.execute(
            "SELECT current_setting('app.current_user_id', true) AS user_setting, "
            "(SELECT count(*) FROM pg_prepared_statements) AS prepared"
        ).fetchone()
        assert row is not None
        return {**row, "status": conn.pgconn.transaction_status}
    finally:
        db.pool.putconn(conn)


@pytest.mark.parametrize(
    ("query", "params", "error"),
    [
        ("SELEC id FROM contacts WHERE id = %s", (uuid4(),), DatabaseError),  # refused at Parse
        ("SELECT %s::int", ("not a number",), DatabaseError),  # refused at Bind
        ("INSERT INTO contacts (user_id, name) VALUES (%s, 'x')", (uuid4(),), RowSecurityError),
        ("SELECT 1 / (%s::int - 1)", (1,), DatabaseError),  # fails while executing
    ],
)
def test_a_failed_call_leaves_the_connection_idle_usable_and_without_a_user(
    client: PostgresClient, query: str, params: tuple[object, ...], error: type[Exception]
) -> None:
    user = _user(client)
    with pytest.raises(error):
        client.execute(query, params, user_id=user)
    state = _session_state(client)
    assert state["status"] == psycopg.pq.TransactionStatus.IDLE
    assert state["user_setting"] in (None, "")
    client.execute("INSERT INTO contacts (name) VALUES (%s)", ("Ann",), user_id=user)
    assert client.execute("SELECT name FROM contacts", user_id=user) == [{"name": "Ann"}]


def test_a_statement_is_prepared_once_even_when_its_first_run_fails(
    client: PostgresClient,
) -> None:
    user = _user(client)
    contact = uuid4()
    client.execute(  # another SQL text takes the id first
        "INSERT INTO contacts (id, name) VALUES (%s, 'first')", (contact,), user_id=user
    )
    insert = "INSERT INTO contacts (id, user_id, name) VALUES (%s, %s, 'x')"
    before = int(str(_session_state(client)["prepared"]))
    for _ in range(5):
        with pytest.raises(IntegrityError):
            client.execute(insert, (contact, user), user_id=user)  # fails from its first run
    assert _session_state(client)["prepared"] == before + 1


@contextmanager
def _one_row_table(db: BootstrappedDatabase) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    """A table ``(a int)`` holding 1 that the app role may read, and a superuser connection
    to change its shape; dropped afterwards."""
    table = f"shape_{uuid4().hex[:12]}"
    superuser = make_conninfo(db.superuser_url, dbname=db.database)
    with psycopg.connect(superuser, autocommit=True) as su:
        su.execute(f"CREATE TABLE {table} (a int)")
        su.execute(f"INSERT INTO {table} VALUES (1)")
        su.execute(f"GRANT SELECT ON {table} TO {db.app_role}")
        try:
            yield table, su
        finally:
            su.execute(f"DROP TABLE {table}")


def test_a_table_that_changed_shape_is_planned_again(
    client: PostgresClient, pg_database: BootstrappedDatabase
) -> None:
    with _one_row_table(pg_database) as (table, su):
        user = uuid4()
        assert client.execute(f"SELECT * FROM {table}", user_id=user) == [{"a": 1}]
        prepared = _session_state(client)["prepared"]
        su.execute(f"ALTER TABLE {table} ADD COLUMN b text DEFAULT 'new'")
        # The prepared plan's result type no longer holds; the server says so without
        # running anything, and the client prepares the statement afresh.
        assert client.execute(f"SELECT * FROM {table}", user_id=user) == [{"a": 1, "b": "new"}]
        assert _session_state(client)["prepared"] == prepared  # the stale one is gone


@contextmanager
def _cached_connection(db: BootstrappedDatabase) -> Iterator[psycopg.Connection[DictRow]]:
    """An application-role connection set up as the pool sets one up."""
    with psycopg.connect(
        db.app_url, autocommit=True, row_factory=dict_row, prepare_threshold=None
    ) as conn:
        yield conn


def _run(
    cache: StatementCache, conn: psycopg.Connection[DictRow], query: str, params: Params
) -> list[Row]:
    call = prepare_call(cache.state(conn), check_call(query, params))
    return cache.run(conn, call, set_user=[str(uuid4()).encode()])


def _prepared_names(conn: psycopg.Connection[DictRow]) -> list[str]:
    rows = conn.execute("SELECT name FROM pg_prepared_statements ORDER BY name").fetchall()
    return [r["name"] for r in rows]


def test_a_full_statement_cache_runs_statements_unnamed(
    pg_database: BootstrappedDatabase,
) -> None:
    cache = StatementCache(max_per_connection=1)
    with _cached_connection(pg_database) as conn:
        for i in range(4):
            assert _run(cache, conn, f"SELECT %s::int + {i} AS n", (1,)) == [{"n": 1 + i}]
        names = _prepared_names(conn)
        assert len(names) == 1
        assert names[0].startswith("_crm_")


@pytest.mark.parametrize(
    "query", ["SELECT $1 AS x", "SELECT $1::int AS x", "SELECT %s::int AS a, $2 AS b"]
)
def test_a_dollar_parameter_in_the_sql_is_refused_before_any_io(
    client: PostgresClient, query: str
) -> None:
    # The server would bind it to the wrong value or to none (a protocol error, which would
    # look like an outage): refused first, naming it.
    params = (1,) if "%s" in query else ()
    with pytest.raises(UnsafeQueryError, match=r"\$n placeholders of its own") as caught:
        client.execute(query, params, user_id=uuid4())
    assert not isinstance(caught.value, BackendUnavailableError)
    assert client.execute_scalar("SELECT 1 AS one", user_id=uuid4()) == 1


def test_sql_text_that_cannot_be_encoded_keeps_the_connection(client: PostgresClient) -> None:
    pid = client.execute_scalar("SELECT pg_backend_pid() AS pid", user_id=uuid4())
    with pytest.raises(DatabaseInputError):
        client.execute("SELECT 1 AS \ud800x", user_id=uuid4())
    assert client.execute_scalar("SELECT pg_backend_pid() AS pid", user_id=uuid4()) == pid


def _interrupt_after(call_name: str) -> Callable[[FrameType, str, object], Any]:
    """A trace function raising KeyboardInterrupt right after the pipeline's code calls
    ``pgconn.<call_name>`` (where a signal handler's exception can arrive: CPython runs
    handlers after a C call returns)."""
    functions = (  # the statement's own messages first: they are sent in every call
        _pg_pipeline._send_statement,
        _pg_pipeline.pipeline,
    )
    code = next(
        f.__code__
        for f in functions
        if any(ins.argval == call_name for ins in dis.get_instructions(f.__code__))
    )
    instructions = list(dis.get_instructions(code))
    start = next(i for i, ins in enumerate(instructions) if ins.argval == call_name)
    call = next(i for i in range(start, len(instructions)) if instructions[i].opname == "CALL")
    target = instructions[call + 1].offset
    armed = [True]

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode" and frame.f_lasti == target and armed[0]:
            armed[0] = False
            raise KeyboardInterrupt(f"after {call_name}")
        return local

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code is code:
            frame.f_trace_opcodes = True
            return local
        return None

    return tracer


@pytest.mark.parametrize(
    "call_name", ["enter_pipeline_mode", "send_prepare", "send_query_prepared", "pipeline_sync"]
)
def test_an_interrupt_inside_the_pipeline_never_leaves_a_pooled_connection_in_it(
    client: PostgresClient, call_name: str
) -> None:
    user = _user(client)
    query = f"SELECT %s::text AS v -- {call_name}"  # new text: the call prepares it
    sys.settrace(_interrupt_after(call_name))
    try:
        with pytest.raises(KeyboardInterrupt):
            client.execute(query, ("x",), user_id=user)
    finally:
        sys.settrace(None)
    conn = client.pool.getconn()
    try:
        assert conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
    finally:
        client.pool.putconn(conn)
    # Every path works on the pool afterwards.
    assert client.health_check()
    with client.transaction(user) as tx:
        tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
    with client.connection(user) as raw:
        assert raw.execute("SELECT count(*) AS n FROM contacts").fetchone() == {"n": 1}
    assert client.execute(query, ("y",), user_id=user) == [{"v": "y"}]


def test_a_connection_left_in_pipeline_mode_is_never_used(client: PostgresClient) -> None:
    conn = client.pool.getconn()
    conn.pgconn.enter_pipeline_mode()
    client.pool.putconn(conn)
    with pytest.raises(TransactionUsageError, match="pipeline mode"):
        client.execute("SELECT 1 AS one", user_id=uuid4())
    assert conn.closed
    assert client.execute_scalar("SELECT 1 AS one", user_id=uuid4()) == 1


def test_a_result_value_python_cannot_load_is_not_called_bad_input(
    client: PostgresClient,
) -> None:
    user = _user(client)
    contact = client.execute_scalar(
        "INSERT INTO contacts (name) VALUES ('Ann') RETURNING id", user_id=user
    )
    update = "UPDATE contacts SET name = 'Bea' WHERE id = %s RETURNING 'infinity'::date AS d"
    with pytest.raises(DatabaseError, match="the statement ran") as caught:
        client.execute(update, (contact,), user_id=user)
    assert not isinstance(caught.value, DatabaseInputError)
    # It ran, and outside a transaction block it committed: the error says so, and it did.
    assert client.execute("SELECT name FROM contacts", user_id=user) == [{"name": "Bea"}]
    with pytest.raises(DatabaseError, match="the statement ran") as caught:
        client.execute_admin("SELECT 'infinity'::date AS d")
    assert not isinstance(caught.value, DatabaseInputError)
    with (
        pytest.raises(DatabaseError, match="the statement ran") as caught,
        client.transaction(user) as tx,
    ):
        tx.execute("SELECT 'infinity'::date AS d")
    assert not isinstance(caught.value, DatabaseInputError)


def test_an_int_python_cannot_write_as_text_is_bad_input(client: PostgresClient) -> None:
    huge = 10**5000  # past Python's 4300-digit limit for int-to-text conversion
    user = uuid4()
    with pytest.raises(DatabaseInputError, match="cannot be sent"):
        client.execute("SELECT %s::numeric AS n", (huge,), user_id=user)
    with (
        pytest.raises(DatabaseInputError, match="cannot be sent"),
        client.transaction(user) as tx,
    ):
        tx.execute("SELECT %s::numeric AS n", (huge,))
    assert client.execute_scalar("SELECT 1 AS one", user_id=user) == 1


def test_a_table_that_changed_shape_is_planned_afresh_in_the_next_transaction(
    client: PostgresClient, pg_database: BootstrappedDatabase
) -> None:
    user = uuid4()
    with _one_row_table(pg_database) as (table, su):
        with client.transaction(user) as tx:
            assert tx.execute(f"SELECT * FROM {table}") == [{"a": 1}]
        su.execute(f"ALTER TABLE {table} ADD COLUMN b int DEFAULT 2")
        # As a transaction's first statement it is run again (the transaction begun anew)...
        with client.transaction(user) as tx:
            assert tx.execute(f"SELECT * FROM {table}") == [{"a": 1, "b": 2}]
        su.execute(f"ALTER TABLE {table} ADD COLUMN c int DEFAULT 3")
        # ...after another statement the error aborts the transaction (nothing can be run
        # again there)...
        with pytest.raises(DatabaseError), client.transaction(user) as tx:  # noqa: PT012 - the block body is what is tested
            tx.execute("SELECT 1 AS one")
            tx.execute(f"SELECT * FROM {table}")
        # ...but the stale statement is known: the next transaction prepares it afresh.
        with client.transaction(user) as tx:
            tx.execute("SELECT 1 AS one")
            assert tx.execute(f"SELECT * FROM {table}") == [{"a": 1, "b": 2, "c": 3}]


def test_a_call_refused_before_any_io_leaves_no_deadline_behind(
    pg_database: BootstrappedDatabase,
) -> None:
    # statement_timeout 0.2 s: the client's own deadline is 2.2 s.
    with PostgresClient(
        pg_database.app_url,
        1,
        min_pool_size=1,
        statement_timeout=0.2,
        admin_connection_url=pg_database.admin_url,
        admin_statement_timeout=0.2,
    ) as db:
        user = uuid4()
        with pytest.raises(DatabaseInputError), db.transaction(user) as tx:
            tx.execute("SELECT %s::text AS v", ("\ud800",))  # refused while encoding
        with pytest.raises(DatabaseInputError):
            db.execute_admin("SELECT %s::text AS v", ("\ud800",))
        time.sleep(2.6)  # past the deadline the refused calls would have armed
        assert db.execute_scalar("SELECT 1 AS one", user_id=user) == 1
        assert db.execute_admin("SELECT 2 AS two") == [{"two": 2}]


def _give_back_through(client: PostgresClient, where: Callable[..., object]) -> None:
    """A call whose connection goes back through ``where``: only one that did not end well
    (a failed block, left in its transaction) is tidied."""
    if where is PostgresClient._tidy:
        with client.transaction(uuid4()) as tx:
            tx.execute("SELECT 1 AS one")
            raise ValueError("the block fails: its transaction is rolled back")
    client.execute("SELECT 1 AS one", user_id=uuid4())


@pytest.mark.parametrize(
    "where",
    [left_clean, PostgresClient._tidy, PostgresClient._handed_back],
    ids=["checking", "tidying", "noting"],
)
def test_an_interrupt_while_a_connection_is_given_back_loses_no_pool_slot(
    client: PostgresClient, where: Callable[..., object]
) -> None:
    code = where.__code__
    armed = [True]

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code is code and event == "call" and armed[0]:
            armed[0] = False
            raise KeyboardInterrupt("while tidying")
        return None

    sys.settrace(tracer)
    try:
        with pytest.raises(KeyboardInterrupt):
            _give_back_through(client, where)
    finally:
        sys.settrace(None)
    assert not armed[0]  # the interrupt came where it was meant to
    # The pool of one still has its slot (the interrupted connection was closed and replaced).
    assert client.execute_scalar("SELECT 2 AS two", user_id=uuid4()) == 2


def test_a_statement_that_fails_to_parse_takes_no_place_in_the_cache(
    pg_database: BootstrappedDatabase,
) -> None:
    cache = StatementCache(max_per_connection=2)
    with _cached_connection(pg_database) as conn:
        for _ in range(5):
            with pytest.raises(psycopg.errors.UndefinedTable):
                _run(cache, conn, "SELECT %s::int AS n FROM no_such_table", (1,))
        for i in range(2):
            assert _run(cache, conn, f"SELECT %s::int + {i} AS n", (1,)) == [{"n": 1 + i}]
        assert len(_prepared_names(conn)) == 2  # both prepared: the cache had room
