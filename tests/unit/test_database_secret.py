"""``crm/database`` read whole: static URLs, or URLs without a login plus the roles of Vault's
database secrets engine; and the engine's role statements and the policy the app needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crm_infra import database_engine
from crm_infra.errors import InvalidSecretError
from crm_infra.fakes import InMemorySecretStore
from crm_infra.secret_paths import DEFAULT_CREDS_MOUNT, database_secret

_HOST_ONLY = "postgresql://db.internal:5432/crm"


def _store(**fields: Any) -> InMemorySecretStore:
    return InMemorySecretStore({"crm/database": fields})


def test_static_urls_keep_working_with_no_role() -> None:
    secret = database_secret(
        _store(url="postgresql://app:pw@db/crm", admin_url="postgresql://adm:pw@db/crm")
    )
    assert (secret.creds_role, secret.admin_creds_role) == (None, None)
    assert secret.creds_mount == DEFAULT_CREDS_MOUNT == "database"
    assert "pw" not in repr(secret)


def test_roles_and_mount_are_read_and_either_role_may_be_absent() -> None:
    secret = database_secret(
        _store(
            url=_HOST_ONLY,
            admin_url="postgresql://adm:pw@db.internal:5432/crm",
            creds_role="crm-app",
            creds_mount="db/prod",
        )
    )
    assert secret.creds_role == "crm-app"
    assert secret.admin_creds_role is None
    assert secret.creds_mount == "db/prod"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:SECRET-PW@db/crm",
        "postgresql://app@db/crm",
        "postgresql://db/crm?user=app",
        "postgresql://db/crm?password=SECRET-PW",
    ],
)
def test_a_url_with_a_login_beside_a_role_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(InvalidSecretError, match="no user or password") as caught:
        database_secret(_store(url=url, admin_url=_HOST_ONLY, creds_role="crm-app"))
    assert "SECRET-PW" not in str(caught.value)
    assert "app@" not in str(caught.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"creds_role": "a/b"},
        {"creds_role": ""},
        {"admin_creds_role": 7},
        {"creds_mount": "../sys"},
    ],
)
def test_a_role_or_mount_that_is_not_a_plain_name_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidSecretError, match="crm/database"):
        database_secret(_store(url=_HOST_ONLY, admin_url=_HOST_ONLY, **fields))


def test_the_app_role_statements_make_a_member_of_crm_app_that_cannot_bypass_rls() -> None:
    creation = " ".join(database_engine.APP_CREATION_STATEMENTS)
    assert "NOBYPASSRLS" in creation
    assert 'GRANT crm_app TO "{{name}}"' in creation
    assert "VALID UNTIL '{{expiration}}'" in creation


def test_revocation_revokes_membership_then_ends_sessions_then_drops_the_role() -> None:
    for statements, group in (
        (database_engine.APP_REVOCATION_STATEMENTS, "crm_app"),
        (database_engine.ADMIN_REVOCATION_STATEMENTS, "crm_admin"),
    ):
        text = list(statements)
        assert text[0] == f'REVOKE {group} FROM "{{{{name}}}}";'
        assert "pg_terminate_backend" in text[1]
        assert text[-1] == 'DROP ROLE IF EXISTS "{{name}}";'


def test_the_policy_allows_reading_the_credentials_and_renewing_leases_and_the_token() -> None:
    policy = database_engine.dynamic_credentials_policy(["crm-app", "crm-admin"], "db")
    for path, capability in (
        ("db/creds/crm-app", "read"),
        ("db/creds/crm-admin", "read"),
        ("sys/leases/renew", "update"),
        ("sys/leases/revoke", "update"),
        ("auth/token/renew-self", "update"),
    ):
        block = policy.split(f'path "{path}" {{', 1)[1].split("}", 1)[0]
        assert capability in block, path


def test_the_engines_connection_url_is_a_template_without_the_managers_login() -> None:
    url, user, password = database_engine._plugin_url(
        "postgresql://vault_mgr:MGR-PW@db.internal:6432/crm?sslmode=require"
    )
    assert url == (
        "postgresql://{{username}}:{{password}}@db.internal:6432/crm?sslmode=require"
    )
    assert (user, password) == ("vault_mgr", "MGR-PW")


def test_the_operations_guide_shows_the_statements_the_code_uses() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for statement in (
        *database_engine.APP_CREATION_STATEMENTS,
        *database_engine.APP_REVOCATION_STATEMENTS,
    ):
        assert statement in guide, statement
