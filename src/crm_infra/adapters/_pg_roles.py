"""The start-up check: the user-facing role must not be able to bypass row-level security."""

from __future__ import annotations

from typing import Any

import psycopg

from crm_infra.adapters._pg_errors import PostgresUnsafeRoleError

__all__ = [
    "LARGE_OBJECT_WRITERS",
    "REVOKED_FUNCTIONS",
    "SERVER_FILE_FUNCTIONS",
    "SQL_TEXT_FUNCTIONS",
    "check_user_facing_role",
]

# Built-in functions that run SQL text given as a string, or fetch from a cursor named by one
# (found in the catalog: docs/database.md says how). Revoked from PUBLIC, granted back to
# crm_owner and crm_admin.
SQL_TEXT_FUNCTIONS = (
    "pg_catalog.query_to_xml(text, boolean, boolean, text)",
    "pg_catalog.query_to_xmlschema(text, boolean, boolean, text)",
    "pg_catalog.query_to_xml_and_xmlschema(text, boolean, boolean, text)",
    "pg_catalog.cursor_to_xml(refcursor, integer, boolean, boolean, text)",
    "pg_catalog.cursor_to_xmlschema(refcursor, boolean, boolean, text)",
    "pg_catalog.ts_stat(text)",
    "pg_catalog.ts_stat(text, text)",
    "pg_catalog.ts_rewrite(tsquery, text)",
)
# Large objects have no row-level security and outlive the call: creating, changing or deleting
# one is refused (reading one needs SELECT on it, which the application role is never given).
# Revoked from PUBLIC, granted back to crm_owner and crm_admin.
LARGE_OBJECT_WRITERS = (
    "pg_catalog.lo_creat(integer)",
    "pg_catalog.lo_create(oid)",
    "pg_catalog.lo_from_bytea(oid, bytea)",
    "pg_catalog.lo_put(oid, bigint, bytea)",
    "pg_catalog.lowrite(integer, bytea)",
    "pg_catalog.lo_truncate(integer, integer)",
    "pg_catalog.lo_truncate64(integer, bigint)",
    "pg_catalog.lo_unlink(oid)",
)
# Server-side file access: PostgreSQL keeps these to superusers already; granted to nobody.
SERVER_FILE_FUNCTIONS = (
    "pg_catalog.lo_import(text)",
    "pg_catalog.lo_import(text, oid)",
    "pg_catalog.lo_export(oid, text)",
)
REVOKED_FUNCTIONS = SQL_TEXT_FUNCTIONS + LARGE_OBJECT_WRITERS + SERVER_FILE_FUNCTIONS

# A "user-scoped table" here is any table with a user_id column or with RLS enabled. Membership
# (not just inheritance) counts: a member can SET ROLE to the owner and disable RLS, or to a
# BYPASSRLS role and read everything.
_ROLE_QUERY = """
SELECT r.rolname AS role,
       r.rolsuper AS superuser,
       r.rolbypassrls AS bypassrls,
       ARRAY(SELECT b.rolname::text FROM pg_roles b
             WHERE (b.rolsuper OR b.rolbypassrls) AND b.oid <> r.oid
               AND pg_has_role(r.oid, b.oid, 'MEMBER')
             ORDER BY 1) AS privileged_roles,
       ARRAY(SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%%'
               AND (c.relrowsecurity OR EXISTS (
                     SELECT 1 FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped))
               AND pg_has_role(r.oid, c.relowner, 'MEMBER')
             ORDER BY 1) AS owned_tables
FROM pg_roles r
WHERE r.rolname = %s
"""

_WHO_QUERY = "SELECT current_user::text AS current_role, session_user::text AS session_role"
_TEMP_QUERY = "SELECT has_database_privilege(current_database(), 'TEMPORARY') AS temp"


def check_user_facing_role(conn: psycopg.Connection[Any]) -> None:
    """Refuse a role that is superuser, has BYPASSRLS, or owns (or may act as the owner of)
    a user-scoped table, or may SET ROLE to such a role, or may create temporary tables.

    Both the session user (the login role, which ``SET ROLE NONE`` returns to) and the current
    user are checked, and they must be the same: a superuser URL with ``options=-c role=crm_app``
    looks safe through ``current_user`` alone.

    Raises:
        PostgresUnsafeRoleError: saying which of these holds and for which role.
    """
    with conn.cursor() as cur:
        cur.execute(_WHO_QUERY)
        who = cur.fetchone()
        if who is None:  # pragma: no cover - the query always returns one row
            raise PostgresUnsafeRoleError("could not read the current role")
        current, session = who.values() if isinstance(who, dict) else who
        problems = []
        if session != current:
            problems.append(
                f"the login (session) role {session!r} differs from the current role "
                f"{current!r} (a role setting such as options=-c role=...; SET ROLE NONE "
                "returns to the login role)"
            )
            problems += [f"login role {session!r}: {p}" for p in _role_problems(cur, session)]
        problems += _role_problems(cur, current)
        cur.execute(_TEMP_QUERY)
        temp = cur.fetchone()
        if temp is not None and next(iter(temp.values() if isinstance(temp, dict) else temp)):
            problems.append(
                "it may create temporary tables in this database (they have no row-level "
                "security and outlive a call on a pooled connection); run REVOKE TEMPORARY ON "
                "DATABASE <db> FROM PUBLIC (and from the role), GRANT TEMPORARY ... TO crm_admin"
            )
    if problems:
        raise PostgresUnsafeRoleError(
            f"refusing to use role {current!r} for user-facing work: {'; '.join(problems)}. "
            "Connect as a login role that is NOSUPERUSER NOBYPASSRLS and a member of crm_app "
            "only, with no role setting (see docs/database.md); admin work goes through "
            "admin_connection_url.",
            operation="role check",
        )


def _role_problems(cur: psycopg.Cursor[Any], role: str) -> list[str]:
    cur.execute(_ROLE_QUERY, (role,))
    row = cur.fetchone()
    if row is None:  # pragma: no cover - a connected role always has a pg_roles row
        return [f"no pg_roles row for {role!r}"]
    values = row.values() if isinstance(row, dict) else row
    _, superuser, bypassrls, privileged, owned = values
    problems = []
    if superuser:
        problems.append("it is a superuser")
    if bypassrls:
        problems.append("it has BYPASSRLS")
    if privileged:
        problems.append(
            f"it is a member of {', '.join(privileged)} (superuser or BYPASSRLS; SET ROLE "
            "would bypass row-level security)"
        )
    if owned:
        problems.append(
            f"it owns, or is a member of the owner of, user-scoped tables: {', '.join(owned)} "
            "(an owner can disable row-level security)"
        )
    return problems
