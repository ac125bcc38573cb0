"""Real adapters: Vault (hvac), PostgreSQL (psycopg_pool) and Valkey (redis-py).

Only the composition root and code that wires a process together should import from here;
domain code depends on :mod:`crm_infra.ports`.

Each name is imported on first use (PEP 562), so that using one backend never imports the
others' drivers: the in-memory default, which runs the Valkey adapter's code over fakeredis,
imports neither psycopg nor hvac.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crm_infra.adapters.postgres import AsyncPostgresClient, PostgresClient, PostgresError
    from crm_infra.adapters.valkey import AsyncValkeyClient, ValkeyClient, ValkeyError
    from crm_infra.adapters.vault import AsyncVaultClient, VaultClient, VaultError

__all__ = [
    "AsyncPostgresClient",
    "AsyncValkeyClient",
    "AsyncVaultClient",
    "PostgresClient",
    "PostgresError",
    "ValkeyClient",
    "ValkeyError",
    "VaultClient",
    "VaultError",
]

_HOMES = {
    "AsyncPostgresClient": "crm_infra.adapters.postgres",
    "AsyncValkeyClient": "crm_infra.adapters.valkey",
    "AsyncVaultClient": "crm_infra.adapters.vault",
    "PostgresClient": "crm_infra.adapters.postgres",
    "PostgresError": "crm_infra.adapters.postgres",
    "ValkeyClient": "crm_infra.adapters.valkey",
    "ValkeyError": "crm_infra.adapters.valkey",
    "VaultClient": "crm_infra.adapters.vault",
    "VaultError": "crm_infra.adapters.vault",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: later look-ups find it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
