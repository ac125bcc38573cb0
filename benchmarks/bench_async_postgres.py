"""AsyncPostgresClient.execute under RLS against a raw async pool and asyncpg, in one run.

- raw: a raw ``AsyncConnectionPool`` doing the same work in one round trip, as an expert
  psycopg user would write it: the user and the statement timeout set transaction-locally, and
  the query, in one pipeline (one implicit transaction), a different user per call;
- floor (for scale, no target): the same query on a raw pool whose connections have one user
  set at session level, once, so a call does no user work at all (and serves one user only);
- asyncpg: a pooled ``fetch`` of the same query, which asyncpg prepares and caches per
  connection (the ``bench`` extra: ``pip install -e '.[bench]'``);
- adapter: ``AsyncPostgresClient.execute(query, params, user_id=...)``, a different user per
  call.

Targets: 1 round trip per call; latency <= 1.0x the raw async pool doing the same work and
<= 1.3x asyncpg (whose user, like the floor's, is set once per connection), one task;
throughput >= 1.0x the raw async pool doing the same work, with 64 tasks on a pool of 4.
Builds and drops its own database (``CRM_TEST_DATABASE_URL``, a superuser URL; default the
local server).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from tests.fixtures.roundtrips import RoundTripCounter

from benchmarks.bench_postgres import POOL, QUERY, _database, _seed, _via
from benchmarks.harness import Comparison, async_timer, compare, print_comparisons
from crm_infra.adapters import AsyncPostgresClient, PostgresClient
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.migrations import apply_migrations

TASKS = 64
THROUGHPUT_SECONDS = 2.0
THROUGHPUT_ROUNDS = 3
SET_USER = "SELECT set_config('app.current_user_id', %s, false)"
# What the adapter sets per call with its default statement_timeout (30 s): both, locally.
SET_USER_LOCAL = (
    "SELECT set_config('app.current_user_id', %s, true), "
    "set_config('statement_timeout', '30s', true)"
)

Call = Callable[[int], Awaitable[object]]


async def _floor_pool(url: str, user: UUID | None, size: int) -> AsyncConnectionPool[Any]:
    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        # Session-level, once per connection: RLS filters as for the adapter, at no per-call cost.
        if user is not None:
            await conn.execute(SET_USER, (str(user),))

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        kwargs={"autocommit": True, "row_factory": dict_row},
        min_size=size,
        max_size=size,
        configure=configure,
        open=False,
    )
    await pool.open(wait=True)
    return pool


async def _asyncpg_pool(url: str, user: UUID, size: int) -> Any:
    import asyncpg  # the bench extra; checked by the caller

    async def keep(conn: Any) -> None:
        # asyncpg's default reset on release costs a round trip (RESET ALL ...), which the
        # other two do not pay: the fastest asyncpg is the fairest floor.
        return None

    return await asyncpg.create_pool(
        url,
        min_size=size,
        max_size=size,
        reset=keep,
        # Set at connection start: RLS filters as for the adapter, at no per-call cost.
        server_settings={"app.current_user_id": str(user)},
    )


def _has_asyncpg() -> bool:
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return False
    return True


def _calls(  # noqa: PLR0917 - the three baselines and their data
    client: AsyncPostgresClient,
    floor: AsyncConnectionPool[Any],
    same: AsyncConnectionPool[Any],
    fast: Any,
    pairs: list[tuple[UUID, UUID]],
    floor_user: UUID,
) -> dict[str, Call]:
    floor_contacts = [c for u, c in pairs if u == floor_user]
    dollar_query = QUERY.replace("%s", "$1")

    async def adapter(i: int) -> object:
        user, contact = pairs[i % len(pairs)]
        rows = await client.execute(QUERY, (contact,), user_id=user)
        assert len(rows) == 1
        return rows

    async def raw(i: int) -> object:
        async with floor.connection() as conn:
            cur = await conn.execute(QUERY, (floor_contacts[i % len(floor_contacts)],))
            rows = await cur.fetchall()
        assert len(rows) == 1
        return rows

    async def raw_same_work(i: int) -> object:
        user, contact = pairs[i % len(pairs)]
        async with same.connection() as conn:
            # One pipeline, one implicit transaction: the setting holds for the query only.
            async with conn.pipeline():
                await conn.execute(SET_USER_LOCAL, (str(user),))
                cur = await conn.execute(QUERY, (contact,))
            rows = await cur.fetchall()
        assert len(rows) == 1
        return rows

    async def asyncpg_fetch(i: int) -> object:
        async with fast.acquire() as conn:
            rows = await conn.fetch(dollar_query, floor_contacts[i % len(floor_contacts)])
        assert len(rows) == 1
        return rows

    calls: dict[str, Call] = {"adapter": adapter, "floor": raw, "same": raw_same_work}
    if fast is not None:
        calls["asyncpg"] = asyncpg_fetch
    return calls


def _counter(fn: Call) -> Callable[[], Awaitable[object]]:
    state = {"i": 0}

    def run() -> Awaitable[object]:
        state["i"] += 1
        return fn(state["i"])

    return run


async def _throughput(fn: Call, tasks: int, seconds: float) -> float:
    done = [0] * tasks
    stop = asyncio.Event()

    async def worker(k: int) -> None:
        i = k * 1000
        while not stop.is_set():
            await fn(i)
            i += 1
            done[k] += 1

    start = time.perf_counter()
    workers = [asyncio.create_task(worker(k)) for k in range(tasks)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*workers)
    return sum(done) / (time.perf_counter() - start)


async def _round_trips(db: BootstrappedDatabase, pairs: list[tuple[UUID, UUID]]) -> float:
    params = conninfo_to_dict(db.app_url)
    host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
    calls = 200
    with RoundTripCounter(host, port) as proxy:
        async with AsyncPostgresClient(_via(db.app_url, proxy.port), 1, min_pool_size=1) as client:
            for i in range(20):  # warm: connection open, statements prepared
                user, contact = pairs[i % len(pairs)]
                await client.execute(QUERY, (contact,), user_id=user)
            proxy.reset()
            for i in range(calls):
                user, contact = pairs[i % len(pairs)]
                await client.execute(QUERY, (contact,), user_id=user)
            return proxy.turns / calls


def _measure(
    loop: asyncio.AbstractEventLoop, db: BootstrappedDatabase, pairs: list[tuple[UUID, UUID]]
) -> tuple[list[Comparison], list[Comparison]]:
    floor_user = pairs[0][0]
    client = AsyncPostgresClient(db.app_url, POOL, min_pool_size=POOL)
    loop.run_until_complete(client.open())
    floor = loop.run_until_complete(_floor_pool(db.app_url, floor_user, POOL))
    same = loop.run_until_complete(_floor_pool(db.app_url, None, POOL))
    fast = None
    if _has_asyncpg():
        fast = loop.run_until_complete(_asyncpg_pool(db.app_url, floor_user, POOL))
    try:
        fns = _calls(client, floor, same, fast, pairs, floor_user)
        timer = async_timer(loop)
        baselines = [
            ("raw AsyncConnectionPool, same work", "same", 1.0),
            ("raw pool, user set once (floor)", "floor", None),
        ]
        if "asyncpg" in fns:
            baselines.append(("asyncpg prepared fetch", "asyncpg", 1.3))
        latency = [
            compare(
                "async execute (RLS, 1 user per call)",
                _counter(fns["adapter"]),
                label,
                _counter(fns[key]),
                calls=500,
                target=target,
                timer=timer,
            )
            for label, key, target in baselines
        ]
        throughput = [
            Comparison("async execute", label, target=target, higher_is_better=True)
            for label, key, target in baselines[:2]
        ]
        for _ in range(THROUGHPUT_ROUNDS):
            for row, (_label, key, _target) in zip(throughput, baselines, strict=False):
                row.adapter_s.append(
                    loop.run_until_complete(_throughput(fns["adapter"], TASKS, THROUGHPUT_SECONDS))
                )
                row.baseline_s.append(
                    loop.run_until_complete(_throughput(fns[key], TASKS, THROUGHPUT_SECONDS))
                )
        return latency, throughput
    finally:
        if fast is not None:
            loop.run_until_complete(fast.close())
        loop.run_until_complete(floor.close())
        loop.run_until_complete(same.close())
        loop.run_until_complete(client.close())


def main() -> bool:
    """Run the comparison; print the table; return True when every target is met."""
    with _database() as db:
        with PostgresClient(db.app_url, POOL, admin_connection_url=db.admin_url) as setup:
            apply_migrations(setup)
            pairs = _seed(setup)
        loop = asyncio.new_event_loop()
        try:
            trips = loop.run_until_complete(_round_trips(db, pairs))
            latency, throughput = _measure(loop, db, pairs)
        finally:
            loop.close()
    trips_ok = trips == 1.0
    print(f"\n== asyncio PostgreSQL round trips per call: execute {trips:.2f} "
          f"(== 1 {'met' if trips_ok else 'MISSED'})")
    print_comparisons("asyncio PostgreSQL latency, one task", latency)
    missing_asyncpg = len(latency) < 2
    if missing_asyncpg:
        print("asyncpg: not installed (pip install -e '.[bench]'); its row MISSED")
    print(f"\n== asyncio PostgreSQL throughput, {TASKS} tasks on a pool of {POOL}")
    for row in throughput:
        verdict = "" if row.met is None else (
            f" (>= {row.target} {'met' if row.met else 'MISSED'})"
        )
        print(
            f"execute {row.adapter:8.0f}/s   {row.baseline_name} {row.baseline:8.0f}/s   "
            f"ratio {row.ratio:.3f}x{verdict}"
        )
    latency_ok = all(c.met is not False for c in latency)
    throughput_ok = all(row.met is not False for row in throughput)
    return trips_ok and latency_ok and not missing_asyncpg and throughput_ok


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
