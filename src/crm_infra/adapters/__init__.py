"""Real adapters: Vault (hvac), PostgreSQL (psycopg_pool) and Valkey (redis-py).

Only the composition root and code that wires a process together should import from here;
domain code depends on :mod:`crm_infra.ports`.
"""

from crm_infra.adapters.postgres import PostgresClient, PostgresError
from crm_infra.adapters.valkey import ValkeyClient, ValkeyError
from crm_infra.adapters.vault import VaultClient, VaultError

__all__ = [
    "PostgresClient",
    "PostgresError",
    "ValkeyClient",
    "ValkeyError",
    "VaultClient",
    "VaultError",
]
