"""The start-up check: the user-facing role must not be able to bypass row-level security."""

from __future__ import annotations

from typing import Any

import psycopg

from crm_infra.adapters._pg_errors import PostgresUnsafeRoleError

__all__ = ["check_user_facing_role"]

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
WHERE r.rolname = current_user
"""


def check_user_facing_role(conn: psycopg.Connection[Any]) -> None:
    """Refuse a role that is superuser, has BYPASSRLS, or owns (or may act as the owner of)
    a user-scoped table, or may SET ROLE to such a role.

    Raises:
        PostgresUnsafeRoleError: saying which of these holds and for which role.
    """
    with conn.cursor() as cur:
        cur.execute(_ROLE_QUERY, ())
        row = cur.fetchone()
    if row is None:  # pragma: no cover - current_user always has a pg_roles row
        raise PostgresUnsafeRoleError("could not read the current role from pg_roles")
    values = row.values() if isinstance(row, dict) else row
    role, superuser, bypassrls, privileged, owned = values
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
    if problems:
        raise PostgresUnsafeRoleError(
            f"refusing to use role {role!r} for user-facing work: {'; '.join(problems)}. "
            "Connect as a login role that is NOSUPERUSER NOBYPASSRLS and a member of crm_app "
            "only (see docs/database.md); admin work goes through admin_connection_url.",
            operation="role check",
        )
