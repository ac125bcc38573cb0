"""The bootstrap file revokes exactly what the start-up role check verifies (no server needed).

The two lists live apart (a SQL file a superuser may run by hand, and the adapter), so this
test is what keeps them one list.
"""

from __future__ import annotations

import re

from crm_infra.adapters.postgres.roles import (
    LARGE_OBJECT_WRITERS,
    REVOKED_FUNCTIONS,
    SERVER_FILE_FUNCTIONS,
    SQL_TEXT_FUNCTIONS,
)
from crm_infra.schema_files import bootstrap_roles_file

_SIGNATURE = re.compile(r"pg_catalog\.\w+\([^)]*\)")


def _statements() -> list[str]:
    text = bootstrap_roles_file().read_text(encoding="utf-8")
    code = "\n".join(line.split("--")[0] for line in text.splitlines())
    return [" ".join(s.split()) for s in code.split(";")]


def _functions(prefix: str, suffix: str) -> list[str]:
    found = []
    for statement in _statements():
        if statement.startswith(prefix) and statement.endswith(suffix):
            found += _SIGNATURE.findall(statement)
    return found


def test_the_file_revokes_every_checked_function_from_public() -> None:
    revoked = _functions("REVOKE EXECUTE ON FUNCTION", "FROM PUBLIC")
    assert sorted(revoked) == sorted(REVOKED_FUNCTIONS)


def test_the_file_grants_back_all_but_the_server_file_functions() -> None:
    granted = _functions("GRANT EXECUTE ON FUNCTION", "TO crm_owner, crm_admin")
    assert sorted(granted) == sorted(SQL_TEXT_FUNCTIONS + LARGE_OBJECT_WRITERS)
    assert not set(granted) & set(SERVER_FILE_FUNCTIONS)


def test_the_file_revokes_languages_temporary_pg_settings_updates_and_create() -> None:
    statements = _statements()
    text = " ".join(statements)
    assert "REVOKE UPDATE ON pg_catalog.pg_settings FROM PUBLIC" in statements
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in statements
    assert "EXECUTE format('REVOKE USAGE ON LANGUAGE %I FROM PUBLIC', lang)" in text
    assert "EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database())" in (
        text
    )
