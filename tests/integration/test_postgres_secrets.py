"""No password in any message, traceback, repr or error chain, whatever psycopg puts in its
errors."""

from __future__ import annotations

import traceback

import pytest

from crm_infra import DatabaseError
from crm_infra.adapters import PostgresClient, PostgresError
from crm_infra.bootstrap import BootstrappedDatabase
from tests.battery.leaks import reachable_texts
from tests.fixtures.common import free_port
from tests.fixtures.postgres import login_role

MARKER = "Pa55-MARKER-zq81"


def everything_printed(exc: BaseException) -> str:
    """The whole traceback as a user would see it, and everything the error's chain holds
    (psycopg's connection object among it, with its options)."""
    reachable = "\n".join(text for _, text in reachable_texts(exc))
    return "".join(traceback.format_exception(exc)) + repr(exc) + reachable


@pytest.mark.parametrize(
    "url",
    [  # each fails before connecting; port 1 names no server, should one be tried
        f"postgresql://app:{MARKER}@127.0.0.1:notaport/crm",
        f"postgresql://app:{MARKER}@127.0.0.1:1/crm?sslmode=bogus",
        f"postgresql://app:{MARKER}@[::1/crm",
        f"host=127.0.0.1 password={MARKER} port=notaport",
        f"host=127.0.0.1 password='{MARKER}' dbname=crm bogus_option=1",
        f"postgresql://app:{MARKER}@127.0.0.1:1/crm?bogus_option=1",
    ],
)
def test_a_malformed_url_never_shows_the_password(url: str) -> None:
    with pytest.raises(PostgresError) as caught:
        PostgresClient(url, 1, connect_timeout=2)
    assert MARKER not in everything_printed(caught.value)


def test_an_unreachable_server_never_shows_the_password() -> None:
    url = f"postgresql://app:{MARKER}@127.0.0.1:{free_port()}/crm"
    with pytest.raises(DatabaseError) as caught:
        PostgresClient(url, 1, connect_timeout=2)
    assert MARKER not in everything_printed(caught.value)


def test_a_refused_role_never_shows_the_password(pg_database: BootstrappedDatabase) -> None:
    # The role logs in with the marker as its password and is then refused by the role check.
    with (
        login_role(pg_database, "NOBYPASSRLS IN ROLE crm_owner", password=MARKER) as role,
        pytest.raises(PostgresError) as caught,
    ):
        PostgresClient(role.url, 1)
    assert MARKER not in everything_printed(caught.value)


def test_the_client_repr_hides_passwords(pg_database: BootstrappedDatabase) -> None:
    with (
        login_role(pg_database, "NOBYPASSRLS IN ROLE crm_app", password=MARKER) as app,
        login_role(pg_database, "BYPASSRLS IN ROLE crm_admin", password=MARKER + "admin") as admin,
    ):
        with PostgresClient(app.url, 1, admin_connection_url=admin.url) as client:
            client.execute_admin("SELECT 1")
            shown = repr(client) + str(client) + repr(vars(client).keys())
        assert MARKER not in shown
        assert app.name in repr(client)


def test_the_bootstrapped_database_repr_hides_its_urls(pg_database: BootstrappedDatabase) -> None:
    shown = repr(pg_database)
    assert pg_database.database in shown
    for url in (pg_database.app_url, pg_database.admin_url):
        password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        assert password not in shown
