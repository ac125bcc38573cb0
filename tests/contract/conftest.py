"""The backends every contract suite runs against.

To add a backend, add ONE entry to ``DB_BACKENDS`` (its name and the fixture that yields it,
already reset for the test); every test in ``test_user_scoped_db.py`` then runs on it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, cast

import pytest

from crm_infra.fakes import InMemoryUserScopedDB
from crm_infra.ports import AdminDB, UserScopedDB

DB_BACKENDS: dict[str, str] = {
    "memory": "memory_db",
    "postgres": "pg_db",
    "pgbouncer": "pgbouncer_db",  # PostgreSQL through PgBouncer, transaction mode
}
REAL_BACKENDS = frozenset({"postgres", "pgbouncer"})  # marked ``real``: left out by --skip-real


class ContractDB(UserScopedDB, AdminDB, Protocol):
    """What the database contract tests need: both ports on one object."""


@pytest.fixture
def memory_db() -> Iterator[InMemoryUserScopedDB]:
    """A fresh in-memory fake built from the same sql/ files."""
    with InMemoryUserScopedDB() as fake:
        yield fake


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.real] if name in REAL_BACKENDS else [])
        for name in sorted(DB_BACKENDS)
    ]
)
def db(request: pytest.FixtureRequest) -> ContractDB:
    """A database backend with empty CRM tables, both user-scoped and admin."""
    return cast(ContractDB, request.getfixturevalue(DB_BACKENDS[request.param]))
