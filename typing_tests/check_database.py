"""Type-check only: the PostgreSQL adapter satisfies both database ports (mypy proves it)."""

from __future__ import annotations

from crm_infra.adapters import PostgresClient
from crm_infra.ports import AdminDB, UserScopedDB


def _adapter_is_both_ports(client: PostgresClient) -> None:
    user_scoped: UserScopedDB = client
    admin: AdminDB = client
