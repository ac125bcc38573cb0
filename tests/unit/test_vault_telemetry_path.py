"""How a Vault span shows the secret path: names as they are, anything else as ``*``, and a
path the client refuses as ``(invalid)``, so that no id, number or email reaches a span."""

from __future__ import annotations

import pytest

from crm_infra.adapters.vault.telemetry import shown_path


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("crm/database", "crm/database"),
        ("crm/email", "crm/email"),
        ("crm/rate_limit-config", "crm/rate_limit-config"),
        ("crm/tenants/3f2a9c1e-1b2c-4d5e-8f90-0a1b2c3d4e5f", "crm/tenants/*"),
        ("crm/users/42/api", "crm/users/*/api"),
        ("crm/Bob", "crm/*"),
        ("crm/bob@example.com", "crm/*"),
        ("crm/s3", "crm/*"),
        ("crm/" + "a" * 33, "crm/*"),
    ],
)
def test_a_path_shows_its_names_and_hides_the_rest(path: str, shown: str) -> None:
    assert shown_path(path) == shown


@pytest.mark.parametrize(
    "path",
    [
        "../planted",
        "crm/../x",
        "crm/./x",
        "crm/a b",
        "crm/x\n",
        "",
        "/crm/x",
        "secret/data/crm/database",
        42,
        None,
    ],
)
def test_a_path_the_client_refuses_is_not_repeated(path: object) -> None:
    assert shown_path(path) == "(invalid)"
