"""No password, token, secret or row value in any message, traceback, repr or log, on real servers.

Each test plants unique markers (a Valkey password, a Vault token, secret values), drives the
adapters through success and every failure it can provoke, captures every logger at DEBUG, and
scans all of it (see :class:`tests.battery.leaks.LeakScan`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import hvac
import psycopg
import pytest

from crm_infra import secret_paths
from crm_infra.adapters import PostgresClient, ValkeyClient, VaultClient
from crm_infra.adapters.postgres.errors import password_of
from crm_infra.bootstrap import BootstrappedDatabase, create_database
from crm_infra.devservers.openbao import OpenBaoServer, openbao_dev_server
from crm_infra.devservers.valkey import ValkeyDevServer
from crm_infra.errors import InfraError
from crm_infra.secret_cache import CachedSecretStore
from tests.battery.leaks import LeakScan, marker, provoke_database_errors
from tests.fixtures.common import free_port
from tests.fixtures.openbao import VaultMount, create_token, read_policy
from tests.fixtures.valkey import running_valkey

PASSWORD = marker("valkeypassword")


@pytest.fixture
def locked_valkey() -> Iterator[ValkeyDevServer]:
    with running_valkey(password=PASSWORD) as server:
        yield server


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every logger at DEBUG (redis, urllib3, hvac, psycopg and ours)."""
    caplog.set_level(logging.DEBUG)
    return caplog


# --- Valkey -----------------------------------------------------------------------------------


def _fast(url: str, key_prefix: str = "") -> ValkeyClient:
    return ValkeyClient(
        url, key_prefix=key_prefix, connect_timeout=0.3, socket_timeout=0.5, timeout=1.5
    )


def test_valkey_password_never_leaks(
    locked_valkey: ValkeyDevServer, debug_logs: pytest.LogCaptureFixture
) -> None:
    scan = LeakScan(PASSWORD)
    port = locked_valkey.port
    with _fast(locked_valkey.url, key_prefix="p:") as kv:
        scan.add("repr", repr(kv))
        scan.add("str", str(kv))
        kv.set("k", "v")
        kv.set("text", "not json")
        scan.expect_error("get_json of text", lambda: kv.get_json("text"))
        scan.expect_error("incr of text", lambda: kv.incr("text"))
        scan.expect_error("bad expiry", lambda: kv.set("k", "v", expire_seconds=0))
        locked_valkey.stop()
        for op, call in {
            "get": lambda: kv.get("k"),
            "incr": lambda: kv.incr("n"),
            "hit": lambda: kv.hit("rl", 5),
            "health_check": kv.health_check,
        }.items():
            scan.expect_error(f"outage {op}", call)
        locked_valkey.start()
    scan.expect_error("closed client", lambda: kv.get("k"))
    for name, url in {
        "wrong password": f"redis://:{marker('x')}@127.0.0.1:{port}/0",
        "right password, wrong user": f"redis://nobody:{PASSWORD}@127.0.0.1:{port}/0",
        "nothing listening": f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0",
        "bad port": f"redis://:{PASSWORD}@127.0.0.1:notaport/0",
        "bad database": f"redis://:{PASSWORD}@127.0.0.1:{port}/zero",
        "bad scheme": f"valkey://:{PASSWORD}@127.0.0.1:{port}/0",
        "password in the query": f"redis://127.0.0.1:{port}/0?password={PASSWORD}",
        "unencoded '#' in the password": f"redis://:ab#{PASSWORD}@127.0.0.1:{port}/0",
        "unencoded '/' in the password": f"redis://:ab/{PASSWORD}@127.0.0.1:{port}/0",
        "unencoded '?' in the password": f"redis://:ab?{PASSWORD}@127.0.0.1:{port}/0",
        "unencoded '/' after the password": f"redis://:{PASSWORD}/x@127.0.0.1:{port}/0",
        "encoded '@' in the password": f"redis://:{quote('a@' + PASSWORD)}@127.0.0.1:{port}/0",
    }.items():
        try:
            client = _fast(url)
        except InfraError as exc:
            scan.add_error(name, exc)
        else:
            scan.add(f"{name}: repr", repr(client))
            client.close()
    scan.add_records(debug_logs.records)
    scan.check()


# --- Vault / OpenBao --------------------------------------------------------------------------


def _vault_texts(scan: LeakScan, client: VaultClient) -> None:
    scan.add("repr", repr(client))
    scan.add("str", str(client))


def test_vault_token_and_secret_values_never_leak(
    openbao_root: Any,
    openbao_server: OpenBaoServer,
    vault_mount: VaultMount,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    token = marker("vaulttoken")
    db_password, api_key, value = marker("dbpassword"), marker("apikey"), marker("value")
    scan = LeakScan(token, db_password, api_key, value)
    policy = read_policy(vault_mount.name, "crm/*") + "\n" + read_policy(vault_mount.name, "app/*")
    name = f"leak{marker('')[-8:]}"
    openbao_root.sys.create_or_update_policy(name=name, policy=policy)
    openbao_root.auth.token.create(id=token, policies=[name], ttl="1h")
    vault_mount.put(
        "crm/database",
        {
            "url": f"postgresql://app:{db_password}@127.0.0.1/crm",
            "admin_url": f"mysql://admin:{db_password}@127.0.0.1/crm",  # wrong scheme
        },
    )
    vault_mount.put("crm/email", {"api_key": api_key, "from_address": "not an address"})
    vault_mount.put("crm/valkey", {"url": f"http://:{value}@127.0.0.1:6379"})  # wrong scheme
    vault_mount.put("app/deleted", {"password": value})
    vault_mount.delete("app/deleted")
    addr = openbao_server.addr
    with VaultClient(addr, token, mount_point=vault_mount.name, cache_ttl=30) as client:
        _vault_texts(scan, client)
        assert db_password in client.get_database_url()
        scan.add("cache repr", repr(CachedSecretStore(client, 5)))
        scan.expect_error("admin url, wrong scheme", client.get_admin_database_url)
        scan.expect_error("email, bad address", client.get_email_credentials)
        scan.expect_error("valkey url, wrong scheme", client.get_valkey_url)
        scan.expect_error("deleted", lambda: client.get_secret("app/deleted"))
        scan.expect_error("not found", lambda: client.get_secret("app/missing"))
        scan.expect_error("denied", lambda: client.get_secret("other/x"))
        scan.expect_error("invalid path", lambda: client.get_secret("../../sys/seal-status"))
        vault_mount.put("crm/email", {"api_key": api_key, "from_address": "crm@example.com"})
        client.invalidate("crm/email")
        credentials = client.get_email_credentials()
        scan.add("email credentials repr", repr(credentials))
        scan.add("email credentials str", str(credentials))
        openbao_root.auth.token.revoke(token)
        scan.expect_error("revoked, health", client.health_check)
        scan.expect_error("revoked, read", lambda: client.get_secret("crm/never-read"))
        _vault_texts(scan, client)
    scan.expect_error("closed", lambda: client.get_secret("crm/database"))
    scan.expect_error("invalid token", lambda: VaultClient(addr, marker("y")))
    with_password = addr.replace("http://", f"http://user:{value}@")
    scan.expect_error("credentials in the address", lambda: VaultClient(with_password, token))
    scan.expect_error("revoked token", lambda: VaultClient(addr, token))
    scan.expect_error(
        "unreachable", lambda: VaultClient(f"http://127.0.0.1:{free_port()}", token, timeout=1)
    )
    scan.add_records(debug_logs.records)
    scan.check()


def test_approle_secret_id_and_a_sealed_server_never_leak(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    secret_id = marker("secretid")
    role_id = marker("roleid")
    scan = LeakScan(secret_id, role_id)
    with openbao_dev_server() as server:
        root = hvac.Client(server.addr, server.token)
        root.sys.enable_auth_method("approle")
        root.sys.create_or_update_policy(name="crm", policy=read_policy("secret", "crm/*"))
        root.auth.approle.create_or_update_approle("crm", token_policies=["crm"])
        root.auth.approle.update_role_id("crm", role_id)
        root.auth.approle.create_custom_secret_id("crm", secret_id)
        root.secrets.kv.v2.create_or_update_secret(path="crm/x", secret={"k": "v"})
        scan.expect_error(
            "wrong secret id",
            lambda: VaultClient(server.addr, role_id=role_id, secret_id=marker("z")),
        )
        with VaultClient(server.addr, role_id=role_id, secret_id=secret_id) as client:
            _vault_texts(scan, client)
            assert client.get_secret("crm/x") == {"k": "v"}
            root.sys.seal()
            scan.expect_error("sealed", lambda: client.get_secret("crm/x"))
            scan.expect_error("sealed health", client.health_check)
        root.adapter.close()
    scan.add_records(debug_logs.records)
    scan.check()


def test_the_root_token_of_a_dev_server_never_leaks(openbao_server: OpenBaoServer) -> None:
    scan = LeakScan(openbao_server.token)
    scan.add("server repr", repr(openbao_server))
    root = hvac.Client(openbao_server.addr, openbao_server.token)
    token = create_token(root, read_policy("secret", "crm/*"))
    root.adapter.close()
    with VaultClient(openbao_server.addr, token) as client:
        _vault_texts(scan, client)
    scan.check()


def test_the_secret_layout_accessors_never_show_values(
    openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    value = marker("value")
    scan = LeakScan(value)
    bad = {
        "url": f"mysql://u:{value}@h/db",
        "admin_url": value,
    }
    vault_mount.put("crm/database", bad)
    vault_mount.put("crm/valkey", {"url": f"{value}://x"})
    vault_mount.put("crm/email", {"api_key": value, "from_address": value})
    with VaultClient(
        openbao_server.addr, openbao_server.token, mount_point=vault_mount.name
    ) as client:
        for accessor in (
            secret_paths.database_url,
            secret_paths.admin_database_url,
            secret_paths.valkey_url,
            secret_paths.email_credentials,
        ):
            scan.expect_error(accessor.__name__, lambda a=accessor: a(client))  # type: ignore[misc]
    scan.check()


# --- PostgreSQL -------------------------------------------------------------------------------


def _terminate(superuser_url: str, pid: int) -> None:
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_database_passwords_and_row_values_never_leak(
    pg_database: BootstrappedDatabase, debug_logs: pytest.LogCaptureFixture
) -> None:
    app_password = password_of(pg_database.app_url)
    admin_password = password_of(pg_database.admin_url)
    assert app_password
    assert admin_password
    value = marker("rowvalue")
    scan = LeakScan(app_password, admin_password, value)
    scan.add("bootstrapped repr", repr(pg_database))
    with PostgresClient(
        pg_database.app_url, 1, admin_connection_url=pg_database.admin_url, pool_timeout=0.3
    ) as db:
        scan.add("client repr", repr(db))
        alice, bob = provoke_database_errors(db, scan, value, surrogate=False)
        with db.transaction(alice) as tx:
            tx.execute("SELECT 1")
            scan.expect_error("pool exhausted", lambda: db.execute("SELECT 1", (), bob))
        scan.expect_error("admin, no such table", lambda: db.execute_admin("SELECT * FROM nope"))

        def killed_in_a_transaction() -> None:
            with db.transaction(alice) as tx:
                _terminate(pg_database.superuser_url, tx.execute_scalar("SELECT pg_backend_pid()"))
                tx.execute("SELECT 1")

        scan.expect_error("connection killed in a transaction", killed_in_a_transaction)
        db.execute_admin("DELETE FROM users WHERE id IN (%s, %s)", (alice, bob))
    scan.expect_error("closed", lambda: db.execute("SELECT 1", (), alice))
    host_part = pg_database.app_url.rpartition("@")[2]
    user_part = pg_database.app_url.partition("://")[2].partition(":")[0]
    for name, url in {
        "nothing listening": f"postgresql://{user_part}:{app_password}@127.0.0.1:{free_port()}/x",
        "bad port": f"postgresql://{user_part}:{app_password}@127.0.0.1:notaport/x",
        "unencoded '/' in the password": f"postgresql://u:ab/{app_password}@{host_part}",
        "unbalanced bracket": f"postgresql://u:{app_password}@[::1/x",
        "key=value form": f"host=127.0.0.1 port={free_port()} user=u password={app_password}",
    }.items():
        scan.expect_error(name, lambda u=url: PostgresClient(u, 1, connect_timeout=2))  # type: ignore[misc]
    dead = f"postgresql://postgres:{app_password}@127.0.0.1:{free_port()}/postgres"
    scan.expect_error("bootstrap, nothing listening", lambda: create_database(dead))
    scan.add_records(debug_logs.records)
    scan.check()


def test_a_parameter_with_a_lone_surrogate_never_leaks_its_value(pg_db: PostgresClient) -> None:
    value = marker("rowvalue")
    scan = LeakScan(value)
    scan.expect_error(
        "surrogate",
        lambda: pg_db.execute("SELECT %s::text AS t", (value + "\ud800",), uuid.uuid4()),
    )
    scan.check()
