"""Secret reads: VaultClient against a raw hvac ``read_secret_version`` on the same OpenBao, and
AsyncVaultClient against the same raw read in a thread (``asyncio.to_thread``).

Target: a cached ``get_secret`` at least 1,000x faster than a raw hvac read (the point of the
cache: a secret on a hot path costs a dict copy, not an HTTP round trip), for both clients
(the asyncio one answers a hit on the loop, with no thread). The uncached reads are printed
beside them to show what validation, translation and (asyncio) the client's own executor cost
on top of hvac, and what the thread costs against a synchronous read.

Run: ``python -m benchmarks secrets`` (starts and stops its own OpenBao dev server).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import hvac

from benchmarks.harness import Comparison, async_timer, compare, print_comparisons
from crm_infra.adapters import AsyncVaultClient, VaultClient
from crm_infra.devservers.openbao import openbao_dev_server

SPEEDUP_TARGET = 1000.0
PATH = "crm/database"
SECRET = {
    "url": "postgresql://crm_app:app-password@127.0.0.1:5432/crm",
    "admin_url": "postgresql://crm_admin:admin-password@127.0.0.1:5432/crm",
}


def _async_comparisons(addr: str, token: str, raw_read: Callable[[], object]) -> list[Comparison]:
    """Time AsyncVaultClient reads, cached and not, against a raw hvac read in a thread (and,
    last, the uncached read against a raw read without one), on an event loop of their own."""

    async def raw_read_in_thread() -> object:
        return await asyncio.to_thread(raw_read)

    async def raw_read_here() -> object:  # blocking the loop, as no asyncio code should
        return raw_read()

    def read_with(client: AsyncVaultClient) -> Callable[[], Awaitable[object]]:
        return lambda: client.get_secret(PATH)

    loop = asyncio.new_event_loop()
    cached = AsyncVaultClient(addr, token, cache_ttl=3600)
    uncached = AsyncVaultClient(addr, token)
    try:
        for client in (cached, uncached):
            assert loop.run_until_complete(client.get_secret(PATH)) == raw_read()
        in_thread, timer = "raw hvac read in a thread", async_timer(loop)
        rows = [
            ("cached AsyncVaultClient.get_secret", cached, in_thread, raw_read_in_thread),
            ("uncached AsyncVaultClient read", uncached, in_thread, raw_read_in_thread),
            ("uncached AsyncVaultClient read", uncached, "raw hvac read", raw_read_here),
        ]
        return [
            compare(name, read_with(client), base, baseline, calls=300, timer=timer)
            for name, client, base, baseline in rows
        ]
    finally:
        for client in (cached, uncached):
            loop.run_until_complete(client.close())
        loop.close()


def main() -> bool:
    """Run the comparisons, print them, and return True when the cache meets its target."""
    with openbao_dev_server() as server:
        raw = hvac.Client(url=server.addr, token=server.token, timeout=5)
        raw.secrets.kv.v2.create_or_update_secret(path=PATH, secret=SECRET)

        def raw_read() -> object:
            return raw.secrets.kv.v2.read_secret_version(
                path=PATH, raise_on_deleted_version=True
            )["data"]["data"]

        with (
            VaultClient(server.addr, server.token, cache_ttl=3600) as cached,
            VaultClient(server.addr, server.token) as uncached,
        ):
            assert cached.get_secret(PATH) == uncached.get_secret(PATH) == raw_read()
            cached_cmp = compare(
                "cached VaultClient.get_secret",
                lambda: cached.get_secret(PATH),
                "raw hvac read_secret_version",
                raw_read,
                calls=300,
            )
            uncached_cmp = compare(
                "uncached VaultClient.get_secret",
                lambda: uncached.get_secret(PATH),
                "raw hvac read_secret_version",
                raw_read,
                calls=300,
            )
        async_cmps = _async_comparisons(server.addr, server.token, raw_read)
        raw.adapter.close()

    # ratio = adapter time / raw hvac time: the cached rows are far below 1.
    print_comparisons("secret reads (OpenBao dev server on loopback)", [cached_cmp, uncached_cmp])
    print_comparisons("asyncio secret reads (the same server)", async_cmps)
    met = True
    for comparison in (cached_cmp, async_cmps[0]):
        speedup = 1 / comparison.ratio
        met = speedup >= SPEEDUP_TARGET and met
        print(
            f"{comparison.name} is {speedup:,.0f}x faster than a {comparison.baseline_name}"
            f" (target: at least {SPEEDUP_TARGET:,.0f}x) -> "
            f"{'met' if speedup >= SPEEDUP_TARGET else 'MISSED'}"
        )
    print(
        f"uncached get_secret costs {uncached_cmp.ratio:.3f}x a raw hvac read"
        " (path validation, error translation, copy)"
    )
    print(
        f"uncached AsyncVaultClient.get_secret costs {async_cmps[1].ratio:.3f}x a raw hvac read"
        f" in a thread, {async_cmps[2].ratio:.3f}x one without a thread"
    )
    return met


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
