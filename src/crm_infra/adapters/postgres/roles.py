"""The start-up check: the user-facing role must not be able to bypass row-level security.

It also verifies what ``sql/bootstrap/roles.sql`` takes away from PUBLIC in each database, the
refusals no check of SQL text can replace (dynamic SQL runs text the client never sees): a
procedural language, the built-in functions that run SQL given as a string, large-object
writes, temporary tables, ``UPDATE pg_settings``. docs/database.md, "What the database itself
refuses", has the reasons; tests/unit/test_bootstrap_roles.py pins the function lists below
against the bootstrap file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import psycopg

from crm_infra.adapters.postgres.errors import PostgresUnsafeRoleError

__all__ = [
    "LARGE_OBJECT_WRITERS",
    "REVOKED_FUNCTIONS",
    "SERVER_FILE_FUNCTIONS",
    "SQL_TEXT_FUNCTIONS",
    "check_user_facing_role",
    "check_user_facing_role_async",
    "refuse_unsafe_role",
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

_SERVER_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")

# One round trip: a row per problem, for the session user and the current user alike.
# ``fix`` lists the grantees to name in the statement that fixes it: for a privilege, PUBLIC
# and every role whose privileges the checked role has (taken from the object's ACL, or the
# default ACL when none was ever granted); for a membership, the roles granted directly to the
# checked role through which it reaches the bad one. A privilege that comes from a role the
# checked role must not be a member of anyway (crm_admin, crm_owner...) is that membership's
# problem, reported once as such: ``covered`` says so, and then such grantees are left out.
# A superuser gets every privilege, so only that is reported for one. A "user-scoped table"
# is any table with a user_id column or with RLS enabled; membership (not just inheritance)
# counts, since a member can SET ROLE.
_CHECK_QUERY = """
WITH checked AS (
    SELECT r.oid, r.rolname::text AS name, quote_ident(r.rolname) AS ident, r.rolsuper,
           r.rolbypassrls, r.rolcreaterole
    FROM pg_roles r
    WHERE r.rolname IN (session_user, current_user)
),
scoped AS (
    SELECT t.relowner, format('%%I.%%I', n.nspname, t.relname) AS name
    FROM pg_class t
    JOIN pg_namespace n ON n.oid = t.relnamespace
    WHERE t.relkind IN ('r', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%%'
      AND (t.relrowsecurity OR EXISTS (
            SELECT 1 FROM pg_attribute a
            WHERE a.attrelid = t.oid AND a.attname = 'user_id' AND NOT a.attisdropped))
),
refused AS (  -- roles nobody doing user-facing work may be, or be a member of
    SELECT b.oid FROM pg_roles b
    WHERE b.rolsuper OR b.rolbypassrls OR b.rolname = ANY (%(server_roles)s::text[])
    UNION
    SELECT relowner FROM scoped
),
guarded(kind, oid, subject, privilege, acl) AS (
    SELECT 'language', l.oid, quote_ident(l.lanname), 'USAGE',
           coalesce(l.lanacl, acldefault('l', l.lanowner))
    FROM pg_language l
    WHERE l.lanispl AND l.lanpltrusted
    UNION ALL
    SELECT 'function', p.oid, s.sig, 'EXECUTE', coalesce(p.proacl, acldefault('f', p.proowner))
    FROM unnest(%(functions)s::text[]) AS s(sig)
    JOIN pg_proc p ON p.oid = to_regprocedure(s.sig)
    UNION ALL
    SELECT k.kind, d.oid, quote_ident(d.datname), k.privilege,
           coalesce(d.datacl, acldefault('d', d.datdba))
    FROM pg_database d
    CROSS JOIN (VALUES ('temporary', 'TEMPORARY'), ('create database', 'CREATE'))
               AS k(kind, privilege)
    WHERE d.datname = current_database()
    UNION ALL
    SELECT 'create schema', n.oid, quote_ident(n.nspname), 'CREATE',
           coalesce(n.nspacl, acldefault('n', n.nspowner))
    FROM pg_namespace n
    WHERE n.nspname = ANY (current_schemas(true))
    UNION ALL
    SELECT 'settings', c.oid, 'pg_catalog.pg_settings', 'UPDATE',
           coalesce(c.relacl, acldefault('r', c.relowner))
    FROM pg_class c
    WHERE c.oid = 'pg_catalog.pg_settings'::regclass
),
granted AS (  -- who gave the checked role each guarded privilege it has
    SELECT c.name, c.ident, g.kind, g.subject,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee_name,
           a.grantee NOT IN (0, c.oid) AND EXISTS (
               SELECT 1 FROM refused x WHERE pg_has_role(a.grantee, x.oid, 'MEMBER')
           ) AS covered
    FROM checked c
    CROSS JOIN guarded g
    CROSS JOIN LATERAL aclexplode(g.acl) a
    WHERE NOT c.rolsuper
      AND a.privilege_type = g.privilege
      AND CASE WHEN a.grantee = 0 THEN true ELSE pg_has_role(c.oid, a.grantee, 'USAGE') END
      AND CASE g.kind
            WHEN 'language' THEN has_language_privilege(c.oid, g.oid, 'USAGE')
            WHEN 'function' THEN has_function_privilege(c.oid, g.oid, 'EXECUTE')
            WHEN 'create schema' THEN has_schema_privilege(c.oid, g.oid, 'CREATE')
            WHEN 'settings' THEN has_table_privilege(c.oid, g.oid, 'UPDATE')
            ELSE has_database_privilege(c.oid, g.oid, g.privilege)
          END
)
SELECT c.name AS role, c.ident, 'disguised' AS rule, session_user::text AS subject,
       ARRAY[]::text[] AS fix, false AS covered
FROM checked c
WHERE c.name = current_user AND session_user <> current_user
UNION ALL
SELECT c.name, c.ident, a.rule, '', ARRAY[]::text[], false
FROM checked c
CROSS JOIN LATERAL (VALUES ('superuser', c.rolsuper),
                           ('bypassrls', c.rolbypassrls AND NOT c.rolsuper),
                           ('createrole', c.rolcreaterole AND NOT c.rolsuper)) AS a(rule, holds)
WHERE a.holds
UNION ALL
SELECT c.name, c.ident,
       CASE WHEN b.rolsuper OR b.rolbypassrls THEN 'bypassing member' ELSE 'server member' END,
       quote_ident(b.rolname),
       ARRAY(SELECT quote_ident(g.rolname) FROM pg_auth_members am
             JOIN pg_roles g ON g.oid = am.roleid
             WHERE am.member = c.oid AND pg_has_role(g.oid, b.oid, 'MEMBER')
             ORDER BY 1),
       false
FROM checked c
JOIN pg_roles b ON b.oid <> c.oid
               AND (b.rolsuper OR b.rolbypassrls OR b.rolname = ANY (%(server_roles)s::text[]))
               AND pg_has_role(c.oid, b.oid, 'MEMBER')
WHERE NOT c.rolsuper
UNION ALL
SELECT c.name, c.ident, 'owner', t.name,
       CASE WHEN t.relowner = c.oid THEN ARRAY[]::text[]
            ELSE ARRAY(SELECT quote_ident(g.rolname) FROM pg_auth_members am
                       JOIN pg_roles g ON g.oid = am.roleid
                       WHERE am.member = c.oid AND pg_has_role(g.oid, t.relowner, 'MEMBER')
                       ORDER BY 1)
       END,
       false
FROM checked c
JOIN scoped t ON pg_has_role(c.oid, t.relowner, 'MEMBER')
WHERE NOT c.rolsuper
UNION ALL
SELECT name, ident, kind, subject,
       coalesce(array_agg(DISTINCT grantee_name ORDER BY grantee_name)
                FILTER (WHERE NOT covered), '{}'),
       bool_or(covered)
FROM granted
GROUP BY name, ident, kind, subject
ORDER BY 1, 3, 4
"""


@attrs.frozen
class _Finding:
    role: str  # the role checked (session or current user)
    ident: str  # its name quoted for SQL
    rule: str
    subject: str  # what the rule found: a role, a table, a language, a function...
    fix: tuple[str, ...]  # the grantees (or granted roles) the fixing statement names
    covered: bool  # some of the privilege came from a membership that is refused anyway


_CHECK_PARAMS = {"functions": list(REVOKED_FUNCTIONS), "server_roles": list(_SERVER_ROLES)}


def check_user_facing_role(conn: psycopg.Connection[Any]) -> None:
    """Refuse a role that could bypass row-level security or run SQL no text check sees.

    Refused: a superuser; BYPASSRLS; CREATEROLE; a member (direct or not) of a superuser or
    BYPASSRLS role, of ``pg_execute_server_program``, ``pg_read_server_files`` or
    ``pg_write_server_files``; an owner (or a member of the owner) of a user-scoped table; USAGE
    on a procedural language; EXECUTE on one of :data:`REVOKED_FUNCTIONS`; TEMPORARY or CREATE
    on the database; CREATE on a schema in its search_path; UPDATE on ``pg_settings``.

    Both the session user (the login role, which ``SET ROLE NONE`` returns to) and the current
    user are checked, and they must be the same: a superuser URL with ``options=-c role=crm_app``
    looks safe through ``current_user`` alone. One query, one round trip.

    Raises:
        PostgresUnsafeRoleError: listing every problem at once, each with the rule that failed
            and the statement that fixes it.
    """
    with conn.cursor() as cur:
        cur.execute(_CHECK_QUERY, _CHECK_PARAMS)
        refuse_unsafe_role(cur.fetchall())


async def check_user_facing_role_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """:func:`check_user_facing_role` on an asyncio connection.

    Raises:
        PostgresUnsafeRoleError: as :func:`check_user_facing_role`.
    """
    async with conn.cursor() as cur:
        await cur.execute(_CHECK_QUERY, _CHECK_PARAMS)
        refuse_unsafe_role(await cur.fetchall())


def refuse_unsafe_role(rows: list[Any]) -> None:
    """Raise for the problems the role-check query found (its ``rows``), if any.

    Raises:
        PostgresUnsafeRoleError: listing every problem at once.
    """
    findings = [_finding(row) for row in rows]
    # A privilege that only a refused membership gives is reported as that membership.
    findings = [f for f in findings if f.fix or not f.covered]
    if not findings:
        return
    # Without a disguise the session and current user are one role; with one, its row names
    # the current user.
    current = next((f.role for f in findings if f.rule == "disguised"), findings[0].role)
    problems = []
    for role in sorted({f.role for f in findings}, key=lambda r: r != current):
        prefix = "" if role == current else f"login role {role!r}: "
        problems += [prefix + p for p in _problems([f for f in findings if f.role == role])]
    numbered = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
    raise PostgresUnsafeRoleError(
        f"refusing to use role {current!r} for user-facing work, {len(problems)} problem(s): "
        f"{numbered}. sql/bootstrap/roles.sql, run by a superuser in this database, takes the "
        "privileges above from PUBLIC; connect as a login role that is NOSUPERUSER "
        "NOBYPASSRLS NOCREATEROLE and a member of crm_app only, with no role setting (see "
        'docs/database.md, "What the database itself refuses"); admin work goes through '
        "admin_connection_url.",
        operation="role check",
    )


def _finding(row: Any) -> _Finding:
    values = tuple(row.values()) if isinstance(row, dict) else tuple(row)
    role, ident, rule, subject, fix, covered = values
    return _Finding(str(role), str(ident), str(rule), str(subject), tuple(fix), bool(covered))


_Wording = Callable[[list[_Finding]], list[str]]


def _problems(findings: list[_Finding]) -> list[str]:
    """Word the findings of one role: one problem per rule, and per fix where they differ."""
    problems: list[str] = []
    for rule, word in _RULES.items():
        group = [f for f in findings if f.rule == rule]
        if group:
            problems += word(group)
    return problems


def _by_fix(group: list[_Finding]) -> dict[tuple[str, ...], list[str]]:
    grouped: dict[tuple[str, ...], list[str]] = {}
    for f in group:
        grouped.setdefault(f.fix, []).append(f.subject)
    return grouped


def _disguised(group: list[_Finding]) -> list[str]:
    f = group[0]
    problem = (
        f"rule 'login role = current role': the login (session) role {f.subject!r} differs "
        f"from the current role {f.role!r} (a role setting such as options=-c role=...; SET "
        "ROLE NONE returns to the login role); fix: connect as the application login role "
        "itself, without a role setting (ALTER ROLE ... RESET role)"
    )
    return [problem]


def _attribute(rule: str, why: str, fix: str) -> _Wording:
    def word(group: list[_Finding]) -> list[str]:
        return [f"rule '{rule}': {why}; fix: {fix.format(role=group[0].ident)}"]

    return word


def _bypassing_member(group: list[_Finding]) -> list[str]:
    ident = group[0].ident
    return [
        f"rule 'no member of a role that bypasses RLS': it is a member of {', '.join(roles)} "
        "(superuser or BYPASSRLS; SET ROLE would bypass row-level security); fix: "
        f"REVOKE {', '.join(via)} FROM {ident}"
        for via, roles in _by_fix(group).items()
    ]


_SERVER_POWERS = {
    "pg_execute_server_program": "run programs on the database server (COPY ... PROGRAM)",
    "pg_read_server_files": "read any file the server can (COPY ... FROM a file)",
    "pg_write_server_files": "write files as the server (COPY ... TO a file)",
}


def _server_member(group: list[_Finding]) -> list[str]:
    ident = group[0].ident
    return [
        f"rule 'no member of {f.subject}': it may {_SERVER_POWERS[f.subject]}, outside any "
        f"row-level security; fix: REVOKE {', '.join(f.fix)} FROM {ident}"
        for f in group
    ]


def _owner(group: list[_Finding]) -> list[str]:
    ident = group[0].ident
    problems = []
    for via, tables in _by_fix(group).items():
        fix = (
            f"REVOKE {', '.join(via)} FROM {ident}"
            if via
            else "; ".join(f"ALTER TABLE {t} OWNER TO crm_owner" for t in tables)
        )
        problems.append(
            "rule 'owns no user-scoped table': it owns, or is a member of the owner of, "
            f"user-scoped tables: {', '.join(tables)} (an owner can disable row-level "
            f"security); fix: {fix}"
        )
    return problems


def _privilege(rule: str, why: str, grant: str, public_also: str = "") -> _Wording:
    """Word privilege findings; ``grant`` is the object clause of the REVOKE that fixes them.

    ``public_also`` follows the REVOKE when PUBLIC is among the grantees (what PUBLIC loses
    that someone still needs).
    """

    def word(group: list[_Finding]) -> list[str]:
        problems = []
        for via, subjects in _by_fix(group).items():
            objects = ", ".join(subjects)
            fix = f"REVOKE {grant.format(objects)} FROM {', '.join(via)}"
            if "PUBLIC" in via:
                fix += public_also.format(objects)
            problems.append(f"rule '{rule}': {why.format(objects)}; fix: {fix}")
        return problems

    return word


# In the order the problems are listed.
_RULES: dict[str, _Wording] = {
    "disguised": _disguised,
    "superuser": _attribute(
        "not a superuser",
        "it is a superuser (row-level security and every privilege check pass it by)",
        "ALTER ROLE {role} NOSUPERUSER",
    ),
    "bypassrls": _attribute("no BYPASSRLS", "it has BYPASSRLS", "ALTER ROLE {role} NOBYPASSRLS"),
    "createrole": _attribute(
        "no CREATEROLE",
        "it has CREATEROLE (it may create roles and grant memberships; on PostgreSQL 15 it "
        "may grant itself the admin role, which bypasses row-level security)",
        "ALTER ROLE {role} NOCREATEROLE",
    ),
    "bypassing member": _bypassing_member,
    "server member": _server_member,
    "owner": _owner,
    "language": _privilege(
        "no procedural language",
        "it may use the language {} (DO blocks and new functions could run SQL text that no "
        "check of the statement sees)",
        "USAGE ON LANGUAGE {}",
        "; GRANT USAGE ON LANGUAGE {} TO crm_owner, crm_admin",
    ),
    "function": _privilege(
        "no function that runs SQL text or writes large objects",
        "it may execute {} (SQL given as a string runs unseen by any check of the statement; "
        "large objects have no row-level security and outlive the call)",
        "EXECUTE ON FUNCTION {}",
    ),
    "temporary": _privilege(
        "no temporary tables",
        "it may create temporary tables in database {} (they have no row-level security "
        "and outlive a call on a pooled connection)",
        "TEMPORARY ON DATABASE {}",
        "; GRANT TEMPORARY ON DATABASE {} TO crm_admin",
    ),
    "create database": _privilege(
        "no CREATE on the database",
        "it may create schemas in database {} (one named after the login role would come "
        'first in the default search_path, "$user", public)',
        "CREATE ON DATABASE {}",
    ),
    "create schema": _privilege(
        "no CREATE on a schema in its search_path",
        "it may create objects in schema {}, which later calls of every user find by name "
        "(a table or a better-matching function overload)",
        "CREATE ON SCHEMA {}",
    ),
    "settings": _privilege(
        "no UPDATE on pg_settings",
        "it may UPDATE {} (its rule calls set_config at session level, which outlives the call)",
        "UPDATE ON {}",
    ),
}
