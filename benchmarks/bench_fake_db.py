"""A user-scoped SELECT by id: the in-memory fake against PostgreSQL through PostgresClient.

The target is the fake answering at least 10x faster than the real database, so that domain
unit tests written against ``UserScopedDB`` run in microseconds. Both sides run the same
statement, for the same user, on the same data; the PostgreSQL side uses a throwaway database
on the server from ``CRM_TEST_DATABASE_URL`` (default: the local server), dropped afterwards.
"""

from __future__ import annotations

from typing import Protocol
from uuid import UUID, uuid4

from benchmarks.harness import compare, print_comparisons, time_per_call
from crm_infra.fakes import InMemoryUserScopedDB
from crm_infra.ports import AdminDB, UserScopedDB

TARGET_SPEEDUP = 10.0
CALLS = 1000
QUERY = "SELECT id, name, email, created_at FROM contacts WHERE id = %s"


class _BothPorts(UserScopedDB, AdminDB, Protocol):
    """Both database ports on one object, as the fake and PostgresClient offer them."""


def _seed(db: _BothPorts, user: UUID, contacts: int = 200) -> UUID:
    """Create one user with ``contacts`` contacts; return the id of one of them."""
    db.execute_admin("INSERT INTO users (id, email) VALUES (%s, %s)", (user, f"{user}@x.org"))
    ids = [
        db.execute_scalar(
            "INSERT INTO contacts (name, email) VALUES (%s, %s) RETURNING id",
            (f"Contact {i}", f"c{i}@example.com"),
            user_id=user,
        )
        for i in range(contacts)
    ]
    chosen: UUID = ids[len(ids) // 2]
    return chosen


def _fake_alone() -> bool:
    fake = InMemoryUserScopedDB()
    user = uuid4()
    contact = _seed(fake, user)
    per_call = time_per_call(lambda: fake.execute(QUERY, (contact,), user_id=user), CALLS)
    print(f"\n== in-memory fake: user-scoped SELECT by id: {per_call * 1e6:.2f} us per call")
    return True


def main() -> bool:
    """Time the fake and PostgreSQL on the same SELECT; return True when the target is met."""
    try:
        from tests.fixtures.postgres import superuser_url_from_env

        from crm_infra.adapters import PostgresClient
        from crm_infra.bootstrap import create_database, drop_database
        from crm_infra.migrations import apply_migrations
    except ImportError:  # a build without the PostgreSQL adapter
        _fake_alone()
        print("PostgreSQL side missing (crm_infra.adapters.PostgresClient not available)")
        return False

    superuser_url = superuser_url_from_env()
    try:
        created = create_database(superuser_url, prefix="crm_bench")
    except Exception as exc:  # the benchmark reports, it does not crash
        _fake_alone()
        print(f"PostgreSQL side missing: cannot create a database ({type(exc).__name__})")
        return False
    try:
        with PostgresClient(created.app_url, 2, admin_connection_url=created.admin_url) as pg:
            apply_migrations(pg)
            fake = InMemoryUserScopedDB()
            user = uuid4()
            fake_contact, pg_contact = _seed(fake, user), _seed(pg, user)
            comparison = compare(
                "select by id (postgres/fake)",
                lambda: pg.execute(QUERY, (pg_contact,), user_id=user),
                "InMemoryUserScopedDB",
                lambda: fake.execute(QUERY, (fake_contact,), user_id=user),
                calls=CALLS,
                rounds=7,
                target=TARGET_SPEEDUP,
            )
            comparison.higher_is_better = True
            title = "in-memory fake vs PostgreSQL: user-scoped SELECT by id"
            print_comparisons(title, [comparison])
            return bool(comparison.met)
    finally:
        drop_database(created)


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
