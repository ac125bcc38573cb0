"""The soak: 16 threads mix all three ports on real servers for ``CRM_SOAK_SECONDS``.

Every thread plays users in turn: it reads secrets (through a short-lived cache, so the server
is asked too), writes and reads contacts in user-scoped calls and transactions, and keeps a
session and a rate-limit counter in Valkey. Afterwards: zero errors, zero rows or sessions of
another user seen, every acknowledged write stored, and the pools and server connection counts
back to where they were. Throughput and p99 latency per port are printed.

CI runs it for 10 s (the default); run it for a minute locally with::

    CRM_SOAK_SECONDS=60 .venv/bin/python -m pytest tests/integration/test_battery_soak.py -s
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
import redis

from crm_infra.adapters import PostgresClient, ValkeyClient, VaultClient
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.devservers.openbao import OpenBaoServer
from crm_infra.user_context import user_context
from tests.fixtures.openbao import TEST_SECRETS, VaultMount
from tests.fixtures.postgres import truncate_all

pytestmark = pytest.mark.slow

THREADS = 16
USERS = 48
POOL_SIZE = 8


def soak_seconds() -> float:
    """The soak's length: ``CRM_SOAK_SECONDS`` (default 10, the CI minimum)."""
    return float(os.environ.get("CRM_SOAK_SECONDS", "10"))


class Stats:
    """Latencies per operation, errors and cross-tenant sightings, from every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.cross_tenant: list[str] = []
        self.inserted: dict[UUID, int] = defaultdict(int)

    def timed(self, port: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            result = call()
        except Exception as exc:
            with self.lock:
                self.errors.append(f"{port}: {type(exc).__name__}: {exc}")
            return None
        elapsed = time.perf_counter() - started
        with self.lock:
            self.latencies[port].append(elapsed)
        return result


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@pytest.fixture
def soak_db(pg_database: BootstrappedDatabase) -> Iterator[PostgresClient]:
    with PostgresClient(
        pg_database.app_url,
        POOL_SIZE,
        min_pool_size=POOL_SIZE,
        admin_connection_url=pg_database.admin_url,
        application_name="crm-soak",
    ) as client:
        truncate_all(client)
        yield client  # the test empties the tables and closes the client itself


def _server_connections(pg_database: BootstrappedDatabase) -> int:
    with psycopg.connect(pg_database.superuser_url, dbname=pg_database.database) as su:
        row = su.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'crm-soak'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _valkey_clients(url: str) -> int:
    with redis.Redis.from_url(url) as raw:
        return len(raw.client_list())


def test_soak_mixes_all_ports_with_no_error_and_no_cross_tenant_row(
    soak_db: PostgresClient,
    pg_database: BootstrappedDatabase,
    valkey_url: str,
    openbao_server: OpenBaoServer,
    vault_mount: VaultMount,
) -> None:
    db = soak_db
    with db.admin_transaction() as tx:
        users: list[UUID] = [
            row["id"]
            for row in tx.execute(
                "INSERT INTO users (email) SELECT 'soak' || g || '@example.com' "
                "FROM generate_series(1, %s) g RETURNING id",
                (USERS,),
            )
        ]
    valkey_before = _valkey_clients(valkey_url)
    threads_before = threading.active_count()
    stats = Stats()
    stop = threading.Event()
    kv = ValkeyClient(valkey_url, key_prefix="soak:")
    vault = VaultClient(
        openbao_server.addr, openbao_server.token, mount_point=vault_mount.name, cache_ttl=0.5
    )
    expected_db_url = TEST_SECRETS["crm/database"]["url"]

    def one_round(rng: random.Random) -> None:
        user = rng.choice(users)
        tag = str(user)
        # Secrets: the cache answers most reads, the server the rest.
        url = stats.timed("secrets", vault.get_database_url)
        if url is not None and url != expected_db_url:
            stats.errors.append("secrets: wrong database URL")
        # Database: a write, a read that must show only this user's rows, a transaction.
        def insert() -> list[Any]:
            # The current user from the context, as domain code would call it.
            with user_context(user):
                return db.execute(
                    "INSERT INTO contacts (name, email) VALUES (%s, %s)", (tag, f"{tag}@x")
                )

        if stats.timed("database", insert) is not None:
            with stats.lock:
                stats.inserted[user] += 1
        rows = stats.timed(
            "database",
            lambda: db.execute("SELECT user_id, name FROM contacts LIMIT 50", user_id=user),
        )
        for row in rows or []:
            if row["user_id"] != user or row["name"] != tag:
                with stats.lock:
                    stats.cross_tenant.append(f"{user} saw {row}")

        def in_transaction() -> int:
            with db.transaction(user) as tx:
                mine: int = tx.execute_scalar("SELECT count(*) FROM contacts")
                foreign: int = tx.execute_scalar(
                    "SELECT count(*) FROM contacts WHERE user_id <> %s OR name <> %s",
                    (user, tag),
                )
                if foreign:
                    with stats.lock:
                        stats.cross_tenant.append(f"{user} counted {foreign} foreign rows")
                return mine

        stats.timed("database", in_transaction)
        # Key-value: the user's session, and a rate-limit counter.
        session_key = f"session:{tag}"
        stats.timed("keyvalue", lambda: kv.set_json(session_key, {"user": tag}, 60))
        session = stats.timed("keyvalue", lambda: kv.get_json(session_key))
        if session is not None and session != {"user": tag}:
            with stats.lock:
                stats.cross_tenant.append(f"session of {user} read {session}")
        count = stats.timed("keyvalue", lambda: kv.hit(f"rl:{tag}", 60))
        if count is not None and count < 1:
            stats.errors.append("keyvalue: hit returned a count below 1")

    def worker(seed: int) -> None:
        rng = random.Random(seed)  # a load mix, not security
        while not stop.is_set():
            one_round(rng)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    started = time.monotonic()
    for thread in workers:
        thread.start()
    time.sleep(soak_seconds())
    stop.set()
    for thread in workers:
        thread.join(timeout=60)
        assert not thread.is_alive()
    duration = time.monotonic() - started

    total = sum(len(v) for v in stats.latencies.values())
    lines = [
        (
            f"soak: {duration:.1f} s, {THREADS} threads, {total} calls, "
            f"{total / duration:.0f} calls/s, {len(stats.errors)} errors, "
            f"{len(stats.cross_tenant)} cross-tenant sightings"
        )
    ]
    for port, values in sorted(stats.latencies.items()):
        lines.append(
            f"  {port:9} {len(values):7} calls {len(values) / duration:7.0f}/s  "
            f"p50 {_p(values, 0.50):6.2f} ms  p99 {_p(values, 0.99):6.2f} ms"
        )
    print("\n" + "\n".join(lines))

    assert stats.errors == [], stats.errors[:10]
    assert stats.cross_tenant == [], stats.cross_tenant[:10]
    assert set(stats.latencies) == {"secrets", "database", "keyvalue"}

    # Nothing acknowledged was lost.
    stored = {
        row["user_id"]: row["n"]
        for row in db.execute_admin(
            "SELECT user_id, count(*) AS n FROM contacts GROUP BY user_id"
        )
    }
    assert dict(stats.inserted) == stored

    # Pools and connections are back to normal.
    pool = db.pool.get_stats()
    assert pool["pool_size"] <= POOL_SIZE
    assert pool.get("requests_waiting", 0) == 0
    assert pool["pool_available"] == pool["pool_size"]  # every connection was given back
    assert _server_connections(pg_database) <= POOL_SIZE + 2  # app pool + admin pool
    truncate_all(db)
    kv.close()
    vault.close()
    db.close()
    # Closed connections leave the server (and threads end) within moments.
    _eventually(lambda: _server_connections(pg_database) == 0)
    _eventually(lambda: _valkey_clients(valkey_url) <= valkey_before)
    _eventually(lambda: threading.active_count() <= threads_before)


def _eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not back to normal in time"
        time.sleep(0.05)
