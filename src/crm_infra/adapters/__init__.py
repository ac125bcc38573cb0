"""Real adapters: Vault (hvac), PostgreSQL (psycopg_pool) and Valkey (redis-py).

Only the composition root and code that wires a process together should import from here;
domain code depends on :mod:`crm_infra.ports`.
"""

from crm_infra.adapters.postgres import PostgresClient, PostgresError

__all__: list[str] = ["PostgresClient", "PostgresError"]
