"""Apply the numbered ``sql/`` files through the admin path, and audit row-level security.

``apply_migrations`` records every applied file with its SHA-256 in ``crm_schema_migrations``
(created by the runner, not by a file, and owned by ``crm_owner`` like every table), applies
only new files, each in its own transaction, refuses to go on when an applied file was
edited, and then runs :func:`audit_rls` and fails on any finding, so a new user-scoped table
cannot ship unprotected: the run (and so the deploy) fails, on every later run too, until a
new file closes the gap. The audit runs after all files rather than per file because a table
and its policies may come in separate files (as ``001`` and ``002`` do); files already applied
stay applied (fix forward, never edit).
Concurrent runners serialise on a transaction-level advisory lock and re-check under it, so no
file is applied twice.

What the audit demands of every table with a ``user_id`` column (outside the system schemas):

- ENABLE and FORCE ROW LEVEL SECURITY;
- at least one policy, and every policy fail-closed: each USING and WITH CHECK that applies to
  its command is present (an ALL or UPDATE policy needs both, written out) and is exactly
  ``user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid`` as PostgreSQL
  prints it back (only whitespace and enclosing parentheses may differ; anything added, an
  ``OR``, ``IS NOT FALSE``, ``NOT``, another column, could widen it);
- an index whose first column is ``user_id``.

And of every view or materialized view that reads such a table (directly or through other
views): ``security_invoker = true`` (a materialized view is always a finding: it stores every
user's rows and cannot apply RLS when read).

And of every SECURITY DEFINER function, in any schema, that the application role (``crm_app``
or a login role that is a member of it) may execute: its owner must not bypass row-level
security (a superuser, BYPASSRLS, or a member of such a role) nor own, or be a member of the
owner of, a user-scoped table (a table with a ``user_id`` column or with RLS enabled). Such a
function runs as its owner whoever calls it: ``SELECT * FROM every_contact()`` would return
every user's rows to anyone.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import attrs

from crm_infra.errors import DatabaseError, MigrationError
from crm_infra.ports import AdminDB, Params, Row
from crm_infra.schema_files import bootstrap_roles_file, default_sql_dir, migration_files

__all__ = [
    "MIGRATIONS_TABLE",
    "RlsFinding",
    "apply_migrations",
    "audit_rls",
    "bootstrap_command",
    "pending_migrations",
]

MIGRATIONS_TABLE = "crm_schema_migrations"
_LOCK = 0x63726D2D6D696772  # "crm-migr"
_OWNER = "crm_owner"  # the group role that owns the schema (sql/bootstrap/roles.sql)
_ADMIN = "crm_admin"  # the group role of the admin path (sql/bootstrap/roles.sql)
_APP = "crm_app"  # the group role user-facing work runs as (sql/bootstrap/roles.sql)

_CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    filename   text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

# The policy expression as PostgreSQL prints it back (pg_get_expr), whitespace-normalised and
# without enclosing parentheses. Nothing else passes: a substring search would also accept
# ``(... = ...) IS NOT FALSE`` (every row when no user is set), ``NOT (...)`` or a column that
# merely ends in ``user_id``.
_FAIL_CLOSED = frozenset(
    {
        "user_id = (NULLIF(current_setting('app.current_user_id'::text, true), ''::text))::uuid",
        "user_id = NULLIF(current_setting('app.current_user_id'::text, true), ''::text)::uuid",
    }
)


@attrs.frozen
class RlsFinding:
    """One gap in row-level security: the table, view or function and what is wrong with it.

    A function is named with its schema and argument types, ``public.every_contact(uuid)``.
    """

    relation: str
    problem: str

    def __str__(self) -> str:
        return f"{self.relation}: {self.problem}"


def _checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def apply_migrations(admin_db: AdminDB, sql_dir: Path | None = None) -> list[str]:
    """Apply the migration files not applied yet, in order; return their names.

    Args:
        admin_db: the admin path (a BYPASSRLS role that is a member of the table owner).
        sql_dir: the schema directory (default: the packaged ``sql/``).

    Returns:
        The file names applied by this call (empty when the schema was up to date).

    Raises:
        MigrationError: a file failed (naming it; that file's changes are rolled back), an
            applied file was edited since, or the RLS audit found gaps afterwards.
    """
    directory = sql_dir if sql_dir is not None else default_sql_dir()
    files = migration_files(directory)
    try:
        with admin_db.admin_transaction() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            # Owned by the owner group like every table, never by a login role.
            tx.execute(f"SET LOCAL ROLE {_OWNER}; {_CREATE_TABLE}; RESET ROLE")
            tx.execute(f"ALTER TABLE {MIGRATIONS_TABLE} OWNER TO {_OWNER}")  # made by older runs
            rows = tx.execute(f"SELECT filename, checksum FROM {MIGRATIONS_TABLE}")
    except DatabaseError as exc:
        # The first thing a database set up by hand trips over ("permission denied for
        # schema public"): say what is missing and the command that fixes it.
        raise MigrationError(
            _not_bootstrapped(admin_db, sql_dir, exc)
            or f"migrations: cannot read {MIGRATIONS_TABLE}: {exc}"
        ) from exc
    recorded = {row["filename"]: row["checksum"] for row in rows}
    edited = [f.name for f in files if f.name in recorded and recorded[f.name] != _checksum(f)]
    if edited:
        raise MigrationError(
            f"migrations: already applied file(s) were edited since: {', '.join(edited)}; "
            "never edit an applied migration, add a new numbered file instead"
        )
    applied: list[str] = []
    for path in files:
        if path.name in recorded:
            continue
        checksum = _checksum(path)
        try:
            with admin_db.admin_transaction() as tx:
                tx.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                done = tx.execute(
                    f"SELECT checksum FROM {MIGRATIONS_TABLE} WHERE filename = %s", (path.name,)
                )
                if done:  # another runner applied it while we waited for the lock
                    if done[0]["checksum"] != checksum:
                        raise MigrationError(
                            f"migrations: {path.name} was applied by another runner with "
                            "different content"
                        )
                    continue
                tx.execute(path.read_text(encoding="utf-8"))
                tx.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (filename, checksum) VALUES (%s, %s)",
                    (path.name, checksum),
                )
        except MigrationError:
            raise
        except DatabaseError as exc:
            raise MigrationError(
                f"migrations: {path.name} failed and was rolled back: {exc}"
            ) from exc
        applied.append(path.name)
    findings = audit_rls(admin_db)
    if findings:
        listed = "; ".join(str(f) for f in findings)
        raise MigrationError(f"migrations: the RLS audit found {len(findings)} gap(s): {listed}")
    return applied


def pending_migrations(admin_db: AdminDB, sql_dir: Path | None = None) -> list[str]:
    """Return the names of the migration files not applied yet, in apply order.

    Reads what :func:`apply_migrations` recorded, through the admin path, and changes nothing:
    in a database where it never ran, every file is pending.

    Args:
        admin_db: the admin path.
        sql_dir: the schema directory (default: the packaged ``sql/``).

    Raises:
        DatabaseError: the database could not be read.
    """
    files = migration_files(sql_dir)
    rows = admin_db.execute_admin(
        "SELECT to_regclass(%s) IS NOT NULL AS recorded", (MIGRATIONS_TABLE,)
    )
    applied: set[str] = set()
    if rows[0]["recorded"]:
        applied = {
            str(row["filename"])
            for row in admin_db.execute_admin(f"SELECT filename FROM {MIGRATIONS_TABLE}", ())
        }
    return [path.name for path in files if path.name not in applied]


def bootstrap_command(
    database: str,
    *,
    host: str | None = None,
    port: str | int | None = None,
    sql_dir: Path | None = None,
) -> str:
    """Return the ``psql`` command that runs the bootstrap file in ``database``, shell-quoted.

    Args:
        database: the database the file must run in (it is run once per database).
        host: the server's host, when known (psql's default otherwise).
        port: the server's port, when known.
        sql_dir: the schema directory whose ``bootstrap/roles.sql`` to name (default, or when
            it has none: the packaged one).
    """
    roles_file = bootstrap_roles_file(sql_dir)
    if not roles_file.is_file():
        roles_file = bootstrap_roles_file()
    words = ["psql"]
    if host:
        words += ["-h", host]
    if port:
        words += ["-p", str(port)]
    words += ["-v", "ON_ERROR_STOP=1", "-d", database, "-f", str(roles_file.resolve())]
    return shlex.join(words)


# What the bootstrap file gives a database, as far as the admin path needs it: the group roles
# (shared by the server), CREATE on schema public for the owner role (per database), and the
# admin login role's membership of the owner role (through crm_admin).
_BOOTSTRAP_STATE = """
SELECT current_database() AS database, current_user::text AS login,
       quote_ident(current_user) AS login_sql,
       ARRAY(SELECT g FROM unnest(%s::text[]) AS g WHERE to_regrole(g) IS NULL) AS missing,
       CASE WHEN to_regrole(%s) IS NOT NULL AND to_regnamespace('public') IS NOT NULL
            THEN has_schema_privilege(%s, 'public', 'CREATE') END AS owner_creates,
       CASE WHEN to_regrole(%s) IS NOT NULL
            THEN pg_has_role(current_user, %s, 'MEMBER') END AS admin_is_owner
"""


def _not_bootstrapped(admin_db: AdminDB, sql_dir: Path | None, exc: DatabaseError) -> str | None:
    """Return what the bootstrap file would have given this database and the fix, or None.

    None when nothing is missing (the failure had another cause) or the state cannot be read.
    """
    try:
        rows = admin_db.execute_admin(
            _BOOTSTRAP_STATE, ([_OWNER, _ADMIN, _APP], _OWNER, _OWNER, _OWNER, _OWNER)
        )
    except DatabaseError:
        return None
    state = rows[0]
    database = str(state["database"])
    missing: list[str] = []
    if state["missing"]:
        missing.append(f"the group role(s) {', '.join(state['missing'])} do not exist")
    if state["owner_creates"] is False:
        missing.append(f"role {_OWNER} may not create tables in schema public")
    if missing:
        # No host or port: the server's own address may not be the one clients reach it by
        # (a container, a proxy); whoever runs the command knows theirs.
        command = bootstrap_command(database, sql_dir=sql_dir)
        return (
            f"migrations: database {database} has not been bootstrapped: "
            f"{'; '.join(missing)} (the server said: {exc}). Run the bootstrap file once in "
            "this database as a superuser of this server (with psql's -h, -p and -U for it "
            f"as needed), then migrate again: {command}"
        )
    if state["admin_is_owner"] is False:
        return (
            f"migrations: the admin login role {state['login']} is not a member of {_OWNER}, "
            f"so it cannot create or change the schema's tables (the server said: {exc}); as "
            f"a superuser, run: GRANT {_ADMIN} TO {state['login_sql']};"
        )
    return None


_USER_TABLES = """
SELECT c.oid, c.oid::regclass::text AS name, c.relrowsecurity AS enabled,
       c.relforcerowsecurity AS forced,
       EXISTS (SELECT 1 FROM pg_index i
               WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum) AS indexed
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 2
"""

_POLICIES = """
SELECT p.polrelid AS table_oid, p.polname AS name, p.polcmd AS cmd,
       p.polpermissive AS permissive,
       pg_get_expr(p.polqual, p.polrelid) AS using_expr,
       pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr
FROM pg_policy p
ORDER BY p.polname
"""

# Views and materialized views, with every relation they read, followed through other views.
_VIEWS = """
WITH RECURSIVE reads(view_oid, rel_oid) AS (
    SELECT DISTINCT r.ev_class, d.refobjid
    FROM pg_rewrite r
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
    UNION
    SELECT reads.view_oid, d.refobjid
    FROM reads
    JOIN pg_rewrite r ON r.ev_class = reads.rel_oid
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
)
SELECT DISTINCT v.oid::regclass::text AS name, v.relkind AS kind,
       coalesce(v.reloptions, '{}') AS options, reads.rel_oid
FROM reads
JOIN pg_class v ON v.oid = reads.view_oid
JOIN pg_namespace n ON n.oid = v.relnamespace
WHERE v.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1
"""

# SECURITY DEFINER functions the application role may execute, with what their owner can do.
# "The application role" is crm_app and every role that is a member of it, superusers aside
# (pg_has_role counts a superuser as a member of everything): a grant to one login role counts.
_DEFINERS = """
WITH app AS (
    SELECT m.oid, m.rolname::text AS name
    FROM pg_roles a
    JOIN pg_roles m ON m.oid = a.oid OR (NOT m.rolsuper AND pg_has_role(m.oid, a.oid, 'MEMBER'))
    WHERE a.rolname = %s
),
scoped AS (
    SELECT t.relowner, t.oid::regclass::text AS name
    FROM pg_class t
    JOIN pg_namespace n ON n.oid = t.relnamespace
    WHERE t.relkind IN ('r', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_%%'
      AND (t.relrowsecurity OR EXISTS (
            SELECT 1 FROM pg_attribute a
            WHERE a.attrelid = t.oid AND a.attname = 'user_id' AND NOT a.attisdropped))
)
SELECT format('%%I.%%I(%%s)', n.nspname, p.proname,
              (SELECT coalesce(string_agg(format_type(u.t, NULL), ', ' ORDER BY u.i), '')
               FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(t, i))) AS name,
       o.rolname::text AS owner, o.rolsuper AS superuser, o.rolbypassrls AS bypassrls,
       ARRAY(SELECT b.rolname::text FROM pg_roles b
             WHERE (b.rolsuper OR b.rolbypassrls) AND b.oid <> o.oid
               AND pg_has_role(o.oid, b.oid, 'MEMBER')
             ORDER BY 1) AS bypassing_roles,
       ARRAY(SELECT DISTINCT t.name FROM scoped t
             WHERE pg_has_role(o.oid, t.relowner, 'MEMBER') ORDER BY 1) AS owned_tables,
       ARRAY(SELECT app.name FROM app
             WHERE has_function_privilege(app.oid, p.oid, 'EXECUTE') ORDER BY 1) AS callers
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_roles o ON o.oid = p.proowner
WHERE p.prosecdef
  AND EXISTS (SELECT 1 FROM app WHERE has_function_privilege(app.oid, p.oid, 'EXECUTE'))
ORDER BY 1
"""

_INVOKER_ON = {f"security_invoker={v}" for v in ("true", "on", "1", "yes")}

_NEEDS = {  # polcmd -> (needs USING, needs WITH CHECK)
    "*": (True, True),
    "w": (True, True),
    "r": (True, False),
    "d": (True, False),
    "a": (False, True),
}


def _strip_enclosing_parens(text: str) -> str:
    """Return ``text`` without parentheses that enclose all of it (``((a))`` -> ``a``)."""
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, char in enumerate(text):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0 and i < len(text) - 1:
                return text  # ``(a) AND (b)``: the first one closes early
        text = text[1:-1].strip()
    return text


def _expr_problem(expr: str | None) -> str | None:
    if expr is None:
        return "missing"
    text = _strip_enclosing_parens(" ".join(expr.split()))
    if text in _FAIL_CLOSED:
        return None
    if re.search(r"\bOR\b", text, re.IGNORECASE):
        return "contains OR, which can widen it beyond the current user"
    return "is not exactly user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid"


def audit_rls(admin_db: AdminDB) -> list[RlsFinding]:
    """Return every gap in row-level security (empty when none); see the module docstring.

    Raises:
        DatabaseError: the catalog could not be read.
    """
    return _audit(admin_db.execute_admin)


def _audit(execute: Callable[[str, Params], list[Row]]) -> list[RlsFinding]:
    tables = execute(_USER_TABLES, ())
    by_table: dict[int, list[dict[str, object]]] = {}
    for policy in execute(_POLICIES, ()):
        by_table.setdefault(int(policy["table_oid"]), []).append(policy)
    findings: list[RlsFinding] = []
    for table in tables:
        findings.extend(_table_findings(table, by_table.get(int(table["oid"]), [])))
    user_tables = {int(t["oid"]) for t in tables}
    flagged: set[str] = set()
    for view in execute(_VIEWS, ()):
        name = str(view["name"])
        if int(view["rel_oid"]) not in user_tables or name in flagged:
            continue
        options = [str(o).lower() for o in view["options"]]
        if view["kind"] == "m":
            problem = "is a materialized view over user-scoped tables (it cannot apply RLS)"
        elif not any(o in _INVOKER_ON for o in options):
            problem = "reads user-scoped tables without security_invoker = true (bypasses RLS)"
        else:
            continue
        flagged.add(name)
        findings.append(RlsFinding(name, problem))
    findings.extend(_definer_findings(execute(_DEFINERS, (_APP,))))
    return findings


def _definer_findings(functions: list[Row]) -> list[RlsFinding]:
    findings: list[RlsFinding] = []
    for function in functions:
        powers = []
        if function["superuser"]:
            powers.append("is a superuser")  # and so everything below: say only this
        else:
            if function["bypassrls"]:
                powers.append("has BYPASSRLS")
            if function["bypassing_roles"]:
                powers.append(
                    f"is a member of {', '.join(function['bypassing_roles'])} "
                    "(superuser or BYPASSRLS)"
                )
            if function["owned_tables"]:
                powers.append(
                    "owns, or is a member of the owner of, user-scoped tables "
                    f"{', '.join(function['owned_tables'])} (an owner can switch row-level "
                    "security off)"
                )
        if not powers:
            continue
        name = str(function["name"])
        # crm_app itself when it may (then every member may); else the members granted it.
        callers = [_APP] if _APP in function["callers"] else list(function["callers"])
        findings.append(
            RlsFinding(
                name,
                f"is SECURITY DEFINER, so it runs as its owner {function['owner']} whoever "
                f"calls it, and that owner {'; '.join(powers)}: {', '.join(callers)} may "
                "execute it and so bypass row-level security; fix: REVOKE EXECUTE ON FUNCTION "
                f"{name} FROM PUBLIC, {', '.join(callers)} (or make it SECURITY INVOKER, or "
                "give it an owner that row-level security binds and that owns no user-scoped "
                "table)",
            )
        )
    return findings


def _table_findings(
    table: dict[str, object], policies: list[dict[str, object]]
) -> list[RlsFinding]:
    name = str(table["name"])
    findings: list[RlsFinding] = []
    if not table["enabled"]:
        findings.append(RlsFinding(name, "ROW LEVEL SECURITY is not enabled"))
    if not table["forced"]:
        findings.append(
            RlsFinding(name, "ROW LEVEL SECURITY is not FORCEd (the owner bypasses it)")
        )
    if not policies:
        findings.append(RlsFinding(name, "has no row-level security policy"))
    for policy in policies:
        needs_using, needs_check = _NEEDS.get(str(policy["cmd"]), (True, True))
        for clause, needed, expr in (
            ("USING", needs_using, policy["using_expr"]),
            ("WITH CHECK", needs_check, policy["check_expr"]),
        ):
            if not needed and expr is None:
                continue
            problem = _expr_problem(None if expr is None else str(expr))
            if problem:
                findings.append(RlsFinding(name, f"policy {policy['name']}: {clause} {problem}"))
    if not table["indexed"]:
        findings.append(RlsFinding(name, "has no index whose first column is user_id"))
    return findings
