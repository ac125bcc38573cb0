"""PostgresClient behind a real PgBouncer: correct answers, timeouts and recovery.

In ``pool_mode = transaction`` (``default_pool_size = 3``) every transaction of a client
connection may run on another server connection, which holds whatever prepared statements
other clients left on it, and no startup parameter the bouncer does not know gets through.
The client must be correct there with no setting to change (docs/database.md, "Behind
PgBouncer"): every call answers with its own SQL text's rows for its own user, a statement
that is missing or already there is retried, the statement timeout travels with the statement
that sets the user.

Every result is checked (``tests.fixtures.statement_mix``: each SQL text returns a tag naming
it and rows only its user has), so "the call succeeded" is never taken for "the call was
right". Tests that restart a bouncer or plant statements on its server connections use one of
their own (``start_pgbouncer``); the first section checks the fixture itself.

Some tests run on two bouncer configurations: ``strict`` (nothing relaxed for the client) and
``ignores-options`` (``ignore_startup_parameters = options``, which deployments set for other
drivers): a correct client needs neither, and must not depend on either.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from crm_infra import DatabaseError, DatabaseUnavailableError, QueryTimeoutError
from crm_infra.adapters import PostgresClient
from crm_infra.bootstrap import BootstrappedDatabase
from tests.fixtures.pgbouncer import PgBouncer
from tests.fixtures.roundtrips import RoundTripCounter
from tests.fixtures.statement_mix import (
    ADMIN_TEXTS,
    MODES,
    TEXTS,
    Seeded,
    Tally,
    check_admin_call,
    check_call,
    run_mix,
    seed,
)

pytestmark = pytest.mark.timeout(120)

FLAVOURS: dict[str, dict[str, str | int]] = {
    "strict": {},
    "ignores-options": {"ignore_startup_parameters": "options"},
}
_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mix(pg_db: PostgresClient) -> Seeded:
    """40 users with their rows, written directly (not through any bouncer)."""
    return seed(pg_db)


@pytest.fixture(params=sorted(FLAVOURS))
def bouncer(request: pytest.FixtureRequest, start_pgbouncer: Callable[..., PgBouncer]) -> PgBouncer:
    """A transaction-mode bouncer of this test's own, in each configuration of FLAVOURS."""
    return start_pgbouncer(settings=FLAVOURS[request.param])


@contextmanager
def pinned(bouncer: PgBouncer) -> Iterator[list[psycopg.Connection[Any]]]:
    """Hold every server connection of the app role's pool, one open transaction on each.

    A client connection keeps its server connection while its transaction is open, so
    ``pool_size`` of them cover the whole pool; yields them (raw psycopg, in a transaction).
    """
    with ExitStack() as stack:
        conns = [
            stack.enter_context(psycopg.connect(bouncer.app_url, autocommit=True))
            for _ in range(bouncer.pool_size)
        ]
        pids = set()
        for conn in conns:
            conn.execute("BEGIN")
            pids.add(_scalar(conn, "SELECT pg_backend_pid()"))
        assert len(pids) == bouncer.pool_size, "the pins did not get distinct server connections"
        yield conns
        for conn in conns:
            conn.execute("COMMIT")


def _scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _prepared(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """The client's statements (``_crm_*``) on ``conn``'s server connection."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT name, statement, from_sql, parameter_types::oid[] AS oids "
        "FROM pg_prepared_statements WHERE name LIKE '\\_crm\\_%' ORDER BY name"
    )
    return cur.fetchall()


def _assert_clean(tally: Tally) -> None:
    assert not tally.mismatches, tally.summary()
    assert not tally.failures, tally.summary()
    assert tally.foreign_rows == 0, tally.summary()


# --- the fixture itself ----------------------------------------------------------------------


def test_raw_psycopg_reaches_the_database_through_the_bouncer(
    pgbouncer: PgBouncer, pg_database: BootstrappedDatabase
) -> None:
    for url, role in (
        (pgbouncer.app_url, pg_database.app_role),
        (pgbouncer.admin_url, pg_database.admin_role),
    ):
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert _scalar(conn, "SELECT current_user") == role
            assert _scalar(conn, "SELECT current_database()") == pg_database.database
    assert pgbouncer.setting("pool_mode") == "transaction"
    assert pgbouncer.setting("default_pool_size") == "3"


def test_the_bouncer_shares_few_server_connections_among_many_clients(
    pgbouncer: PgBouncer,
) -> None:
    with ExitStack() as stack:
        clients = [
            stack.enter_context(psycopg.connect(pgbouncer.app_url, autocommit=True))
            for _ in range(8)
        ]
        pids = {_scalar(conn, "SELECT pg_backend_pid()") for conn in clients for _ in range(3)}
        assert len(pgbouncer.clients("app")) >= len(clients)
        assert 1 <= len(pids) <= len(pgbouncer.servers("app")) <= 3


def test_reconnect_replaces_the_server_connections(
    start_pgbouncer: Callable[..., PgBouncer],
) -> None:
    bouncer = start_pgbouncer()
    with pinned(bouncer) as conns:
        before = {_scalar(conn, "SELECT pg_backend_pid()") for conn in conns}
    bouncer.reconnect()
    with pinned(bouncer) as conns:
        after = {_scalar(conn, "SELECT pg_backend_pid()") for conn in conns}
    assert before.isdisjoint(after)


def test_a_restarted_bouncer_answers_on_the_same_port(
    start_pgbouncer: Callable[..., PgBouncer],
) -> None:
    bouncer = start_pgbouncer()
    port = bouncer.port
    with psycopg.connect(bouncer.app_url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        bouncer.restart()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")  # the old process is gone, and its connections
    assert bouncer.port == port
    assert bouncer.running
    with psycopg.connect(bouncer.app_url, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_bouncer_does_not_run_as_root(pgbouncer: PgBouncer) -> None:
    pid = int((pgbouncer.dir / "pgbouncer.pid").read_text().strip())
    assert os.stat(f"/proc/{pid}").st_uid != 0


def test_the_round_trip_counter_counts_through_the_bouncer(pgbouncer: PgBouncer) -> None:
    with RoundTripCounter(pgbouncer.host, pgbouncer.port) as proxy:
        # psycopg's own preparing (a Parse of its own, one more round trip) stays out of it.
        url = pgbouncer.url("app", port=proxy.port)
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            conn.execute("SELECT 1")
            proxy.reset()
            for _ in range(10):
                conn.execute("SELECT 1")
            assert proxy.turns == 10
        assert proxy.connections == 1


def test_the_round_trip_counter_outlives_a_bouncer_restart(
    start_pgbouncer: Callable[..., PgBouncer],
) -> None:
    bouncer = start_pgbouncer()
    with RoundTripCounter(bouncer.host, bouncer.port) as proxy:
        url = bouncer.url("app", port=proxy.port)
        bouncer.stop()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)  # refused upstream: closed, not hung
        bouncer.start()
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert proxy.connections == 1


def test_session_mode_gives_each_client_its_own_server_connection(
    pgbouncer_session_mode: PgBouncer,
) -> None:
    assert pgbouncer_session_mode.setting("pool_mode") == "session"
    with psycopg.connect(pgbouncer_session_mode.app_url, autocommit=True) as conn:
        pids = {_scalar(conn, "SELECT pg_backend_pid()") for _ in range(5)}
    assert len(pids) == 1


# --- (f) connecting at all -------------------------------------------------------------------


def test_the_client_connects_through_transaction_pooling_with_nothing_relaxed(
    pgbouncer: PgBouncer, pg_database: BootstrappedDatabase
) -> None:
    """No ``ignore_startup_parameters``: a startup ``options`` is refused by the bouncer."""
    assert pgbouncer.setting("ignore_startup_parameters") == ""
    with PostgresClient(pgbouncer.app_url, 2, admin_connection_url=pgbouncer.admin_url) as client:
        assert client.health_check() is True
        assert client.execute("SELECT 1 AS one", user_id=uuid4()) == [{"one": 1}]
        assert client.execute_admin("SELECT current_user AS who") == [
            {"who": pg_database.admin_role}
        ]


# --- (a) many threads, six texts, forty users ------------------------------------------------


def test_eight_threads_each_get_their_own_texts_and_users_rows(
    bouncer: PgBouncer, mix: Seeded
) -> None:
    with PostgresClient(bouncer.app_url, 8, min_pool_size=8, pool_timeout=2) as client:
        tally = run_mix(client, mix.users, threads=8, tally=Tally(max_failures=40))
        client_connections = client.pool.get_stats()["pool_size"]
    _assert_clean(tally)
    assert tally.ok == 8 * len(TEXTS) * len(mix.users)
    # More client connections than server connections: they really were shared.
    assert len(bouncer.servers("app")) <= bouncer.pool_size < client_connections


# --- (b) two processes at once ---------------------------------------------------------------


def _worker(url: str, users: tuple[UUID, ...], seed_: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fixtures.statement_mix",
            "--url",
            url,
            "--users",
            ",".join(map(str, users)),
            "--threads",
            "4",
            "--seed",
            str(seed_),
        ],
        cwd=_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_sharing_the_bouncer_each_get_their_own_answers(
    pgbouncer: PgBouncer, mix: Seeded
) -> None:
    workers = [_worker(pgbouncer.app_url, mix.users, k) for k in range(2)]
    reports: list[dict[str, Any]] = []
    try:
        for worker in workers:  # both have their client: they start together
            assert worker.stdout is not None
            line = worker.stdout.readline()
            assert line.strip() == "ready", f"worker said {line!r}; {worker.communicate()[1]}"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            out, err = worker.communicate(timeout=90)
            assert worker.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for report in reports:
        detail = json.dumps(report, indent=1)
        assert report["failure_count"] == 0, detail
        assert report["mismatch_count"] == 0, detail
        assert report["foreign_rows"] == 0, detail
        assert report["ok"] == 4 * len(TEXTS) * len(mix.users), detail
    # A process coming afterwards finds the server connections as the two left them.
    with PostgresClient(pgbouncer.app_url, 4, pool_timeout=2) as client:
        tally = run_mix(client, mix.users, threads=4, seed_=7)
    _assert_clean(tally)


# --- (c) a server connection that already holds a statement of the same name ----------------


def _warm_every_server_connection(bouncer: PgBouncer, mix: Seeded) -> None:
    """Let a fresh client run every text every way on each server connection in turn.

    All server connections but one are pinned, so the client can only use that one; then
    every server connection holds the statements the client makes for these texts, under the
    names it gives them, as other processes sharing the bouncer would leave them.
    """
    with pinned(bouncer) as conns:
        for conn in conns:
            conn.execute("COMMIT")  # its server connection is now the only free one
            with PostgresClient(bouncer.app_url, 1, min_pool_size=1, pool_timeout=2) as warmer:
                for text in TEXTS:
                    for mode in MODES:
                        wrong, _ = check_call(warmer, text, 0, mix.users[0], mode)
                        assert wrong is None, wrong
            conn.execute("BEGIN")
            conn.execute("SELECT 1")  # takes that server connection back
        for conn in conns:
            assert _prepared(conn), "the client left no named statement on a server connection"


def test_statements_of_the_same_name_and_text_already_on_the_server_just_work(
    start_pgbouncer: Callable[..., PgBouncer], mix: Seeded
) -> None:
    bouncer = start_pgbouncer()
    _warm_every_server_connection(bouncer, mix)
    # A new client (a restarted process): every statement it prepares is already there.
    with PostgresClient(bouncer.app_url, 4, pool_timeout=2) as client:
        tally = run_mix(client, mix.users, threads=4)
    _assert_clean(tally)


_TAG = re.compile(r"'(q\d)' AS tag")


def _hostile(statement: dict[str, Any], victim: UUID) -> tuple[str, str] | None:
    """What to put under ``statement``'s name instead: (kind, SQL), or None to leave it.

    The statement that sets the user becomes one that sets ``victim``; a data statement
    becomes one of the same parameters and columns whose tag says ``hostile``.
    """
    text: str = statement["statement"]
    if statement["from_sql"]:  # the whole message it came in: find its own PREPARE
        found = re.search(rf"PREPARE\s+{re.escape(statement['name'])}\b.*?\bAS\b", text, re.I)
        if found is None:
            return None
        text = text[found.end() :].split(";", 1)[0]  # the mix's texts have no ';' of their own
    if "app.current_user_id" in text and not _TAG.search(text):
        # Its parameters are declared by type (the Parse below), so they need no use here.
        return "set-user", f"SELECT set_config('app.current_user_id', '{victim}', true)"
    if _TAG.search(text):
        return "data", _TAG.sub("'hostile' AS tag", text, count=1)
    return None


def test_a_foreign_statement_under_the_clients_name_never_shows_another_users_rows(
    start_pgbouncer: Callable[..., PgBouncer], mix: Seeded
) -> None:
    """What the client can promise when something else (a raw connection of the same role)
    prepared a different statement under one of its names.

    Names are content-addressed, so a statement of that name is taken to be the client's
    own: a replaced data statement may answer for it (the client cannot tell without asking
    the server every time), but its user is still the caller, under row-level security. The
    statement that sets the user must never be one that anything else could have replaced:
    calls never act as another user, whatever was planted.
    """
    bouncer = start_pgbouncer()
    _warm_every_server_connection(bouncer, mix)
    victim = mix.users[-1]
    planted: Counter[str] = Counter()
    with pinned(bouncer) as conns:
        for conn in conns:
            for statement in _prepared(conn):
                hostile = _hostile(statement, victim)
                if hostile is None:
                    continue
                kind, text = hostile
                conn.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(statement["name"])))
                result = conn.pgconn.prepare(
                    statement["name"].encode(), text.encode(), list(statement["oids"])
                )
                assert result.error_message == b"", result.error_message
                planted[kind] += 1
    assert planted["data"] > 0, "nothing was planted: the test would prove nothing"
    with PostgresClient(bouncer.app_url, 4, pool_timeout=2) as client:
        tally = run_mix(client, mix.users[:-1], threads=4, tally=Tally(max_failures=20))
    assert tally.foreign_rows == 0, tally.summary()
    for _, exc in tally.failures:
        assert isinstance(exc, DatabaseError), tally.summary()


# --- (d) RECONNECT and a restart mid-run ------------------------------------------------------


def _reach(tally: Tally, count: int, when: str) -> None:
    if not tally.wait_for_ok(count, timeout=30):
        pytest.fail(f"{count} correct calls were not reached {when}:\n{tally.summary()}")


def test_calls_survive_a_reconnect_and_a_restart_of_the_bouncer(
    start_pgbouncer: Callable[..., PgBouncer], mix: Seeded
) -> None:
    bouncer = start_pgbouncer()
    pool_size = 4
    tally = Tally(max_failures=2 * pool_size + 4)
    stop = threading.Event()
    with PostgresClient(bouncer.app_url, pool_size, min_pool_size=pool_size) as client:
        runner = threading.Thread(
            target=run_mix,
            args=(client, mix.users),
            kwargs={"threads": 4, "tally": tally, "stop": stop},
        )
        runner.start()
        try:
            _reach(tally, 150, "before RECONNECT")
            before = {s["remote_pid"] for s in bouncer.servers("app")}
            tally.set_phase("reconnect")
            bouncer.reconnect()
            _reach(tally, tally.ok + 300, "after RECONNECT")
            live = {s["remote_pid"] for s in bouncer.servers("app") if not s["close_needed"]}
            tally.set_phase("restart")
            bouncer.restart()
            _reach(tally, tally.ok + 100, "after the restart")
            tally.set_phase("settled")
            _reach(tally, tally.ok + 300, "once settled after the restart")
        finally:
            stop.set()
            runner.join(timeout=60)
    assert before, "no server connection before RECONNECT"
    assert live.isdisjoint(before), "RECONNECT did not replace the server connections"
    assert not tally.mismatches, tally.summary()
    phases = Counter(phase for phase, _ in tally.failures)
    assert set(phases) <= {"restart"}, tally.summary()
    assert phases["restart"] <= 2 * pool_size, tally.summary()
    for _, exc in tally.failures:
        assert isinstance(exc, DatabaseUnavailableError), tally.summary()


# --- (e) the statement timeout ----------------------------------------------------------------


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    with pytest.raises(QueryTimeoutError):
        call()
    return time.perf_counter() - start


def test_the_statement_timeout_is_in_force_through_the_bouncer(
    bouncer: PgBouncer, pg_database: BootstrappedDatabase
) -> None:
    user = uuid4()
    show = "SELECT current_setting('statement_timeout') AS v"
    with PostgresClient(
        bouncer.app_url,
        2,
        admin_connection_url=bouncer.admin_url,
        statement_timeout=0.5,
        admin_statement_timeout=0.5,
    ) as client:
        assert client.execute(show, user_id=user) == [{"v": "500ms"}]
        with client.transaction(user) as tx:
            assert tx.execute(show) == [{"v": "500ms"}]
        assert client.execute_admin(show) == [{"v": "500ms"}]
        with client.admin_transaction() as atx:
            assert atx.execute(show) == [{"v": "500ms"}]
        # Enforced by the server (0.5 s), not by the client's own deadline (2 s later).
        assert 0.45 <= _timed(lambda: client.execute("SELECT pg_sleep(5)", user_id=user)) < 1.5
        assert 0.45 <= _timed(lambda: client.execute_admin("SELECT pg_sleep(5)")) < 1.5
        assert client.execute("SELECT 1 AS one", user_id=user) == [{"one": 1}]
    # Transaction-local: nothing of it stays on the server connections other clients share.
    with psycopg.connect(pg_database.app_url) as direct:
        default = _scalar(direct, "SHOW statement_timeout")
    with pinned(bouncer) as conns:
        for conn in conns:
            assert _scalar(conn, "SHOW statement_timeout") == default


# --- (g) the admin path ----------------------------------------------------------------------


def test_the_admin_path_under_concurrency_gets_its_own_answers(
    bouncer: PgBouncer, mix: Seeded
) -> None:
    """psycopg prepares a statement it has run 5 times (``_pg3_0``...) per client connection,
    which behind the bouncer is on some server connection or other."""
    threads, calls = 8, 60
    tally = Tally()
    start = threading.Barrier(threads)
    with PostgresClient(
        bouncer.app_url, 1, admin_connection_url=bouncer.admin_url, admin_pool_size=4
    ) as client:

        def worker(k: int) -> None:
            start.wait()
            for n in range(calls):
                i = (k * 7 + n) % len(mix.users)
                mode = "transaction" if n % 3 == 0 else "execute"
                try:
                    wrong = check_admin_call(
                        client, mix, t=(k + n) % len(ADMIN_TEXTS), i=i, n=n, mode=mode
                    )
                except Exception as exc:  # counted and reported
                    tally.record(exc)
                else:
                    tally.record(wrong)

        workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    _assert_clean(tally)
    assert tally.ok == threads * calls


# --- (h) session mode -------------------------------------------------------------------------


def test_session_mode_answers_every_call_correctly_too(
    pgbouncer_session_mode: PgBouncer, mix: Seeded
) -> None:
    with PostgresClient(
        pgbouncer_session_mode.app_url, 4, admin_connection_url=pgbouncer_session_mode.admin_url
    ) as client:
        tally = run_mix(client, mix.users, threads=4)
        wrong = [
            check_admin_call(client, mix, t=t, i=t, n=t, mode=mode)
            for t in range(len(ADMIN_TEXTS))
            for mode in ("execute", "transaction")
            for _ in range(6)  # past psycopg's prepare threshold
        ]
    _assert_clean(tally)
    assert [w for w in wrong if w] == []


# --- round trips through the bouncer ---------------------------------------------------------


def test_execute_costs_one_round_trip_once_each_server_connection_has_the_statement(
    start_pgbouncer: Callable[..., PgBouncer], mix: Seeded
) -> None:
    # Round robin: consecutive transactions go to each server connection in turn.
    bouncer = start_pgbouncer(settings={"server_round_robin": 1})
    text, user = TEXTS[3], mix.users[3]
    with pinned(bouncer):
        pass  # opens all three server connections
    assert len(bouncer.servers("app")) == bouncer.pool_size
    with (
        RoundTripCounter(bouncer.host, bouncer.port) as proxy,
        PostgresClient(bouncer.url("app", port=proxy.port), 1, min_pool_size=1) as client,
    ):
        for _ in range(10 * bouncer.pool_size):
            wrong, _ = check_call(client, text, 3, user, "user_id")
            assert wrong is None, wrong
        with pinned(bouncer) as conns:
            for conn in conns:
                assert any("'q4' AS tag" in s["statement"] for s in _prepared(conn))
        proxy.reset()
        calls = 60
        for _ in range(calls):
            client.execute(text.sql, text.params(3), user_id=user)
        assert proxy.turns == calls
