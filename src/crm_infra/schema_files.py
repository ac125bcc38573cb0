"""Where the schema lives: the numbered ``sql/`` files, in the source tree or in the wheel.

Both database backends (PostgreSQL through ``apply_migrations``, and the in-memory fake) build
their tables from these same files, so there is one source of truth for the schema.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["bootstrap_roles_file", "default_sql_dir", "migration_files"]

_MIGRATION_NAME = re.compile(r"^\d{3,}_[a-z0-9_]+\.sql$")


def default_sql_dir() -> Path:
    """Return the schema directory: packaged ``crm_infra/sql`` in a wheel, else the repo's ``sql/``.

    Raises:
        FileNotFoundError: neither location holds the schema (a broken install).
    """
    packaged = Path(__file__).resolve().parent / "sql"
    if packaged.is_dir():
        return packaged
    in_repo = Path(__file__).resolve().parents[2] / "sql"
    if in_repo.is_dir():
        return in_repo
    raise FileNotFoundError(
        f"crm-infra schema not found (looked in {packaged} and {in_repo}); reinstall the package"
    )


def migration_files(sql_dir: Path | None = None) -> list[Path]:
    """Return the numbered migration files (``NNN_name.sql``) in apply order.

    The bootstrap file (``bootstrap/roles.sql``, run once by a superuser) is not among them.
    """
    directory = sql_dir if sql_dir is not None else default_sql_dir()
    return sorted(p for p in directory.iterdir() if p.is_file() and _MIGRATION_NAME.match(p.name))


def bootstrap_roles_file(sql_dir: Path | None = None) -> Path:
    """Return the superuser-only bootstrap file that creates the schema's group roles."""
    directory = sql_dir if sql_dir is not None else default_sql_dir()
    return directory / "bootstrap" / "roles.sql"
