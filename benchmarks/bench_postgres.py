"""PostgresClient.execute under RLS against the raw floor and the naive pattern, in one run.

- floor: a raw pooled psycopg query in autocommit, same server, same app role, same query and
  rows (the user is set once per connection at session level, so RLS still filters);
- naive: the five-round-trip pattern (set_config, query, clear, in a psycopg transaction);
- adapter: ``PostgresClient.execute(query, params, user_id=...)``, a different user per call.

Targets: 1 round trip per call, latency <= 1.10x the floor, throughput >= 0.95x the floor with
8 threads on a pool of 4. Builds and drops its own database (``CRM_TEST_DATABASE_URL``, a
superuser URL; default the local server).

Then the same through a real PgBouncer in ``pool_mode = transaction`` (Debian's ``pgbouncer``,
started on a free port): ``execute`` against a raw pooled psycopg query through the same
bouncer (psycopg's own preparing off, as PgBouncer before 1.21 needs; the floor's user is set
on each server connection by the bouncer's ``connect_query``, so RLS filters as for the
adapter at no per-call cost). Round trips are counted at a proxy in front of the bouncer.
Target: 1 round trip per call, latency <= 1.15x the floor through the bouncer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from tests.fixtures.pgbouncer import PgBouncer, find_pgbouncer, running_pgbouncer
from tests.fixtures.postgres import superuser_url_from_env
from tests.fixtures.roundtrips import RoundTripCounter

from benchmarks.harness import Comparison, compare, print_comparisons
from crm_infra.adapters import PostgresClient
from crm_infra.bootstrap import BootstrappedDatabase, create_database, drop_database
from crm_infra.migrations import apply_migrations

QUERY = "SELECT id, name, email FROM contacts WHERE id = %s"
USERS = 50
CONTACTS_PER_USER = 20
POOL = 4
THREADS = 8
THROUGHPUT_SECONDS = 2.0
THROUGHPUT_ROUNDS = 3


def _seed(client: PostgresClient) -> list[tuple[UUID, UUID]]:
    """Create users with contacts; return (user, contact) pairs."""
    pairs: list[tuple[UUID, UUID]] = []
    with client.admin_transaction() as tx:
        for i in range(USERS):
            user = tx.execute_scalar(
                "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"u{i}@example.com",)
            )
            rows = tx.execute(
                "INSERT INTO contacts (user_id, name, email) "
                "SELECT %s, 'c' || g, 'c' || g || '@example.com' "
                "FROM generate_series(1, %s) g RETURNING id",
                (user, CONTACTS_PER_USER),
            )
            pairs += [(user, row["id"]) for row in rows]
    return pairs


def _floor_pool(url: str, user: UUID | None, size: int) -> ConnectionPool[Any]:
    """A raw pool; ``user`` set once per connection (None: the bouncer sets it)."""

    def configure(conn: psycopg.Connection[Any]) -> None:
        # Session-level, once per connection: RLS filters as for the adapter, at no per-call cost.
        conn.execute("SELECT set_config('app.current_user_id', %s, false)", (str(user),))

    kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
    if user is None:
        kwargs["prepare_threshold"] = None  # a transaction pooler mixes up psycopg's names
    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        kwargs=kwargs,
        min_size=size,
        max_size=size,
        configure=configure if user is not None else None,
        open=True,
    )
    pool.wait()
    return pool


def _naive_pool(url: str, size: int) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = ConnectionPool(
        url, kwargs={"row_factory": dict_row}, min_size=size, max_size=size, open=True
    )
    pool.wait()
    return pool


def _calls(
    client: PostgresClient,
    floor: ConnectionPool[Any],
    naive: ConnectionPool[Any],
    pairs: list[tuple[UUID, UUID]],
    floor_user: UUID,
) -> dict[str, Callable[[int], object]]:
    floor_contacts = [c for u, c in pairs if u == floor_user]

    def adapter(i: int) -> object:
        user, contact = pairs[i % len(pairs)]
        rows = client.execute(QUERY, (contact,), user_id=user)
        assert len(rows) == 1
        return rows

    def raw(i: int) -> object:
        with floor.connection() as conn:
            rows = conn.execute(QUERY, (floor_contacts[i % len(floor_contacts)],)).fetchall()
        assert len(rows) == 1
        return rows

    def naive_pattern(i: int) -> object:
        user, contact = pairs[i % len(pairs)]
        with naive.connection() as conn:
            conn.execute("SELECT set_config('app.current_user_id', %s, true)", (str(user),))
            rows = conn.execute(QUERY, (contact,)).fetchall()
            conn.execute("SELECT set_config('app.current_user_id', '', true)")
        assert len(rows) == 1
        return rows

    return {"adapter": adapter, "floor": raw, "naive": naive_pattern}


def _counter(fn: Callable[[int], object]) -> Callable[[], object]:
    """Adapt ``fn(i)`` to the harness's no-argument calls, counting ``i`` up."""
    state = {"i": 0}

    def run() -> object:
        state["i"] += 1
        return fn(state["i"])

    return run


def _throughput(fn: Callable[[int], object], threads: int, seconds: float) -> float:
    done = [0] * threads
    stop = threading.Event()

    def worker(k: int) -> None:
        i = k * 1000
        while not stop.is_set():
            fn(i)
            i += 1
            done[k] += 1

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - start)


@contextmanager
def _database() -> Iterator[BootstrappedDatabase]:
    created = create_database(superuser_url_from_env(), prefix="crm_bench")
    try:
        yield created
    finally:
        drop_database(created)


def _via(url: str, port: int) -> str:
    return make_conninfo(url, host="127.0.0.1", port=str(port))


def _round_trips(db: BootstrappedDatabase, pairs: list[tuple[UUID, UUID]]) -> dict[str, float]:
    params = conninfo_to_dict(db.app_url)
    host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
    per_call: dict[str, float] = {}
    calls = 200
    with RoundTripCounter(host, port) as proxy:
        url = _via(db.app_url, proxy.port)
        with (
            PostgresClient(url, 1, min_pool_size=1) as client,
            _floor_pool(url, pairs[0][0], 1) as floor,
            _naive_pool(url, 1) as naive,
        ):
            fns = _calls(client, floor, naive, pairs, pairs[0][0])
            for name, fn in fns.items():
                for i in range(20):  # warm: connections open, statements prepared
                    fn(i)
                proxy.reset()
                for i in range(calls):
                    fn(i)
                per_call[name] = proxy.turns / calls
    return per_call


FLOOR_ALIAS = "crm_bench_floor"


def _bouncer_floor_alias(user: UUID) -> dict[str, str]:
    # Dollar quotes: the bouncer's connection-string syntax takes the value in single quotes.
    query = f"SELECT set_config($$app.current_user_id$$, $${user}$$, false)"
    return {FLOOR_ALIAS: f"connect_query='{query}'"}


def _through_bouncer(db: BootstrappedDatabase, pairs: list[tuple[UUID, UUID]]) -> bool:
    """The PgBouncer column: round trips, latency and throughput; True when targets are met."""
    binary = find_pgbouncer()
    if binary is None:
        print("\n== PgBouncer: not installed (apt-get install pgbouncer); column MISSED")
        return False
    floor_user = pairs[0][0]
    with running_pgbouncer(
        binary, db, pool_size=POOL, aliases=_bouncer_floor_alias(floor_user)
    ) as bouncer:
        trips = _bouncer_round_trips(bouncer, pairs)
        print("\n== through PgBouncer (transaction mode): round trips per call at a proxy")
        for name, value in trips.items():
            print(f"{name:10} {value:5.2f}")
        with (
            PostgresClient(bouncer.app_url, POOL, min_pool_size=POOL) as client,
            _floor_pool(bouncer.url(alias=FLOOR_ALIAS), None, POOL) as floor,
        ):
            fns = _bouncer_calls(client, floor, pairs, floor_user)
            latency = compare(
                "execute through PgBouncer",
                _counter(fns["adapter"]),
                "raw pooled psycopg, same bouncer",
                _counter(fns["floor"]),
                calls=500,
                target=1.15,
            )
            print_comparisons("through PgBouncer: latency, one thread", [latency])
            throughput = Comparison("execute", "raw", target=0.95, higher_is_better=True)
            for _ in range(THROUGHPUT_ROUNDS):
                throughput.adapter_s.append(
                    _throughput(fns["adapter"], THREADS, THROUGHPUT_SECONDS)
                )
                throughput.baseline_s.append(_throughput(fns["floor"], THREADS, THROUGHPUT_SECONDS))
            print(
                f"\n== through PgBouncer: throughput, {THREADS} threads on a pool of {POOL}\n"
                f"execute {throughput.adapter:8.0f}/s   floor {throughput.baseline:8.0f}/s   "
                f"ratio {throughput.ratio:.3f}x (reported)"
            )
    trips_ok = trips["adapter"] == 1.0
    print(
        f"round trips through PgBouncer: execute {trips['adapter']:.2f} per call "
        f"(== 1 {'met' if trips_ok else 'MISSED'})"
    )
    return trips_ok and bool(latency.met)


def _bouncer_calls(
    client: PostgresClient,
    floor: ConnectionPool[Any],
    pairs: list[tuple[UUID, UUID]],
    floor_user: UUID,
) -> dict[str, Callable[[int], object]]:
    fns = _calls(client, floor, floor, pairs, floor_user)
    return {"adapter": fns["adapter"], "floor": fns["floor"]}


def _bouncer_round_trips(bouncer: PgBouncer, pairs: list[tuple[UUID, UUID]]) -> dict[str, float]:
    per_call: dict[str, float] = {}
    calls = 200
    floor_user = pairs[0][0]
    with (
        RoundTripCounter(bouncer.host, bouncer.port) as proxy,
        PostgresClient(bouncer.url(port=proxy.port), 1, min_pool_size=1) as client,
        _floor_pool(bouncer.url(port=proxy.port, alias=FLOOR_ALIAS), None, 1) as floor,
    ):
        fns = _bouncer_calls(client, floor, pairs, floor_user)
        for name, fn in fns.items():
            for i in range(50):  # warm: every server connection meets the statement
                fn(i)
            proxy.reset()
            for i in range(calls):
                fn(i)
            per_call[name] = proxy.turns / calls
    return per_call


def main() -> bool:
    """Run the comparison; print the table; return True when every target is met."""
    with _database() as db:
        with PostgresClient(db.app_url, POOL, admin_connection_url=db.admin_url) as setup:
            apply_migrations(setup)
            pairs = _seed(setup)
        floor_user = pairs[0][0]

        trips = _round_trips(db, pairs)
        print("\n== PostgreSQL round trips per call (counted at a TCP proxy)")
        for name, value in trips.items():
            print(f"{name:10} {value:5.2f}")
        trips_ok = trips["adapter"] == 1.0

        with (
            PostgresClient(db.app_url, POOL, min_pool_size=POOL) as client,
            _floor_pool(db.app_url, floor_user, POOL) as floor,
            _naive_pool(db.app_url, POOL) as naive,
        ):
            fns = _calls(client, floor, naive, pairs, floor_user)
            latency = [
                compare(
                    "execute (RLS, 1 user per call)",
                    _counter(fns["adapter"]),
                    "raw pooled psycopg",
                    _counter(fns["floor"]),
                    calls=500,
                    target=1.10,
                ),
                compare(
                    "naive pattern",
                    _counter(fns["naive"]),
                    "raw pooled psycopg",
                    _counter(fns["floor"]),
                    calls=300,
                ),
            ]
            print_comparisons("PostgreSQL latency, one thread", latency)

            throughput = Comparison(
                "execute (RLS)", "raw pooled psycopg", target=0.95, higher_is_better=True
            )
            naive_tp: list[float] = []
            for _ in range(THROUGHPUT_ROUNDS):
                throughput.adapter_s.append(
                    _throughput(fns["adapter"], THREADS, THROUGHPUT_SECONDS)
                )
                throughput.baseline_s.append(_throughput(fns["floor"], THREADS, THROUGHPUT_SECONDS))
                naive_tp.append(_throughput(fns["naive"], THREADS, THROUGHPUT_SECONDS))
            print(f"\n== PostgreSQL throughput, {THREADS} threads on a pool of {POOL}")
            naive_median = sorted(naive_tp)[len(naive_tp) // 2]
            print(
                f"execute {throughput.adapter:8.0f}/s   floor {throughput.baseline:8.0f}/s   "
                f"naive {naive_median:8.0f}/s   ratio {throughput.ratio:.3f}x "
                f"(>= 0.95 {'met' if throughput.met else 'MISSED'}); naive "
                f"{naive_median / throughput.baseline:.3f}x"
            )
        verdict = "met" if trips_ok else "MISSED"
        print(f"round trips: execute {trips['adapter']:.2f} per call (== 1 {verdict})")
        bouncer_ok = _through_bouncer(db, pairs)
    direct_ok = trips_ok and all(c.met for c in latency if c.target) and bool(throughput.met)
    return direct_ok and bouncer_ok


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
