"""Type-check only: the in-memory database fake satisfies both database ports.

Never run; ``mypy`` fails here if the fake drifts from :class:`UserScopedDB` or :class:`AdminDB`.
"""

from __future__ import annotations

from crm_infra.fakes import InMemoryUserScopedDB
from crm_infra.ports import AdminDB, Transaction, UserScopedDB


def check_fake_database() -> None:
    fake = InMemoryUserScopedDB()
    user_scoped: UserScopedDB = fake
    admin: AdminDB = fake
    with fake.transaction() as tx:
        handle: Transaction = tx
    with fake.admin_transaction() as admin_tx:
        admin_handle: Transaction = admin_tx
