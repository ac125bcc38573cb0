"""AsyncValkeyClient against raw ``redis.asyncio`` on the same local Valkey, in one run, one
task at a time (latency) and with 64 tasks at once (throughput).

Targets: ``get`` and ``set`` within 1.15x of ``redis.asyncio``'s own; ``hit`` within 1.3x of a
single raw ``INCR`` (one round trip); 64-task throughput of ``get`` at least 0.87x the raw
client's (1 / 1.15), with the adapter's pool bounded at 64 and the raw pool unbounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aredis

from benchmarks.harness import Comparison, async_timer, compare, print_comparisons
from crm_infra.adapters import AsyncValkeyClient
from crm_infra.devservers.valkey import ValkeyDevServer

CALLS = 1000
ROUNDS = 15
TASKS = 64
THROUGHPUT_SECONDS = 1.0
THROUGHPUT_ROUNDS = 5


async def _throughput(fn: Callable[[], Awaitable[object]], seconds: float) -> float:
    done = [0] * TASKS
    stop = asyncio.Event()

    async def worker(k: int) -> None:
        while not stop.is_set():
            await fn()
            done[k] += 1

    start = time.perf_counter()
    workers = [asyncio.create_task(worker(k)) for k in range(TASKS)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*workers)
    return sum(done) / (time.perf_counter() - start)


def _measure(loop: asyncio.AbstractEventLoop, url: str) -> tuple[list[Comparison], Comparison]:
    kv = AsyncValkeyClient(url, key_prefix="bench:", max_connections=TASKS)
    raw: Any = aredis.Redis.from_url(url, decode_responses=True)
    value = "y" * 100
    loop.run_until_complete(kv.open())
    loop.run_until_complete(kv.set("get", "x" * 100))
    loop.run_until_complete(raw.set("get", "x" * 100))
    timer = async_timer(loop)
    try:
        latency = [
            compare(
                "AsyncValkeyClient.get", lambda: kv.get("get"),
                "redis.asyncio get", lambda: raw.get("get"),
                calls=CALLS, rounds=ROUNDS, target=1.15, timer=timer,
            ),
            compare(
                "AsyncValkeyClient.set", lambda: kv.set("set", value),
                "redis.asyncio set", lambda: raw.set("set", value),
                calls=CALLS, rounds=ROUNDS, target=1.15, timer=timer,
            ),
            compare(
                "AsyncValkeyClient.hit", lambda: kv.hit("hit", 3600),
                "redis.asyncio incr", lambda: raw.incr("incr"),
                calls=CALLS, rounds=ROUNDS, target=1.3, timer=timer,
            ),
        ]
        throughput = Comparison(
            "AsyncValkeyClient.get", "redis.asyncio get", target=1 / 1.15, higher_is_better=True
        )
        for _ in range(THROUGHPUT_ROUNDS):
            throughput.adapter_s.append(
                loop.run_until_complete(_throughput(lambda: kv.get("get"), THROUGHPUT_SECONDS))
            )
            throughput.baseline_s.append(
                loop.run_until_complete(_throughput(lambda: raw.get("get"), THROUGHPUT_SECONDS))
            )
        return latency, throughput
    finally:
        loop.run_until_complete(kv.close())
        loop.run_until_complete(raw.aclose())


def main() -> bool:
    """Run the comparisons on a private Valkey; return True when every target is met."""
    with ValkeyDevServer() as server:
        loop = asyncio.new_event_loop()
        try:
            latency, throughput = _measure(loop, server.url)
        finally:
            loop.close()
    print_comparisons("asyncio key-value latency, one task (same server, one run)", latency)
    print(
        f"\n== asyncio key-value throughput, {TASKS} tasks (calls per second, higher is "
        f"better)\n   AsyncValkeyClient {throughput.adapter:,.0f}/s, "
        f"raw {throughput.baseline:,.0f}/s: {throughput.ratio:.2f}x (>= {throughput.target:.2f} "
        f"{'met' if throughput.met else 'MISSED'})"
    )
    return all(c.met for c in latency) and bool(throughput.met)


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
