"""The schema files are found and ordered; the bootstrap file is kept apart."""

from __future__ import annotations

from pathlib import Path

from crm_infra.schema_files import bootstrap_roles_file, default_sql_dir, migration_files


def test_default_sql_dir_holds_the_schema() -> None:
    assert (default_sql_dir() / "001_core_tables.sql").is_file()


def test_migration_files_are_numbered_and_sorted() -> None:
    names = [p.name for p in migration_files()]
    assert names == sorted(names)
    assert names[0] == "001_core_tables.sql"
    assert all(n[:3].isdigit() for n in names)


def test_bootstrap_file_is_not_a_migration() -> None:
    assert bootstrap_roles_file().is_file()
    assert bootstrap_roles_file() not in migration_files()


def test_migration_files_ignores_other_files(tmp_path: Path) -> None:
    (tmp_path / "002_b.sql").write_text("SELECT 1;")
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "draft.sql").write_text("x")
    assert [p.name for p in migration_files(tmp_path)] == ["001_a.sql", "002_b.sql"]
