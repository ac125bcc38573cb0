"""Secret reads: VaultClient against a raw hvac ``read_secret_version`` on the same OpenBao.

Target: a cached ``get_secret`` at least 1,000x faster than a raw hvac read (the point of the
cache: a secret on a hot path costs a dict copy, not an HTTP round trip). The uncached adapter
read is printed beside it to show what validation and translation cost on top of hvac.

Run: ``python -m benchmarks secrets`` (starts and stops its own OpenBao dev server).
"""

from __future__ import annotations

import hvac

from benchmarks.harness import compare, print_comparisons
from crm_infra.adapters import VaultClient
from crm_infra.devservers.openbao import openbao_dev_server

SPEEDUP_TARGET = 1000.0
PATH = "crm/database"
SECRET = {
    "url": "postgresql://crm_app:app-password@127.0.0.1:5432/crm",
    "admin_url": "postgresql://crm_admin:admin-password@127.0.0.1:5432/crm",
}


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
        raw.adapter.close()

    # ratio = adapter time / raw hvac time: the cached row is far below 1.
    print_comparisons("secret reads (OpenBao dev server on loopback)", [cached_cmp, uncached_cmp])
    speedup = 1 / cached_cmp.ratio
    met = speedup >= SPEEDUP_TARGET
    print(
        f"cached get_secret is {speedup:,.0f}x faster than a raw hvac read"
        f" (target: at least {SPEEDUP_TARGET:,.0f}x) -> {'met' if met else 'MISSED'}"
    )
    print(
        f"uncached get_secret costs {uncached_cmp.ratio:.3f}x a raw hvac read"
        " (path validation, error translation, copy)"
    )
    return met


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
