"""PostgresClient against the real server: the user-context basics, and what only a real
server can show (round trips, timeouts, pooled connections, raw access)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterator
from decimal import Decimal
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import tuple_row

from crm_infra import (
    ConfigError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidUserIdError,
    MissingUserContextError,
    QueryTimeoutError,
    TransactionUsageError,
)
from crm_infra.adapters import PostgresClient, PostgresError
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.ports import AdminDB, UserScopedDB
from tests.fixtures.common import free_port
from tests.fixtures.roundtrips import RoundTripCounter


def make_user(db: PostgresClient) -> UUID:
    user_id: UUID = db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid4()}@example.com",)
    )[0]["id"]
    return user_id


def test_the_client_implements_both_ports(pg_db: PostgresClient) -> None:
    assert isinstance(pg_db, UserScopedDB)
    assert isinstance(pg_db, AdminDB)


# --- the user context: set per call, isolated per user ----------------------------------------


def test_connection_sets_rls_context(pg_db: PostgresClient) -> None:
    user_id = uuid4()
    with pg_db.connection(user_id) as conn:
        row = conn.execute("SELECT current_setting('app.current_user_id') AS v").fetchone()
    assert row == {"v": str(user_id)}


def test_rls_context_cleared_after_connection(pg_db: PostgresClient) -> None:
    with pg_db.connection(uuid4()):
        pass
    for _ in range(pg_db.pool.get_stats()["pool_size"] + 1):  # every pooled connection
        conn = pg_db.pool.getconn()
        try:
            row = conn.execute(
                "SELECT current_setting('app.current_user_id', true) AS v"
            ).fetchone()
        finally:
            pg_db.pool.putconn(conn)
        assert row is not None
        assert row["v"] in (None, "")


def test_execute_admin_returns_list_of_dicts(pg_db: PostgresClient) -> None:
    assert pg_db.execute_admin("SELECT 1 AS num, 'hello' AS word") == [{"num": 1, "word": "hello"}]


def test_execute_one_returns_single_dict(pg_db: PostgresClient) -> None:
    assert pg_db.execute_one("SELECT 1 AS num", user_id=uuid4()) == {"num": 1}


def test_execute_one_returns_none_for_empty(pg_db: PostgresClient) -> None:
    assert pg_db.execute_one("SELECT 1 WHERE false", user_id=uuid4()) is None


def test_rls_filters_data(pg_db: PostgresClient) -> None:
    user_a, user_b = make_user(pg_db), make_user(pg_db)
    pg_db.execute_admin(
        "INSERT INTO contacts (id, user_id, name) VALUES (%s, %s, %s), (%s, %s, %s)",
        (uuid4(), user_a, "User A Contact", uuid4(), user_b, "User B Contact"),
    )
    contacts = pg_db.execute("SELECT * FROM contacts", user_id=user_a)
    assert len(contacts) == 1
    assert contacts[0]["name"] == "User A Contact"


def test_health_check_returns_true(pg_db: PostgresClient) -> None:
    assert pg_db.health_check() is True


# --- one round trip ------------------------------------------------------------------------------


@pytest.fixture
def counted(
    pg_database: BootstrappedDatabase,
) -> Iterator[tuple[PostgresClient, RoundTripCounter]]:
    params = conninfo_to_dict(pg_database.app_url)
    proxy = RoundTripCounter(str(params.get("host") or "127.0.0.1"), int(params["port"] or 5432))
    url = pg_database.app_url.replace(f":{params['port']}/", f":{proxy.port}/")
    client = PostgresClient(url, 1, min_pool_size=1, admin_connection_url=pg_database.admin_url)
    yield client, proxy
    client.close()
    proxy.close()


def test_execute_costs_one_round_trip(
    counted: tuple[PostgresClient, RoundTripCounter],
) -> None:
    client, proxy = counted
    user = make_user(client)
    query = "SELECT count(*) FROM contacts WHERE name = %s"
    client.execute(query, ("x",), user_id=user)  # the first call also prepares: still one
    proxy.reset()
    client.execute(query, ("y",), user_id=user)
    client.execute_scalar(query, ("z",), user_id=uuid4())
    client.execute("INSERT INTO contacts (name) VALUES (%s)", ("Ann",), user_id=user)
    assert proxy.turns == 3


def test_a_direct_connection_binds_its_set_user_statement_without_parsing_it(
    counted: tuple[PostgresClient, RoundTripCounter],
) -> None:
    """The unnamed set-user statement is parsed once per connection: no SQL can replace it
    (only a client's Parse can), and the client knows every message it sent. Anything else
    sent on the connection (a health check's simple query) makes the next call parse it again.
    """
    client, proxy = counted
    user = make_user(client)
    query = "SELECT count(*) AS n FROM contacts WHERE name = %s"
    client.execute(query, ("x",), user_id=user)
    proxy.reset()
    for name in ("a", "b", "c"):
        assert client.execute_scalar(query, (name,), user_id=uuid4()) == 0
    assert proxy.sent_messages()["P"] == 0  # bound, never parsed again
    assert proxy.sent_messages()["B"] == 6  # the user, then the statement, three times
    client.health_check()
    proxy.reset()
    me = client.execute_scalar(
        "SELECT current_setting('app.current_user_id') AS me", user_id=user
    )
    assert me == str(user)
    assert proxy.sent_messages()["P"] == 2  # the set-user statement again, and this one


def test_a_transaction_costs_one_round_trip_per_statement_plus_commit(
    counted: tuple[PostgresClient, RoundTripCounter],
) -> None:
    client, proxy = counted
    user = make_user(client)

    def work() -> None:
        with client.transaction(user) as tx:
            tx.execute("INSERT INTO contacts (name) VALUES ('Ann')")
            with client.transaction(user) as inner:  # the savepoint rides along too
                inner.execute("INSERT INTO contacts (name) VALUES ('Ben')")

    for _ in range(2):  # the first time the statements are parsed too, in the same messages
        proxy.reset()
        work()  # BEGIN, the user and the first insert; the savepoint and the second; COMMIT
        assert proxy.turns == 3
    proxy.reset()
    with client.transaction(user):
        pass
    assert proxy.turns == 0


# --- the user and the pool -------------------------------------------------------------------


def test_an_invalid_user_is_refused_before_any_io(pg_database: BootstrappedDatabase) -> None:
    client = PostgresClient(pg_database.app_url, 1)
    client.close()  # any I/O would now fail with a different error
    with pytest.raises(InvalidUserIdError):
        client.execute("SELECT 1", user_id="nope")
    with pytest.raises(MissingUserContextError):
        client.execute("SELECT 1")
    with pytest.raises(PostgresError):
        client.execute("SELECT 1", user_id=uuid4())


def test_the_user_setting_never_outlives_a_call(pg_db: PostgresClient) -> None:
    user = uuid4()
    pg_db.execute("SELECT 1", user_id=user)
    with pytest.raises(RuntimeError), pg_db.transaction(user) as tx:  # noqa: PT012 - the block body is what is tested
        tx.execute("SELECT 1")
        raise RuntimeError("boom")
    with pg_db.connection(user) as conn:
        conn.execute("SELECT 1")
    for _ in range(pg_db.pool.get_stats()["pool_size"] + 1):
        conn = pg_db.pool.getconn()
        try:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert conn.autocommit
            row = conn.execute(
                "SELECT current_setting('app.current_user_id', true) AS v"
            ).fetchone()
        finally:
            pg_db.pool.putconn(conn)
        assert row is not None
        assert row["v"] in (None, "")


def test_statements_survive_a_discard_all_through_raw_access(
    pg_database: BootstrappedDatabase,
) -> None:
    with PostgresClient(pg_database.app_url, 1, min_pool_size=1) as client:
        user = uuid4()
        assert client.execute_scalar("SELECT %s::int + 1", (1,), user_id=user) == 2
        with client.connection(user) as conn:
            conn.execute("COMMIT")
            conn.execute("DISCARD ALL")
        assert client.execute_scalar("SELECT %s::int + 1", (2,), user_id=user) == 3
        with client.connection(user) as conn:
            conn.execute("COMMIT")
            conn.execute("DEALLOCATE ALL")
        with client.transaction(user) as tx:
            assert tx.execute_scalar("SELECT %s::int + 1", (3,)) == 4


def test_a_rollback_keeps_the_prepared_statements(pg_database: BootstrappedDatabase) -> None:
    with PostgresClient(pg_database.app_url, 1, min_pool_size=1) as client:
        user = uuid4()
        for i in range(8):  # past psycopg's own prepare threshold
            with pytest.raises(RuntimeError), client.transaction(user) as tx:  # noqa: PT012 - the block body is what is tested
                tx.execute("SELECT %s::int", (i,))
                raise RuntimeError("roll back")
        assert client.execute_scalar("SELECT %s::int", (9,), user_id=user) == 9


def test_raw_connection_commits_on_exit_and_rolls_back_on_error(pg_db: PostgresClient) -> None:
    user = make_user(pg_db)
    with pg_db.connection(user) as conn:
        conn.execute("INSERT INTO contacts (name) VALUES ('Ann')")
    with pytest.raises(RuntimeError), pg_db.connection(user) as conn:  # noqa: PT012 - the block body is what is tested
        conn.execute("INSERT INTO contacts (name) VALUES ('Ben')")
        raise RuntimeError("boom")
    assert pg_db.execute("SELECT name FROM contacts", user_id=user) == [{"name": "Ann"}]


def test_admin_connection_bypasses_rls(pg_db: PostgresClient) -> None:
    a, b = make_user(pg_db), make_user(pg_db)
    pg_db.execute("INSERT INTO contacts (name) VALUES ('Ann')", user_id=a)
    pg_db.execute("INSERT INTO contacts (name) VALUES ('Bea')", user_id=b)
    with pg_db.admin_connection() as conn:
        rows = conn.execute("SELECT name FROM contacts ORDER BY name").fetchall()
    assert rows == [{"name": "Ann"}, {"name": "Bea"}]


def test_admin_work_without_an_admin_url_is_a_config_error(
    pg_database: BootstrappedDatabase,
) -> None:
    with PostgresClient(pg_database.app_url, 1) as client:
        with pytest.raises(ConfigError) as caught:
            client.execute_admin("SELECT 1")
        assert isinstance(caught.value, DatabaseError)
        assert "admin_connection_url" in str(caught.value)


# --- errors, timeouts, lifecycle -----------------------------------------------------------------


def test_errors_carry_the_sqlstate(pg_db: PostgresClient) -> None:
    with pytest.raises(PostgresError) as caught:
        pg_db.execute("SELECT * FROM no_such_table", user_id=uuid4())
    assert caught.value.sqlstate == "42P01"
    assert "no_such_table" in str(caught.value)
    assert isinstance(caught.value.__cause__, psycopg.Error)


def test_a_long_statement_times_out(pg_database: BootstrappedDatabase) -> None:
    with PostgresClient(pg_database.app_url, 1, statement_timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(QueryTimeoutError) as caught:
            client.execute("SELECT pg_sleep(5)", user_id=uuid4())
        assert time.monotonic() - started < 3
        assert isinstance(caught.value, PostgresError)
        assert client.execute_scalar("SELECT 1", user_id=uuid4()) == 1  # pool still fine


def test_an_unreachable_server_fails_fast_as_unavailable() -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError):
        PostgresClient(f"postgresql://app@127.0.0.1:{free_port()}/crm", 1, connect_timeout=2)
    assert time.monotonic() - started < 5


def test_an_exhausted_pool_times_out_as_unavailable(pg_database: BootstrappedDatabase) -> None:
    with (
        PostgresClient(pg_database.app_url, 1, pool_timeout=0.3) as client,
        client.transaction(uuid4()) as tx,
    ):
        tx.execute("SELECT 1")
        with pytest.raises(DatabaseUnavailableError):
            client.execute("SELECT 1", user_id=uuid4())


def test_close_is_idempotent_and_the_client_is_a_context_manager(
    pg_database: BootstrappedDatabase,
) -> None:
    with PostgresClient(pg_database.app_url, 1) as client:
        assert client.execute_scalar("SELECT 1", user_id=uuid4()) == 1
    client.close()
    assert "closed" in repr(client)
    with pytest.raises(PostgresError):
        client.execute("SELECT 1", user_id=uuid4())


def test_bad_settings_are_a_config_error(pg_database: BootstrappedDatabase) -> None:
    with pytest.raises(ConfigError, match="pool_size"):
        PostgresClient(pg_database.app_url, 0)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("statement_timeout", float("nan")),
        ("statement_timeout", 0),
        ("statement_timeout", 0.0004),  # the server's setting would round to 0: no limit
        ("admin_statement_timeout", float("inf")),
        ("connect_timeout", float("inf")),
        ("pool_timeout", float("nan")),
    ],
)
def test_timeouts_must_be_positive_finite_seconds(
    pg_database: BootstrappedDatabase, setting: str, value: float
) -> None:
    with pytest.raises(ConfigError, match=setting):
        PostgresClient(pg_database.app_url, 1, **{setting: value})  # type: ignore[arg-type]  # one float setting, named by the test


def test_a_value_error_of_the_callers_own_passes_through_admin_transaction(
    pg_db: PostgresClient,
) -> None:
    class NotFound(ValueError):
        pass

    with pytest.raises(NotFound), pg_db.admin_transaction() as tx:  # noqa: PT012 - the block body is what is tested
        tx.execute("SELECT 1 AS one")
        raise NotFound("customer 42")


def test_a_raw_block_that_leaves_psycopg_mid_transaction_does_not_spoil_the_pool(
    pg_database: BootstrappedDatabase,
) -> None:
    with PostgresClient(pg_database.app_url, 1, min_pool_size=1) as client:
        user = uuid4()
        with pytest.raises(PostgresError), client.connection(user) as raw:  # noqa: PT012 - the block body is what is tested
            left_open = raw.transaction()  # psycopg's own block, entered and never left
            left_open.__enter__()
            raw.execute("SELECT 1")
        # psycopg refused to roll that back, so the connection was closed, not pooled.
        assert client.execute_scalar("SELECT 1 AS one", user_id=user) == 1
        with client.connection(user) as raw:
            assert raw.execute("SELECT 2 AS two").fetchone() == {"two": 2}
        with client.transaction(user) as tx:
            assert tx.execute("SELECT 3 AS three") == [{"three": 3}]
        del left_open  # only now may it end (on the closed connection)


def test_a_broken_connection_is_replaced(pg_database: BootstrappedDatabase) -> None:
    with PostgresClient(
        pg_database.app_url,
        1,
        min_pool_size=1,
        health_check_interval=0,
        admin_connection_url=pg_database.admin_url,
    ) as client:
        pid = client.execute_scalar("SELECT pg_backend_pid()", user_id=uuid4())
        with psycopg.connect(pg_database.superuser_url, dbname=pg_database.database) as su:
            su.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # The idle check finds the dead connection and the pool opens a new one.
        assert client.execute_scalar("SELECT pg_backend_pid()", user_id=uuid4()) != pid


def test_a_semicolon_inside_a_literal_keeps_one_statement(pg_db: PostgresClient) -> None:
    user = make_user(pg_db)
    pg_db.execute("INSERT INTO contacts (name) VALUES ('a;b')", user_id=user)
    assert pg_db.execute("SELECT name FROM contacts", user_id=user) == [{"name": "a;b"}]
    for value in ("x", "y"):
        assert pg_db.execute_scalar("SELECT %s || ';' AS v", (value,), user_id=user) == f"{value};"


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        -(2**70),
        2**40,
        1.5,
        "text with 'quotes' and \\ backslash",
        "",
        b"\x00\xff",
        UUID("12345678-1234-5678-1234-567812345678"),
        Decimal("-12.345"),
        dt.date(2024, 2, 29),
        dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.UTC),
        dt.timedelta(days=1, seconds=5),
    ],
)
def test_values_round_trip_through_literals(pg_db: PostgresClient, value: object) -> None:
    user = uuid4()
    for _ in range(2):  # first call prepares, second reuses the plan
        assert pg_db.execute_scalar("SELECT %s AS v", (value,), user_id=user) == value


def test_nested_admin_transactions_are_savepoints(pg_db: PostgresClient) -> None:
    with pg_db.admin_transaction() as outer:
        outer.execute("INSERT INTO users (email) VALUES ('a@example.com')")
        with pytest.raises(RuntimeError), pg_db.admin_transaction() as inner:  # noqa: PT012 - the block body is what is tested
            inner.execute("INSERT INTO users (email) VALUES ('b@example.com')")
            raise RuntimeError("inner fails")
    assert pg_db.execute_admin("SELECT email FROM users") == [{"email": "a@example.com"}]


def test_an_admin_block_that_swallows_an_error_is_rolled_back(pg_db: PostgresClient) -> None:
    with pytest.raises(DatabaseError, match="aborted"), pg_db.admin_transaction() as tx:  # noqa: PT012 - the block body is what is tested
        tx.execute("INSERT INTO users (email) VALUES ('a@example.com')")
        with pytest.raises(DatabaseError):
            tx.execute("INSERT INTO users (email) VALUES (NULL)")
    assert pg_db.execute_admin("SELECT email FROM users") == []


def test_the_application_role_cannot_create_temporary_tables(pg_db: PostgresClient) -> None:
    with pg_db.connection(uuid4()) as raw:
        row = raw.execute(
            "SELECT has_database_privilege(current_user, current_database(), 'TEMP') AS t"
        ).fetchone()
    assert row == {"t": False}
    # Dynamic SQL gets past any check of the text; the missing privilege stops it anyway.
    with (
        pytest.raises(TransactionUsageError),  # the block swallowed the error below
        pg_db.connection(uuid4()) as raw,
        pytest.raises(psycopg.Error, match="permission denied"),
    ):
        raw.execute("CREATE TEMP TABLE staging (a int)")


def test_a_raw_block_that_swallowed_an_error_does_not_pass_for_committed(
    pg_db: PostgresClient,
) -> None:
    user = make_user(pg_db)
    with pytest.raises(TransactionUsageError, match="rolled back"), pg_db.connection(user) as raw:  # noqa: PT012 - the block body is what is tested
        raw.execute("INSERT INTO contacts (name) VALUES ('Ann')")
        with contextlib.suppress(psycopg.Error):
            raw.execute("SELECT 1 / 0")
    assert pg_db.execute("SELECT name FROM contacts", user_id=user) == []


@pytest.mark.parametrize("change", ["tpc", "read_only", "row_factory", "isolation_level"])
def test_what_a_raw_block_changes_in_psycopg_never_reaches_the_next_borrower(
    pg_database: BootstrappedDatabase, change: str
) -> None:
    with PostgresClient(
        pg_database.app_url,
        1,
        min_pool_size=1,
        admin_connection_url=pg_database.admin_url,
        admin_pool_size=1,
    ) as client:
        user = uuid4()
        with (
            contextlib.suppress(psycopg.Error, DatabaseError, RuntimeError),
            client.admin_connection() as raw,
        ):
            if change == "tpc":
                raw.autocommit = False
                raw.tpc_begin(raw.xid(1, "crm", "test"))
                raw.execute("SELECT 1")
                raise RuntimeError("left mid two-phase")
            if change == "read_only":
                raw.read_only = True
            elif change == "row_factory":
                raw.row_factory = tuple_row  # type: ignore[assignment]
            else:
                raw.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        assert client.execute_admin("SELECT 1 AS one") == [{"one": 1}]
        with client.admin_transaction() as tx:
            tx.execute("CREATE TEMP TABLE probe (a int)")
            assert tx.execute("SELECT 2 AS two") == [{"two": 2}]
        with client.admin_connection() as raw:
            assert raw.read_only is None
            assert raw.isolation_level is None
        assert client.execute_scalar("SELECT 3 AS three", user_id=user) == 3


def test_a_raw_connection_is_never_handed_on(pg_database: BootstrappedDatabase) -> None:
    with PostgresClient(pg_database.app_url, 1, min_pool_size=1) as client:
        user = uuid4()
        with client.connection(user) as raw:
            raw_pid = raw.info.backend_pid

            class Shouting(psycopg.adapt.Loader):
                def load(self, data: psycopg.abc.Buffer) -> str:
                    return bytes(data).decode().upper()

            raw.adapters.register_loader("text", Shouting)  # psycopg state no reset undoes
            raw.execute("DECLARE held CURSOR WITH HOLD FOR SELECT 1")
        row = client.execute_one(
            "SELECT pg_backend_pid() AS pid, 'quiet'::text AS word", user_id=user
        )
        assert row is not None
        assert row["pid"] != raw_pid
        assert row["word"] == "quiet"


def test_closing_a_raw_connection_is_not_reported_as_a_problem(
    pg_database: BootstrappedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with PostgresClient(pg_database.app_url, 1, min_pool_size=1) as client:
        for _ in range(3):
            with client.connection(uuid4()) as raw:
                raw.execute("SELECT 1")
        assert client.execute_scalar("SELECT 1 AS one", user_id=uuid4()) == 1
    assert not [r for r in caplog.records if "discarding" in r.getMessage()]


def test_a_wrong_admin_role_is_named_once_with_the_servers_reason(
    pg_database: BootstrappedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    bad = pg_database.admin_url.replace(pg_database.admin_role, "crm_no_such_role")
    # A server that asks for passwords does not say whether the role exists, only that its
    # authentication failed; one that trusts names the missing role.
    reason = (
        r'role "crm_no_such_role" does not exist'
        r'|password authentication failed for user "crm_no_such_role"'
    )
    with PostgresClient(pg_database.app_url, 1, admin_connection_url=bad) as client:
        for _ in range(2):  # no pool is left half-made: the second call says the same
            with pytest.raises(DatabaseError, match=reason):
                client.execute_admin("SELECT 1")
    assert not [r for r in caplog.records if r.name.startswith("psycopg.pool")]
