"""Traces and metrics of port calls, on the key-value store that runs the real Valkey adapter
over fakeredis: what a span holds, what it never holds, and when nothing is emitted."""

from __future__ import annotations

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import SpanKind, StatusCode

from crm_infra import telemetry as crm_telemetry
from crm_infra.adapters.valkey import ValkeyDataError
from crm_infra.adapters.valkey.telemetry import key_prefix
from crm_infra.fakes import InMemoryKeyValueStore
from tests.fixtures.telemetry import Telemetry, reset_globals


@pytest.fixture
def kv() -> InMemoryKeyValueStore:
    return InMemoryKeyValueStore(key_prefix="crm:")


def test_each_call_is_one_client_span_named_by_its_command(
    telemetry: Telemetry, kv: InMemoryKeyValueStore
) -> None:
    kv.set("session:abc123", "value")
    assert kv.get("session:abc123") == "value"
    (set_span, get_span) = telemetry.ours()
    assert (set_span.name, get_span.name) == ("SET", "GET")
    assert get_span.kind is SpanKind.CLIENT
    assert get_span.attributes == {
        "crm.port": "KeyValueStore",
        "crm.operation": "get",
        "db.system.name": "redis",
        "db.operation.name": "GET",
        "crm.kv.key_prefix": "crm:session:",
        "crm.kv.found": True,
    }


def test_hit_records_its_count_on_the_span_and_in_the_hits_counter(
    telemetry: Telemetry, kv: InMemoryKeyValueStore
) -> None:
    for _ in range(3):
        kv.hit("login:someone@example.com", 60)
    counts = [s.attributes["crm.kv.hit.count"] for s in telemetry.named("hit") if s.attributes]
    assert counts == [1, 2, 3]
    (point,) = telemetry.points("crm.kv.hits")
    assert point.value == 3
    assert point.attributes["crm.kv.key_prefix"] == "crm:login:"


def test_every_call_is_timed_by_port_and_operation(
    telemetry: Telemetry, kv: InMemoryKeyValueStore
) -> None:
    kv.set("a:1", "x")
    kv.get("a:1")
    kv.get("a:2")
    by_operation = {
        p.attributes["crm.operation"]: p.count for p in telemetry.points("crm.call.duration")
    }
    assert by_operation == {"set": 1, "get": 2}


def test_a_failure_is_recorded_by_its_class_alone(
    telemetry: Telemetry, kv: InMemoryKeyValueStore
) -> None:
    kv.set("counter:planted-suffix", "not a number")
    with pytest.raises(ValkeyDataError):
        kv.incr("counter:planted-suffix")
    (span,) = telemetry.named("incr")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValkeyDataError"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "crm_infra.adapters.valkey.errors.ValkeyDataError"
    assert [dict(e.attributes or {}) for e in span.events] == [
        {"exception.type": "crm_infra.adapters.valkey.errors.ValkeyDataError"}
    ]
    assert "planted-suffix" not in repr(span.to_json())
    (failed,) = [p for p in telemetry.points("crm.call.duration") if "error.type" in p.attributes]
    assert failed.attributes["crm.operation"] == "incr"


def test_the_span_is_current_for_what_runs_inside_and_instrumentation_is_suppressed(
    telemetry: Telemetry, kv: InMemoryKeyValueStore
) -> None:
    seen: list[tuple[trace.Span, object]] = []
    original = kv._client.get

    def spy(name: str) -> object:
        suppressed = otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY)
        seen.append((trace.get_current_span(), suppressed))
        return original(name)

    kv._client.get = spy
    kv.get("k:1")
    ((current, suppressed),) = seen
    (span,) = telemetry.ours()
    assert span.context is not None
    assert current.get_span_context().span_id == span.context.span_id
    assert suppressed is True
    assert otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY) is None  # undone after


def test_a_call_the_application_suppressed_emits_nothing(
    telemetry: Telemetry, kv: InMemoryKeyValueStore
) -> None:
    token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        kv.set("a:1", "x")
    finally:
        otel_context.detach(token)
    assert telemetry.spans() == []
    assert telemetry.points("crm.call.duration") == []


def test_without_a_configured_sdk_nothing_is_active(kv: InMemoryKeyValueStore) -> None:
    reset_globals()
    assert crm_telemetry.active() is None
    kv.set("a:1", "x")  # and the call works
    crm_telemetry.count("crm.vault.renewals")
    crm_telemetry.record("crm.vault.renewal.duration", 0.1)


def test_count_and_record_add_to_instruments_created_on_first_use(telemetry: Telemetry) -> None:
    crm_telemetry.count("crm.vault.renewals", attributes={"crm.vault.auth": "approle"})
    crm_telemetry.count("crm.vault.renewals", 2, attributes={"crm.vault.auth": "approle"})
    crm_telemetry.record("crm.vault.renewal.duration", 0.25)
    (renewals,) = telemetry.points("crm.vault.renewals")
    assert (renewals.value, dict(renewals.attributes)) == (3, {"crm.vault.auth": "approle"})
    (duration,) = telemetry.points("crm.vault.renewal.duration")
    assert (duration.count, duration.sum) == (1, 0.25)


def test_a_newly_configured_provider_is_used_from_the_next_call(
    kv: InMemoryKeyValueStore,
) -> None:
    reset_globals()
    kv.get("a:1")  # nothing configured: nothing to record
    recorded = Telemetry()
    trace.set_tracer_provider(recorded.tracer_provider)
    try:
        kv.get("a:1")
        assert [s.name for s in recorded.ours()] == ["GET"]
    finally:
        reset_globals()
        recorded.tracer_provider.shutdown()


@pytest.mark.parametrize(
    ("prefix", "key", "shown"),
    [
        ("crm:", "session:abc", "crm:session:"),
        ("", "rate:login:user", "rate:"),
        ("crm:", "no-colon-token", "crm:"),
        ("", "", ""),
    ],
)
def test_the_key_prefix_stops_at_the_first_colon(prefix: str, key: str, shown: str) -> None:
    assert key_prefix(prefix, key) == shown
