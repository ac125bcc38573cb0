"""Vault's database secrets engine set up for this schema: role statements, setup, policy.

The engine creates a PostgreSQL login role per lease with the role's creation statements and
drops it with the revocation statements when the lease ends (expired or revoked). The
engine's own default revocation fails on this schema (it revokes table privileges one by one,
and the application role was never granted any directly), which leaves the role behind; and
dropping a role does not end its sessions, which go on with whatever the role could do. The
statements here revoke the membership, end the role's sessions and drop it.

Used by ``crm-infra dev --dynamic-credentials``, by the tests and by docs/operations.md,
which shows the same statements as ``bao`` commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from crm_infra.secret_paths import DEFAULT_CREDS_MOUNT, validate_mount_point

__all__ = [
    "ADMIN_CREATION_STATEMENTS",
    "ADMIN_REVOCATION_STATEMENTS",
    "APP_CREATION_STATEMENTS",
    "APP_REVOCATION_STATEMENTS",
    "DEV_ROLES",
    "PLUGIN_NAME",
    "configure_database_engine",
    "create_engine_role",
    "dynamic_credentials_policy",
    "provision_engine",
    "revoke_engine_leases",
]

PLUGIN_NAME = "postgresql-database-plugin"
DEV_ROLES = ("crm-app", "crm-admin")
"""The engine roles ``crm-infra dev --dynamic-credentials`` creates: application, admin."""

APP_CREATION_STATEMENTS = (
    (
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
        "VALID UNTIL '{{expiration}}' NOBYPASSRLS INHERIT;"
    ),
    'GRANT crm_app TO "{{name}}";',
)
"""One login role per lease, a member of ``crm_app``: what the start-up role check accepts."""

_TERMINATE = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';"

APP_REVOCATION_STATEMENTS = (
    'REVOKE crm_app FROM "{{name}}";',  # first: a session still running loses its access now
    _TERMINATE,  # DROP ROLE leaves sessions running: end them
    'DROP ROLE IF EXISTS "{{name}}";',
)

ADMIN_CREATION_STATEMENTS = (
    (
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
        "VALID UNTIL '{{expiration}}' BYPASSRLS INHERIT;"
    ),
    'GRANT crm_admin TO "{{name}}";',
)
"""The admin path's role: BYPASSRLS, which on PostgreSQL 15 only a superuser may grant, so the
engine's connection must be a superuser's for it (otherwise keep the static ``admin_url``)."""

ADMIN_REVOCATION_STATEMENTS = (
    'REVOKE crm_admin FROM "{{name}}";',
    _TERMINATE,
    # Migrations create objects as crm_owner (SET ROLE); anything made otherwise would keep
    # the role from being dropped.
    'REASSIGN OWNED BY "{{name}}" TO crm_owner;',
    'DROP OWNED BY "{{name}}";',
    'DROP ROLE IF EXISTS "{{name}}";',
)


def _plugin_url(manager_url: str) -> tuple[str, str, str]:
    """Return the engine's connection URL template, and the user and password of the
    PostgreSQL URL the engine's connection uses (it keeps them; the template names neither)."""
    parts = conninfo_to_dict(manager_url)
    host = str(parts.get("host") or "127.0.0.1")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = parts.get("port") or 5432
    dbname = quote(str(parts.get("dbname") or ""), safe="")
    template = f"postgresql://{{{{username}}}}:{{{{password}}}}@{host}:{port}/{dbname}"
    if parts.get("sslmode"):
        template += f"?sslmode={quote(str(parts['sslmode']), safe='')}"
    return template, str(parts.get("user") or ""), str(parts.get("password") or "")


def configure_database_engine(
    client: Any,
    *,
    manager_url: str,
    connection: str,
    roles: Sequence[str],
    mount: str = DEFAULT_CREDS_MOUNT,
) -> None:
    """Mount the database secrets engine (if needed) and connect it to one CRM database.

    Args:
        client: an hvac client with a token allowed to manage ``sys/mounts`` and ``<mount>/``.
        manager_url: the PostgreSQL URL the engine logs in with, naming the CRM database: a
            role with CREATEROLE (and pg_signal_backend), or a superuser for the admin path.
        connection: the name of the engine's connection (``<mount>/config/<connection>``).
        roles: the engine roles allowed to use the connection.
        mount: where the engine is mounted.
    """
    validate_mount_point(mount)
    if f"{mount}/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine("database", path=mount)
    template, user, password = _plugin_url(manager_url)
    client.secrets.database.configure(
        name=connection,
        plugin_name=PLUGIN_NAME,
        connection_url=template,
        username=user,
        password=password,
        allowed_roles=list(roles),
        verify_connection=True,
        mount_point=mount,
    )


def create_engine_role(
    client: Any,
    *,
    name: str,
    connection: str,
    admin: bool = False,
    default_ttl: int = 3600,
    max_ttl: int = 86400,
    mount: str = DEFAULT_CREDS_MOUNT,
) -> None:
    """Create (or update) an engine role issuing application (or admin) logins.

    Args:
        name: the role, read at ``<mount>/creds/<name>``.
        connection: the engine's connection it uses.
        admin: issue BYPASSRLS members of ``crm_admin`` instead of members of ``crm_app``.
        default_ttl: seconds a lease lasts before it must be renewed.
        max_ttl: seconds past which no renewal extends it; new credentials are read then.
        mount: where the engine is mounted.
    """
    client.secrets.database.create_role(
        name=name,
        db_name=connection,
        creation_statements=list(ADMIN_CREATION_STATEMENTS if admin else APP_CREATION_STATEMENTS),
        revocation_statements=list(
            ADMIN_REVOCATION_STATEMENTS if admin else APP_REVOCATION_STATEMENTS
        ),
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        mount_point=mount,
    )


def dynamic_credentials_policy(roles: Sequence[str], mount: str = DEFAULT_CREDS_MOUNT) -> str:
    """Return what an application token needs beyond reading ``crm/*`` (HCL): read its
    credentials, renew their leases, revoke them at shutdown, and renew itself."""
    lines = ["# crm-infra application: short-lived database credentials."]
    for role in roles:
        lines += [f'path "{mount}/creds/{role}" {{', '  capabilities = ["read"]', "}"]
    lines += [
        'path "sys/leases/renew" {',
        '  capabilities = ["update"]',
        "}",
        'path "sys/leases/revoke" {',
        '  capabilities = ["update"]',
        "}",
        'path "auth/token/renew-self" {',
        '  capabilities = ["update"]',
        "}",
    ]
    return "\n".join(lines) + "\n"


def provision_engine(
    client: Any,
    *,
    superuser_url: str,
    database: str,
    default_ttl: int = 3600,
    max_ttl: int = 86400,
    mount: str = DEFAULT_CREDS_MOUNT,
) -> None:
    """Set up the engine for a local stack: one connection to ``database`` as the superuser
    (so the admin path may be dynamic too: only a superuser may create BYPASSRLS roles on
    PostgreSQL 15) and the roles :data:`DEV_ROLES`."""
    manager_url = make_conninfo(superuser_url, dbname=database)
    configure_database_engine(
        client, manager_url=manager_url, connection="crm", roles=DEV_ROLES, mount=mount
    )
    app_role, admin_role = DEV_ROLES
    for name, admin in ((app_role, False), (admin_role, True)):
        create_engine_role(
            client,
            name=name,
            connection="crm",
            admin=admin,
            default_ttl=default_ttl,
            max_ttl=max_ttl,
            mount=mount,
        )


def revoke_engine_leases(client: Any, mount: str = DEFAULT_CREDS_MOUNT) -> None:
    """Revoke every lease the engine issued (its revocation statements drop each login
    role): what a local stack does before it drops its database and stops OpenBao."""
    client.sys.revoke_prefix(prefix=f"{mount}/creds")
