"""ValkeyClient against raw redis-py on the same local Valkey, in one run.

Targets: ``get`` and ``set`` within 1.15x of redis-py's own; ``hit`` (INCR plus EXPIRE NX in
one script call) within 1.3x of a single raw ``INCR``, i.e. one round trip.
"""

from __future__ import annotations

import redis

from benchmarks.harness import compare, print_comparisons
from crm_infra.adapters import ValkeyClient
from crm_infra.devservers.valkey import ValkeyDevServer

CALLS = 1000
ROUNDS = 15


def main() -> bool:
    """Run the comparisons on a private Valkey; return True when every target is met."""
    with ValkeyDevServer() as server:
        raw = redis.Redis.from_url(server.url, decode_responses=True)
        kv = ValkeyClient(server.url, key_prefix="bench:")
        with raw, kv:
            kv.set("get", "x" * 100)
            raw.set("get", "x" * 100)
            value = "y" * 100
            comparisons = [
                compare(
                    "ValkeyClient.get",
                    lambda: kv.get("get"),
                    "redis-py get",
                    lambda: raw.get("get"),
                    calls=CALLS,
                    rounds=ROUNDS,
                    target=1.15,
                ),
                compare(
                    "ValkeyClient.set",
                    lambda: kv.set("set", value),
                    "redis-py set",
                    lambda: raw.set("set", value),
                    calls=CALLS,
                    rounds=ROUNDS,
                    target=1.15,
                ),
                compare(
                    "ValkeyClient.set (expire_seconds)",
                    lambda: kv.set("setex", value, expire_seconds=60),
                    "redis-py set ex=",
                    lambda: raw.set("setex", value, ex=60),
                    calls=CALLS,
                    rounds=ROUNDS,
                    target=1.15,
                ),
                compare(
                    "ValkeyClient.hit",
                    lambda: kv.hit("hit", 3600),
                    "redis-py incr",
                    lambda: raw.incr("incr"),
                    calls=CALLS,
                    rounds=ROUNDS,
                    target=1.3,
                ),
            ]
    print_comparisons("key-value: ValkeyClient vs redis-py (same server, one run)", comparisons)
    return all(c.met for c in comparisons)


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
