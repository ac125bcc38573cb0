"""PostgresClient under server faults, on a private cluster this module starts and removes.

The promise: a restart, a killed connection or a frozen server gives typed ``PostgresError``s
(never a raw psycopg exception, never a hang); the pool recovers by itself within a few seconds;
every transaction that reported success is still there afterwards; and a connection given back
with a session-level user setting never shows it to the next borrower.

The shared test server (``CRM_TEST_DATABASE_URL``) is never touched: see
:mod:`tests.fixtures.pg_cluster`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest

from crm_infra.adapters import PostgresClient
from crm_infra.adapters.postgres import PostgresError
from crm_infra.bootstrap import BootstrappedDatabase, create_database
from crm_infra.errors import (
    BackendUnavailableError,
    DatabaseUnavailableError,
    QueryTimeoutError,
)
from crm_infra.migrations import apply_migrations
from tests.fixtures.common import wait_until
from tests.fixtures.pg_cluster import PrivateCluster, running_cluster

RECOVERY_S = 5.0


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[PrivateCluster]:
    """A PostgreSQL cluster of this module's own, free to be restarted and frozen."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def private_db(private_cluster: PrivateCluster) -> BootstrappedDatabase:
    """A bootstrapped, migrated database on the private cluster (removed with it)."""
    created = create_database(private_cluster.superuser_url, prefix="crm_fault")
    with PostgresClient(
        created.app_url, 1, admin_connection_url=created.admin_url, min_pool_size=0
    ) as migrator:
        apply_migrations(migrator)
    return created


@pytest.fixture
def client(
    private_cluster: PrivateCluster, private_db: BootstrappedDatabase
) -> Iterator[PostgresClient]:
    with PostgresClient(
        private_db.app_url,
        4,
        min_pool_size=4,
        admin_connection_url=private_db.admin_url,
        connect_timeout=2,
        pool_timeout=3,
        statement_timeout=2,
    ) as db:
        yield db
    private_cluster.resume()


def _new_user(db: PostgresClient) -> UUID:
    user: UUID = db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid.uuid4()}@example.com",)
    )[0]["id"]
    return user


def _typed(error: BaseException) -> None:
    assert isinstance(error, PostgresError), f"untyped: {type(error).__mro__}"
    assert not isinstance(error, psycopg.Error)


def _until_ok(call: Callable[[], Any], within: float = RECOVERY_S) -> tuple[Any, list[Exception]]:
    """Call until it succeeds; return its result and the (typed) errors on the way."""
    deadline = time.monotonic() + within
    errors: list[Exception] = []
    while True:
        try:
            return call(), errors
        except Exception as exc:
            _typed(exc)
            errors.append(exc)
            if time.monotonic() > deadline:
                raise AssertionError(f"no recovery within {within} s: {errors[-3:]}") from exc
            time.sleep(0.05)


def _running(cluster: PrivateCluster, statement: str) -> bool:
    """Return True when a session of ``cluster`` is running ``statement`` right now (alone or
    after the statement that sets the user)."""
    with psycopg.connect(cluster.superuser_url, connect_timeout=2) as su:
        row = su.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE state = 'active' AND strpos(query, %s) > 0 AND pid <> pg_backend_pid()",
            (statement,),
        ).fetchone()
    return row is not None and row[0] > 0


# --- a restart mid-run ------------------------------------------------------------------------


def test_a_restart_mid_run_loses_no_committed_transaction_and_the_pool_recovers(
    private_cluster: PrivateCluster, client: PostgresClient
) -> None:
    users = [_new_user(client) for _ in range(4)]
    committed: list[UUID] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def writer(user: UUID) -> None:
        while not stop.is_set():
            try:
                with client.transaction(user) as tx:
                    cid = tx.execute_scalar(
                        "INSERT INTO contacts (name) VALUES (%s) RETURNING id", ("c",)
                    )
                    tx.execute(
                        "INSERT INTO tickets (contact_id, subject) VALUES (%s, %s)", (cid, "t")
                    )
            except BaseException as exc:
                with lock:
                    failures.append(exc)
                time.sleep(0.02)
                continue
            with lock:
                committed.append(cid)

    in_flight: list[BaseException] = []

    def long_statement() -> None:
        try:
            client.execute("SELECT pg_sleep(1.5)", user_id=users[0])
        except BaseException as exc:
            in_flight.append(exc)

    def committed_count() -> int:
        with lock:
            return len(committed)

    threads = [threading.Thread(target=writer, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    wait_until(lambda: committed_count() >= len(users), timeout=30, what="the first commits")
    sleeper = threading.Thread(target=long_statement)
    sleeper.start()
    wait_until(
        lambda: _running(private_cluster, "SELECT pg_sleep(1.5)"),
        timeout=30,
        what="the long statement",
    )
    before = committed_count()
    private_cluster.restart("fast")
    restarted = time.monotonic()
    _value, _errors = _until_ok(lambda: client.execute_scalar("SELECT 1", user_id=users[0]))
    recovered_after = time.monotonic() - restarted
    after = committed_count()
    wait_until(lambda: committed_count() > after, timeout=30, what="commits after the restart")
    stop.set()
    for thread in [*threads, sleeper]:
        thread.join(timeout=30)
        assert not thread.is_alive()

    assert before > 0
    assert len(committed) > before  # writers went on after the restart
    assert recovered_after < RECOVERY_S
    assert len(in_flight) == 1  # the statement running during the restart failed...
    _typed(in_flight[0])  # ...with a typed error
    for failure in failures:
        _typed(failure)
    # The admin pool's idle connection died in the restart too: it recovers the same way.
    rows, _errors = _until_ok(
        lambda: client.execute_admin(
            "SELECT c.id FROM contacts c JOIN tickets t ON t.contact_id = c.id"
        )
    )
    stored = {row["id"] for row in rows}
    missing = [cid for cid in committed if cid not in stored]
    assert missing == []
    # Each transaction is whole: no contact without its ticket.
    orphans = client.execute_admin(
        "SELECT count(*) AS n FROM contacts c WHERE NOT EXISTS "
        "(SELECT 1 FROM tickets t WHERE t.contact_id = c.id)"
    )[0]["n"]
    assert orphans == 0


# --- connections killed by the server while pooled --------------------------------------------


def test_connections_killed_while_pooled_fail_typed_then_are_replaced(
    private_db: BootstrappedDatabase, client: PostgresClient
) -> None:
    user = _new_user(client)
    client.pool.wait(timeout=10)  # all four open (the pool opens them in the background)
    stats = client.pool.get_stats()
    assert stats["pool_size"] == 4
    with psycopg.connect(private_db.superuser_url, dbname=private_db.database) as su:
        killed = su.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE usename = %s AND pid <> pg_backend_pid()",
            (private_db.app_role,),
        ).fetchone()
    assert killed is not None
    assert killed[0] == 4
    _value, errors = _until_ok(lambda: client.execute_scalar("SELECT 1", user_id=user))
    for error in errors:
        assert isinstance(error, BackendUnavailableError)
    # The first call to meet a dead connection fails; it has the pool replace the other idle
    # ones, so the next calls get fresh connections instead of failing once per connection.
    assert len(errors) <= 1
    for _ in range(20):  # and from then on, nothing fails
        assert client.execute_scalar("SELECT 1", user_id=user) == 1


def test_after_a_restart_while_idle_one_call_fails_and_the_rest_succeed(
    private_cluster: PrivateCluster, client: PostgresClient
) -> None:
    user = _new_user(client)
    client.pool.wait(timeout=10)
    assert client.pool.get_stats()["pool_size"] == 4
    private_cluster.restart("fast")
    outcomes: list[str] = []
    for _ in range(12):
        try:
            client.execute_scalar("SELECT 1", user_id=user)
        except BackendUnavailableError:
            outcomes.append("failed")
        else:
            outcomes.append("ok")
    assert outcomes.count("failed") <= 1
    assert outcomes[-10:] == ["ok"] * 10
    # The admin pool recovers the same way.
    admin: list[str] = []
    for _ in range(4):
        try:
            client.execute_admin("SELECT 1")
        except BackendUnavailableError:
            admin.append("failed")
        else:
            admin.append("ok")
    assert admin.count("failed") <= 1
    assert admin[-2:] == ["ok", "ok"]


def _replacements(caplog: pytest.LogCaptureFixture) -> int:
    return sum("replacing the idle ones" in r.getMessage() for r in caplog.records)


def test_connections_held_across_a_restart_replace_the_pool_once(
    private_cluster: PrivateCluster,
    private_db: BootstrappedDatabase,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="crm_infra.adapters.postgres")
    with PostgresClient(private_db.app_url, 4, min_pool_size=4, pool_timeout=3) as db:
        db.pool.wait(timeout=10)
        user = uuid.uuid4()
        with contextlib.ExitStack() as held:
            raws = [held.enter_context(db.connection(user)) for _ in range(3)]
            private_cluster.restart("fast")
            # The idle fourth connection is dead too: the call that meets it fails, and has
            # the pool replace its idle connections (the one replacement this test expects).
            fresh, _errors = _until_ok(
                lambda: db.execute_scalar("SELECT pg_backend_pid() AS pid", user_id=user)
            )
            for raw in raws:  # each comes back dead, a second apart
                with contextlib.suppress(psycopg.Error):
                    raw.execute("SELECT 1")
                time.sleep(1.1)
            with contextlib.suppress(DatabaseUnavailableError):
                held.close()  # their commits fail: the server they began on is gone
        # One replacement for the restart, not one per dead connection: a dead one opened
        # before the last replacement starts none, so fresh connections are kept.
        assert _replacements(caplog) == 1
        pids = {db.execute_scalar("SELECT pg_backend_pid() AS pid", user_id=user) for _ in range(8)}
        assert fresh in pids  # the connection opened after the restart was kept


def test_a_connection_the_client_closed_replaces_nothing(
    private_db: BootstrappedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crm_infra.adapters.postgres")
    with PostgresClient(private_db.app_url, 3, min_pool_size=3) as db:
        db.pool.wait(timeout=10)
        user = uuid.uuid4()
        with pytest.raises(PostgresError, match="closed"), db.connection(user) as raw:
            raw.close()  # the caller's own doing, not the server's (so nothing is committed)
        assert _replacements(caplog) == 0
        assert db.execute_scalar("SELECT 1 AS one", user_id=user) == 1


# --- a frozen server --------------------------------------------------------------------------


def _in_thread(call: Callable[[], Any], limit: float) -> tuple[BaseException | None, float]:
    """Run ``call`` in a thread; return its exception (or None) and how long it took.

    Fails (rather than hangs) when the call outlives ``limit``.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        pytest.fail(f"the call was still blocked after {limit} s on a frozen server")
    return outcome[0], elapsed


def test_a_frozen_server_fails_calls_by_the_client_deadline(
    private_cluster: PrivateCluster, client: PostgresClient
) -> None:
    user = _new_user(client)
    assert client.execute_scalar("SELECT 1", user_id=user) == 1
    private_cluster.pause()
    try:
        # statement_timeout (2 s) cannot fire in a frozen server: the client's deadline must.
        error, elapsed = _in_thread(lambda: client.execute("SELECT 1", user_id=user), 15)
    finally:
        private_cluster.resume()
    assert error is not None
    _typed(error)
    assert isinstance(error, QueryTimeoutError | DatabaseUnavailableError)
    assert elapsed < 10
    _until_ok(lambda: client.execute_scalar("SELECT 1", user_id=user))


def test_a_frozen_server_fails_admin_calls_by_the_client_deadline(
    private_cluster: PrivateCluster, private_db: BootstrappedDatabase
) -> None:
    with PostgresClient(
        private_db.app_url,
        1,
        admin_connection_url=private_db.admin_url,
        admin_statement_timeout=1,
        admin_pool_size=2,
        pool_timeout=3,
    ) as db:
        # Two idle admin connections, one for each call below: each meets the frozen server
        # on a connection it already has (a new one would fail by connect_timeout).
        with db.admin_connection(), db.admin_connection():
            pass
        assert db.execute_admin("SELECT 1 AS one") == [{"one": 1}]
        private_cluster.pause()
        try:
            error, elapsed = _in_thread(lambda: db.execute_admin("SELECT 1"), 15)

            def in_transaction() -> None:
                with db.admin_transaction() as tx:  # its BEGIN meets the frozen server
                    tx.execute("SELECT 1")

            tx_error, tx_elapsed = _in_thread(in_transaction, 15)
        finally:
            private_cluster.resume()
        for failure, took in ((error, elapsed), (tx_error, tx_elapsed)):
            assert isinstance(failure, QueryTimeoutError), failure
            _typed(failure)
            assert took < 8  # admin_statement_timeout (1 s) + the 2 s grace, with slack
        _until_ok(lambda: db.execute_admin("SELECT 1"))


class _DomainError(Exception):
    pass


def _frozen_client(db: BootstrappedDatabase, **settings: Any) -> PostgresClient:
    return PostgresClient(
        db.app_url,
        1,
        min_pool_size=1,
        pool_timeout=3,
        statement_timeout=1,
        connect_timeout=2,
        **settings,
    )


def _rollback_after_the_block_raised(
    cluster: PrivateCluster, db: PostgresClient, user: UUID
) -> None:
    with db.transaction(user) as tx:
        tx.execute("SELECT 1 AS one")
        cluster.pause()
        raise _DomainError("the block failed")


def _commit_after_a_rolled_back_savepoint(
    cluster: PrivateCluster, db: PostgresClient, user: UUID
) -> None:
    with db.transaction(user) as tx:
        tx.execute("SELECT 1 AS one")
        with contextlib.suppress(PostgresError), db.transaction(user) as inner:
            inner.execute("SELECT 1 / 0")
        cluster.pause()


def _begin_of_a_raw_connection(cluster: PrivateCluster, db: PostgresClient, user: UUID) -> None:
    cluster.pause()
    with db.connection(user):
        pass


@pytest.mark.parametrize(
    "step",
    [
        _rollback_after_the_block_raised,
        _commit_after_a_rolled_back_savepoint,
        _begin_of_a_raw_connection,
    ],
)
def test_the_clients_own_statements_never_wait_forever_on_a_frozen_server(
    private_cluster: PrivateCluster,
    private_db: BootstrappedDatabase,
    step: Callable[[PrivateCluster, PostgresClient, UUID], None],
) -> None:
    with _frozen_client(private_db) as db:
        user = uuid.uuid4()
        assert db.execute_scalar("SELECT 1 AS one", user_id=user) == 1
        try:
            error, elapsed = _in_thread(lambda: step(private_cluster, db, user), 15)
        finally:
            private_cluster.resume()
        # The block's own error, or the deadline's; either way within the short deadline.
        assert error is not None
        assert elapsed < 8
        _until_ok(lambda: db.execute_scalar("SELECT 1 AS one", user_id=user))


def test_health_check_has_a_deadline_even_without_a_statement_timeout(
    private_cluster: PrivateCluster, private_db: BootstrappedDatabase
) -> None:
    with PostgresClient(
        private_db.app_url, 1, min_pool_size=1, statement_timeout=None, connect_timeout=2
    ) as db:
        assert db.health_check()
        private_cluster.pause()
        try:
            error, elapsed = _in_thread(db.health_check, 15)
        finally:
            private_cluster.resume()
        assert isinstance(error, QueryTimeoutError), error
        assert elapsed < 8
        _until_ok(db.health_check)


def test_the_idle_ping_has_a_deadline_on_a_frozen_server(
    private_cluster: PrivateCluster, private_db: BootstrappedDatabase
) -> None:
    with _frozen_client(private_db, health_check_interval=0.5) as db:
        user = uuid.uuid4()
        assert db.execute_scalar("SELECT 1 AS one", user_id=user) == 1
        time.sleep(1.0)  # idle past health_check_interval: the next borrow pings first
        private_cluster.pause()
        try:
            error, elapsed = _in_thread(
                lambda: db.execute_scalar("SELECT 1 AS one", user_id=user), 15
            )
        finally:
            private_cluster.resume()
        assert isinstance(error, DatabaseUnavailableError | QueryTimeoutError), error
        assert elapsed < 10
        _until_ok(lambda: db.execute_scalar("SELECT 1 AS one", user_id=user))


def test_a_restart_found_by_the_idle_ping_replaces_the_pool_at_once(
    private_cluster: PrivateCluster,
    private_db: BootstrappedDatabase,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="crm_infra.adapters.postgres")
    with PostgresClient(
        private_db.app_url, 4, min_pool_size=4, pool_timeout=5, health_check_interval=0.5
    ) as db:
        db.pool.wait(timeout=10)
        user = uuid.uuid4()
        time.sleep(1.0)
        private_cluster.restart("fast")
        started = time.monotonic()
        assert db.execute_scalar("SELECT 1 AS one", user_id=user) == 1
        # One dead connection found by its ping replaces the rest: no ping-and-back-off
        # through every dead one until pool_timeout.
        assert time.monotonic() - started < 4
        assert _replacements(caplog) == 1


def test_a_frozen_server_fails_new_connections_within_the_connect_timeout(
    private_cluster: PrivateCluster, private_db: BootstrappedDatabase
) -> None:
    private_cluster.pause()
    try:
        error, elapsed = _in_thread(
            lambda: PostgresClient(private_db.app_url, 1, connect_timeout=2), 15
        )
    finally:
        private_cluster.resume()
    assert isinstance(error, DatabaseUnavailableError)
    assert elapsed < 5


# --- a session-level setting given back through the raw connection ------------------------------


def test_a_session_level_user_setting_never_reaches_the_next_borrower(
    private_db: BootstrappedDatabase,
) -> None:
    with PostgresClient(
        private_db.app_url, 1, min_pool_size=1, admin_connection_url=private_db.admin_url
    ) as db:
        alice, bob = _new_user(db), _new_user(db)
        db.execute("INSERT INTO contacts (name) VALUES ('alice-secret')", user_id=alice)
        with db.connection(alice) as conn:
            # Misuse of the escape hatch: a session-level (not transaction-local) setting.
            conn.execute("SELECT set_config('app.current_user_id', %s, false)", (str(alice),))
            conn.execute("SET SESSION statement_timeout = 0")
        # The same (only) pooled connection, now for Bob: after his own transaction ends,
        # nothing of Alice's must be in force.
        with db.connection(bob) as conn:
            conn.execute("COMMIT")
            leaked = conn.execute("SELECT name FROM contacts").fetchall()
            setting = conn.execute(
                "SELECT current_setting('app.current_user_id', true) AS v"
            ).fetchone()
        assert leaked == []
        assert setting is not None
        assert setting["v"] in (None, "")
        assert db.execute("SELECT name FROM contacts", user_id=bob) == []


# --- pool exhausted ---------------------------------------------------------------------------


def test_waiters_on_an_exhausted_pool_get_a_clear_error_in_time_then_work_again(
    private_db: BootstrappedDatabase,
) -> None:
    with PostgresClient(
        private_db.app_url, 2, min_pool_size=2, pool_timeout=0.5,
        admin_connection_url=private_db.admin_url,
    ) as db:
        user = _new_user(db)
        errors: list[BaseException] = []
        elapsed: list[float] = []
        lock = threading.Lock()

        def waiter() -> None:
            started = time.monotonic()
            try:
                db.execute("SELECT 1", user_id=user)
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                    elapsed.append(time.monotonic() - started)

        release = threading.Event()
        held = threading.Barrier(3)

        def holder() -> None:
            with db.transaction(user) as tx:
                tx.execute("SELECT 1")
                held.wait()
                release.wait(10)

        holders = [threading.Thread(target=holder) for _ in range(2)]
        for thread in holders:
            thread.start()
        held.wait()  # both connections are taken now
        threads = [threading.Thread(target=waiter) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        release.set()
        for thread in holders:
            thread.join(timeout=10)
        assert len(errors) == 6
        for error in errors:
            assert isinstance(error, DatabaseUnavailableError)
            _typed(error)
        assert max(elapsed) < 2.0
        assert db.execute_scalar("SELECT 1", user_id=user) == 1
        stats = db.pool.get_stats()
        assert stats.get("requests_waiting", 0) == 0
        assert stats["pool_size"] <= 2
