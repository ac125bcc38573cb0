"""The PostgreSQL adapter's pure helpers: password scrubbing, statement names (no server)."""

from __future__ import annotations

import pytest

from crm_infra.adapters.postgres.errors import password_of, scrub
from crm_infra.adapters.postgres.pipeline import statement_name


@pytest.mark.parametrize(
    ("conninfo", "password"),
    [
        ("postgresql://app:s3cr%40t@db:5432/crm", "s3cr@t"),
        ("postgresql://app@db/crm", None),
        ("host=db password=hunter2 user=app", "hunter2"),
        ("host=db password='two words' user=app", "two words"),
        ("postgresql://app:p@[::1/crm", "p"),
    ],
)
def test_password_of_finds_the_password(conninfo: str, password: str | None) -> None:
    assert password_of(conninfo) == password


def test_scrub_removes_known_and_password_shaped_secrets() -> None:
    text = 'bad URI "postgresql://app:hunter2@db/crm", also password=other and known-secret here'
    cleaned = scrub(text, ["known-secret", None])
    for secret in ("hunter2", "other", "known-secret"):
        assert secret not in cleaned
    assert "postgresql://app:***@db/crm" in cleaned


def test_statement_names_are_content_addressed() -> None:
    name = statement_name("SELECT $1", (20,))
    assert name == statement_name("SELECT $1", (20,))  # another connection, another process
    assert name.startswith(b"_crm_")
    assert len(name) < 64  # PostgreSQL's identifier limit
    assert name != statement_name("SELECT $1", (25,))  # other parameter types
    assert name != statement_name("SELECT $1 ", (20,))  # other text
