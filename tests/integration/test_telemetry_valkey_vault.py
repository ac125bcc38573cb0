"""Valkey and Vault port calls on real servers: one span each, with the command and the key
prefix or the secret's path; one span also with redis-py's own instrumentation on; the Valkey
pool's state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from crm_infra.adapters import AsyncValkeyClient, AsyncVaultClient, ValkeyClient, VaultClient
from crm_infra.adapters.valkey import ValkeyDataError
from crm_infra.devservers.openbao import OpenBaoServer
from crm_infra.errors import SecretNotFoundError
from crm_infra.telemetry.pools import client_number
from tests.fixtures.openbao import VaultMount, create_token, read_policy
from tests.fixtures.telemetry import Telemetry

KV_CALLS = [
    ("set", "SET"),
    ("get", "GET"),
    ("set_json", "SET"),
    ("get_json", "GET"),
    ("exists", "EXISTS"),
    ("expire", "EXPIRE"),
    ("ttl", "TTL"),
    ("incr", "INCR"),
    ("hit", "EVALSHA"),
    ("delete", "DEL"),
    ("health_check", "PING"),
]


@pytest.fixture
def kv(valkey_url: str) -> Iterator[ValkeyClient]:
    with ValkeyClient(valkey_url, key_prefix="crm:", check_connection=False) as client:
        yield client


def every_kv_call(kv: ValkeyClient) -> None:
    kv.set("session:s1", "v")
    kv.get("session:s1")
    kv.set_json("profile:p1", {"a": 1})
    kv.get_json("profile:p1")
    kv.exists("session:s1")
    kv.expire("session:s1", 60)
    kv.ttl("session:s1")
    kv.incr("count:c1")
    kv.hit("rate:r1", 60)
    kv.delete("session:s1")
    kv.health_check()


def test_every_valkey_operation_is_one_span_with_its_command_and_key_prefix(
    telemetry: Telemetry, kv: ValkeyClient, valkey_url: str
) -> None:
    every_kv_call(kv)
    spans = telemetry.ours()
    assert [((s.attributes or {})["crm.operation"], s.name) for s in spans] == KV_CALLS
    port = int(valkey_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    for span in spans:
        attributes = span.attributes or {}
        assert attributes["db.system.name"] == "redis"
        assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", port)
        assert attributes["db.namespace"] == "0"
        if attributes["crm.operation"] != "health_check":
            assert str(attributes["crm.kv.key_prefix"]).startswith("crm:")
    (hit,) = telemetry.named("hit")
    assert hit.attributes is not None
    assert (hit.attributes["crm.kv.key_prefix"], hit.attributes["crm.kv.hit.count"]) == (
        "crm:rate:",
        1,
    )
    (get,) = telemetry.named("get")
    assert get.attributes is not None
    assert get.attributes["crm.kv.found"] is True
    assert [p.value for p in telemetry.points("crm.kv.hits")] == [1]


def test_with_redis_instrumentation_on_each_call_is_still_one_span(
    driver_instrumentation: Telemetry, kv: ValkeyClient
) -> None:
    driver_instrumentation.clear()  # the fixture's FLUSHDB
    every_kv_call(kv)
    assert len(driver_instrumentation.ours()) == len(KV_CALLS)
    assert driver_instrumentation.theirs() == []


def test_redis_instrumentation_is_on_outside_crm_infra(
    driver_instrumentation: Telemetry, valkey_url: str
) -> None:
    import redis

    driver_instrumentation.clear()
    with redis.Redis.from_url(valkey_url) as raw:
        raw.ping()
    assert [s.name for s in driver_instrumentation.theirs()] == ["PING"]  # the check can fail


def test_a_failed_valkey_call_carries_the_servers_error_prefix_and_nothing_more(
    telemetry: Telemetry, kv: ValkeyClient
) -> None:
    kv.set("count:planted-key-suffix", "planted-value")
    with pytest.raises(ValkeyDataError):
        kv.incr("count:planted-key-suffix")
    (span,) = telemetry.named("incr")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["db.response.status_code"] == "ERR"
    assert "planted" not in span.to_json()


def test_the_valkey_pool_reports_its_connections(
    telemetry: Telemetry, kv: ValkeyClient, valkey_url: str
) -> None:
    every_kv_call(kv)
    (name,) = kv.pool_stats()
    assert name.startswith("valkey 127.0.0.1:")
    assert name.endswith(f"/0 #{client_number(kv)}")
    stats = kv.pool_stats()[name]
    assert (stats.size, stats.idle, stats.in_use) == (1, 1, 0)
    states = {(p.attributes["db.client.connection.pool.name"],
               p.attributes["db.client.connection.state"]): p.value
              for p in telemetry.points("db.client.connection.count")}
    assert states[(name, "idle")] == 1
    kv.close()
    assert kv.pool_stats() == {}


@pytest.mark.asyncio
async def test_the_asyncio_valkey_client_makes_the_same_spans_and_reports_its_pool(
    telemetry: Telemetry, valkey_url: str
) -> None:
    async with AsyncValkeyClient(valkey_url, key_prefix="crm:", check_connection=False) as kv:
        await kv.set("session:s1", "v")
        await kv.get("session:s1")
        await kv.set_json("profile:p1", {"a": 1})
        await kv.get_json("profile:p1")
        await kv.exists("session:s1")
        await kv.expire("session:s1", 60)
        await kv.ttl("session:s1")
        await kv.incr("count:c1")
        await kv.hit("rate:r1", 60)
        await kv.delete("session:s1")
        await kv.health_check()
        spans = telemetry.ours()
        assert [((s.attributes or {})["crm.operation"], s.name) for s in spans] == KV_CALLS
        (hit,) = telemetry.named("hit")
        assert (hit.attributes or {})["crm.kv.key_prefix"] == "crm:rate:"
        assert [p.value for p in telemetry.points("crm.kv.hits")] == [1]
        (name,) = kv.pool_stats()
        assert name.endswith(f"/0 #{client_number(kv)}")
        assert (kv.pool_stats()[name].idle, kv.pool_stats()[name].in_use) == (1, 0)
    assert kv.pool_stats() == {}


@pytest.fixture
def vault(openbao_server: OpenBaoServer, openbao_root: Any, vault_mount: VaultMount) -> Iterator[
    VaultClient
]:
    token = create_token(openbao_root, read_policy(vault_mount.name, "crm/*"))
    with VaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as client:
        yield client


def test_vault_calls_are_spans_with_the_path_and_never_a_value(
    telemetry: Telemetry, vault: VaultClient, vault_mount: VaultMount, openbao_server: OpenBaoServer
) -> None:
    telemetry.clear()
    vault.get_database_url()
    with pytest.raises(SecretNotFoundError):
        vault.get_secret("crm/missing")
    vault.health_check()
    spans = telemetry.ours()
    assert [(s.name, (s.attributes or {}).get("crm.secret.path")) for s in spans] == [
        ("get_secret", "crm/database"),
        ("get_secret", "crm/missing"),
        ("health_check", None),
    ]
    first = spans[0].attributes or {}
    assert first["crm.port"] == "SecretStore"
    assert first["crm.vault.mount"] == vault_mount.name
    assert f"http://{first['server.address']!s}:{first['server.port']!s}" == openbao_server.addr
    assert spans[1].status.status_code is StatusCode.ERROR
    assert "app-password" not in "".join(s.to_json() for s in spans)


def test_a_path_that_is_not_a_layout_name_is_not_repeated(
    telemetry: Telemetry, vault: VaultClient
) -> None:
    with pytest.raises(ValueError, match="path"):
        vault.get_secret("../planted secret")
    (span,) = telemetry.ours()
    assert (span.attributes or {})["crm.secret.path"] == "(invalid)"


@pytest.mark.asyncio
async def test_the_asyncio_vault_client_makes_the_same_spans(
    telemetry: Telemetry, openbao_server: OpenBaoServer, openbao_root: Any, vault_mount: VaultMount
) -> None:
    token = create_token(openbao_root, read_policy(vault_mount.name, "crm/*"))
    async with AsyncVaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as vault:
        telemetry.clear()
        await vault.get_database_url()
        with pytest.raises(SecretNotFoundError):
            await vault.get_secret("crm/missing")
        await vault.health_check()
    spans = telemetry.ours()
    assert [(s.name, (s.attributes or {}).get("crm.secret.path")) for s in spans] == [
        ("get_secret", "crm/database"),
        ("get_secret", "crm/missing"),
        ("health_check", None),
    ]
    first = spans[0].attributes or {}
    assert first["crm.vault.mount"] == vault_mount.name
    assert f"http://{first['server.address']!s}:{first['server.port']!s}" == openbao_server.addr
    assert spans[1].status.status_code is StatusCode.ERROR
