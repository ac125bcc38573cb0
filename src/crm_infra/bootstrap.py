"""Create (and drop) a throwaway CRM database with its own login roles, as a superuser.

Used by the test fixtures, the benchmarks and ``crm-infra dev``. Several runs may share one
server at once: the shared group roles (``sql/bootstrap/roles.sql``) are created under an
advisory lock, and everything else (database, login roles) has a unique random name and is
dropped again by :func:`drop_database`. The group roles are shared and never dropped.

Both run with every OpenTelemetry instrumentation suppressed when OpenTelemetry is loaded
(:class:`~crm_infra.telemetry.silence.silenced`; without it nothing is imported): ``CREATE
ROLE ... PASSWORD '...'`` carries a password in its text, which a driver's instrumentation
(``opentelemetry-instrumentation-psycopg``) would otherwise copy into its own span.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from urllib.parse import quote, urlencode

import attrs
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from crm_infra.adapters.postgres.errors import translate_errors, translate_input_errors
from crm_infra.errors import ConfigError
from crm_infra.redaction import password_of
from crm_infra.schema_files import bootstrap_roles_file
from crm_infra.telemetry.silence import silenced

__all__ = ["BootstrappedDatabase", "create_database", "drop_database"]

# Advisory locks are per database: this one is taken in the superuser URL's database, which
# every concurrent run shares. The number is arbitrary but fixed ("crm-boot").
_BOOTSTRAP_LOCK = 0x63726D2D626F6F74


@attrs.frozen
class BootstrappedDatabase:
    """A database made by :func:`create_database`, with its login roles and their URLs."""

    database: str
    app_role: str
    admin_role: str
    app_url: str = attrs.field(repr=False)
    admin_url: str = attrs.field(repr=False)
    superuser_url: str = attrs.field(repr=False)


def _url(base: dict[str, str | int | None], user: str, password: str, dbname: str) -> str:
    host = str(base.get("host") or "")
    port = base.get("port")
    query: dict[str, str] = {}
    if host.startswith("/"):
        query["host"], host = host, ""
    elif ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if port:
        netloc += f":{port}"
    tail = f"?{urlencode(query)}" if query else ""
    return f"postgresql://{netloc}/{quote(dbname, safe='')}{tail}"


def create_database(
    superuser_url: str, *, prefix: str = "crm", sql_dir: Path | None = None
) -> BootstrappedDatabase:
    """Create a fresh database and two login roles for it; return their URLs.

    The app role is ``NOBYPASSRLS IN ROLE crm_app``; the admin role is ``BYPASSRLS IN ROLE
    crm_admin``. Passwords are random. Migrations are not applied here (use
    :func:`crm_infra.migrations.apply_migrations` through the admin URL).

    Args:
        superuser_url: a superuser's URL; its database is where the lock is taken.
        prefix: the start of the generated names (lowercase letters, digits, underscores).
        sql_dir: where ``bootstrap/roles.sql`` lives (default: the packaged schema).

    Raises:
        ConfigError: ``prefix`` is not a plain lowercase name (before any I/O).
        PostgresError: the server refused or could not be reached (passwords scrubbed).
    """
    if re.fullmatch(r"[a-z_][a-z0-9_]{0,30}", prefix) is None:
        raise ConfigError(
            f"create_database: prefix must be lowercase letters, digits and underscores, "
            f"starting with a letter or underscore, at most 31 characters (got {prefix!r})"
        )
    suffix = secrets.token_hex(6)
    database = f"{prefix}_{suffix}"
    app_role, admin_role = f"{prefix}_app_{suffix}", f"{prefix}_admin_{suffix}"
    app_password, admin_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    hidden = (password_of(superuser_url), app_password, admin_password)
    roles_sql = bootstrap_roles_file(sql_dir).read_text(encoding="utf-8")
    with (
        silenced(),  # the passwords are in SQL text: no driver's span may copy it
        translate_errors("bootstrap: create database", hidden),
        translate_input_errors("bootstrap: create database"),
    ):
        base = conninfo_to_dict(superuser_url)
        with psycopg.connect(superuser_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            try:
                admin.execute("SELECT pg_advisory_lock(%s)", (_BOOTSTRAP_LOCK,))
                with psycopg.connect(
                    superuser_url, dbname=database, autocommit=True, connect_timeout=5
                ) as target:
                    # Everything the database itself must refuse (temporary tables,
                    # procedural languages, functions that run SQL text) is in this one file,
                    # so a superuser who runs only the file by hand gets all of it too.
                    target.execute(roles_sql)
                    for role, password, flags, group in (
                        (app_role, app_password, "NOBYPASSRLS", "crm_app"),
                        (admin_role, admin_password, "BYPASSRLS", "crm_admin"),
                    ):
                        target.execute(
                            sql.SQL(
                                "CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB "
                                "NOCREATEROLE " + flags + " IN ROLE {}"
                            ).format(
                                sql.Identifier(role), sql.Literal(password), sql.Identifier(group)
                            )
                        )
            except BaseException:
                _drop(admin, database, (app_role, admin_role))
                raise
            finally:
                admin.execute("SELECT pg_advisory_unlock(%s)", (_BOOTSTRAP_LOCK,))
    return BootstrappedDatabase(
        database=database,
        app_role=app_role,
        admin_role=admin_role,
        app_url=_url(base, app_role, app_password, database),
        admin_url=_url(base, admin_role, admin_password, database),
        superuser_url=superuser_url,
    )


def _drop(conn: psycopg.Connection[object], database: str, roles: tuple[str, ...]) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )
    conn.execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
    )
    for role in roles:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def drop_database(created: BootstrappedDatabase) -> None:
    """Terminate the database's connections, drop it, and drop its two login roles.

    Raises:
        PostgresError: the server refused (passwords scrubbed).
    """
    hidden = (password_of(created.superuser_url),)
    with (
        silenced(),
        translate_errors("bootstrap: drop database", hidden),
        translate_input_errors("bootstrap: drop database"),
        psycopg.connect(created.superuser_url, autocommit=True, connect_timeout=5) as conn,
    ):
        _drop(conn, created.database, (created.app_role, created.admin_role))
