"""pending_migrations: what apply_migrations would apply, read through the admin path."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from crm_infra.adapters import PostgresClient
from crm_infra.migrations import MIGRATIONS_TABLE, apply_migrations, pending_migrations
from crm_infra.schema_files import default_sql_dir, migration_files
from tests.fixtures.throwaway import throwaway_database

SHIPPED = [p.name for p in migration_files()]


@pytest.fixture
def admin(pg_superuser_url: str) -> Iterator[PostgresClient]:
    with throwaway_database(pg_superuser_url, "crm_test_pending") as made, PostgresClient(
        made.app_url, 1, min_pool_size=0, admin_connection_url=made.admin_url
    ) as client:
        yield client


def test_every_file_is_pending_where_migrations_never_ran_and_nothing_is_created(
    admin: PostgresClient,
) -> None:
    assert pending_migrations(admin) == SHIPPED
    assert admin.execute_admin("SELECT to_regclass(%s) AS t", (MIGRATIONS_TABLE,)) == [{"t": None}]


def test_nothing_is_pending_after_migrating_until_a_new_file_arrives(
    admin: PostgresClient, tmp_path: Path
) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(default_sql_dir(), sql_dir)
    apply_migrations(admin, sql_dir)
    assert pending_migrations(admin, sql_dir) == []
    (sql_dir / "004_later.sql").write_text("SELECT 1;\n")
    assert pending_migrations(admin, sql_dir) == ["004_later.sql"]
    assert apply_migrations(admin, sql_dir) == ["004_later.sql"]
    assert pending_migrations(admin, sql_dir) == []
