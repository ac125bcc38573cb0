"""Vault's spans and duration points on a real OpenBao server, sync and asyncio: a refused
login is a failed span; a check is one span, also with ``requests``' own instrumentation on;
each call is timed by port and operation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.trace import StatusCode

from crm_infra.adapters import AsyncVaultClient, VaultClient
from crm_infra.adapters.vault import VaultAuthError
from crm_infra.devservers.openbao import OpenBaoServer
from tests.fixtures.openbao import VaultMount, create_token, read_policy
from tests.fixtures.telemetry import Telemetry

PLANTED_TOKEN = "s.planted-refused-token-3c1f"


@pytest.fixture
def requests_instrumentation(telemetry: Telemetry) -> Iterator[Telemetry]:
    """The SDK, and ``requests``' own OpenTelemetry instrumentation switched on."""
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    try:
        yield telemetry
    finally:
        instrumentor.uninstrument()


def _token(openbao_root: Any, vault_mount: VaultMount) -> str:
    return create_token(openbao_root, read_policy(vault_mount.name, "crm/*"))


@pytest.mark.asyncio
async def test_an_asyncio_check_whose_login_is_refused_is_a_failed_span(
    telemetry: Telemetry, openbao_server: OpenBaoServer, vault_mount: VaultMount
) -> None:
    vault = AsyncVaultClient(openbao_server.addr, PLANTED_TOKEN, mount_point=vault_mount.name)
    try:
        with pytest.raises(VaultAuthError):
            await vault.health_check()
    finally:
        await vault.close()
    (span,) = telemetry.ours()
    assert span.name == "health_check"
    assert span.status.status_code is StatusCode.ERROR
    assert str((span.attributes or {})["error.type"]).endswith(".VaultAuthError")
    assert PLANTED_TOKEN not in span.to_json()
    (point,) = telemetry.points("crm.call.duration")
    assert point.attributes["crm.operation"] == "health_check"
    assert point.attributes["error.type"] == (span.attributes or {})["error.type"]


@pytest.mark.asyncio
async def test_an_asyncio_check_is_one_span_with_requests_instrumentation_on(
    requests_instrumentation: Telemetry,
    openbao_server: OpenBaoServer,
    openbao_root: Any,
    vault_mount: VaultMount,
) -> None:
    token = _token(openbao_root, vault_mount)
    async with AsyncVaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as vault:
        requests_instrumentation.clear()
        assert await vault.health_check() is True
        await vault.get_database_url()
    spans = requests_instrumentation.spans()
    assert [s.name for s in spans] == ["health_check", "get_secret"]
    assert spans == requests_instrumentation.ours()
    assert token not in "".join(s.to_json() for s in spans)


def test_a_sync_call_is_one_span_with_requests_instrumentation_on(
    requests_instrumentation: Telemetry,
    openbao_server: OpenBaoServer,
    openbao_root: Any,
    vault_mount: VaultMount,
) -> None:
    token = _token(openbao_root, vault_mount)
    with VaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as vault:
        requests_instrumentation.clear()
        vault.health_check()
        vault.get_database_url()
        assert requests_instrumentation.spans() == requests_instrumentation.ours()
        assert len(requests_instrumentation.ours()) == 2
        # Outside crm-infra, requests' instrumentation is on: the test could see a second span.
        requests.get(f"{openbao_server.addr}/v1/sys/health", timeout=10)
    assert len(requests_instrumentation.theirs()) == 1


@pytest.mark.asyncio
async def test_vault_calls_are_timed_by_port_and_operation_sync_and_asyncio(
    telemetry: Telemetry, openbao_server: OpenBaoServer, openbao_root: Any, vault_mount: VaultMount
) -> None:
    token = _token(openbao_root, vault_mount)
    with VaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as vault:
        vault.get_database_url()
        vault.health_check()
    async with AsyncVaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as avault:
        await avault.get_database_url()
        await avault.health_check()
        await avault.health_check()
    counts = {
        (p.attributes["crm.port"], p.attributes["crm.operation"]): p.count
        for p in telemetry.points("crm.call.duration")
    }
    assert counts == {("SecretStore", "get_secret"): 2, ("SecretStore", "health_check"): 3}
    assert all(p.sum > 0 for p in telemetry.points("crm.call.duration"))


@pytest.mark.asyncio
async def test_a_read_served_from_the_cache_says_so_on_its_span_and_its_point(
    telemetry: Telemetry, openbao_server: OpenBaoServer, openbao_root: Any, vault_mount: VaultMount
) -> None:
    token = _token(openbao_root, vault_mount)
    with VaultClient(
        openbao_server.addr, token, mount_point=vault_mount.name, cache_ttl=300
    ) as vault:
        vault.get_database_url()  # a request
        vault.get_database_url()  # the cache
        vault.health_check()  # never cached, and says nothing of it
        vault.get_database_url()  # the cache again, after a call that is not a read
    async with AsyncVaultClient(
        openbao_server.addr, token, mount_point=vault_mount.name, cache_ttl=300
    ) as avault:
        await avault.get_database_url()
        await avault.get_database_url()
    cached = [(s.attributes or {}).get("crm.secret.cached") for s in telemetry.ours()]
    assert cached == [False, True, None, True, False, True]
    points = {
        (p.attributes["crm.operation"], p.attributes.get("crm.secret.cached")): p.count
        for p in telemetry.points("crm.call.duration")
    }
    assert points == {
        ("get_secret", False): 2, ("get_secret", True): 3, ("health_check", None): 1
    }


@pytest.mark.asyncio
async def test_with_metrics_alone_an_asyncio_check_is_still_one_duration_point(
    metrics_only: Telemetry,
    openbao_server: OpenBaoServer,
    openbao_root: Any,
    vault_mount: VaultMount,
) -> None:
    token = _token(openbao_root, vault_mount)
    async with AsyncVaultClient(openbao_server.addr, token, mount_point=vault_mount.name) as vault:
        assert await vault.health_check() is True  # runs the sync client's check in a thread
    (point,) = metrics_only.points("crm.call.duration")
    assert (point.attributes["crm.operation"], point.count) == ("health_check", 1)
