"""A Valkey port call's span and ``crm.call.duration`` point cover the whole call, on a real
server: a reply that cannot be decoded and arguments refused before any I/O are failed calls
(status ERROR, ``error.type``, the class-only ``exception`` event), one span each, as
PostgreSQL and Vault record them; sync and asyncio alike."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from crm_infra.adapters import AsyncValkeyClient, ValkeyClient
from crm_infra.adapters.valkey import ValkeyDataError, ValkeyError, ValkeyInputError
from crm_infra.telemetry import error_type
from tests.fixtures.telemetry import Telemetry

DATA_ERROR = error_type(ValkeyDataError("x"))
INPUT_ERROR = error_type(ValkeyInputError("x"))

# Calls refused for their arguments, before anything is sent: (operation, call).
REFUSED: list[tuple[str, Callable[[Any], Any]]] = [
    ("get", lambda kv: kv.get(123)),
    ("delete", lambda kv: kv.delete(b"session:x")),
    ("set", lambda kv: kv.set("session:x", 1)),
    ("set", lambda kv: kv.set("session:x", "v", expire_seconds=0)),
    ("set", lambda kv: kv.set("session:x", "v", True)),
    ("expire", lambda kv: kv.expire("session:x", -5)),
    ("hit", lambda kv: kv.hit("rate:x", 0)),
    ("hit", lambda kv: kv.hit("rate:x", 2**40)),
    ("set_json", lambda kv: kv.set_json("profile:x", {1, 2})),
    ("set_json", lambda kv: kv.set_json("profile:x", math.nan)),
    ("set_json", lambda kv: kv.set_json("profile:x", {"a": 1}, expire_seconds=1.5)),
]
REFUSED_IDS = [f"{op}-{n}" for n, (op, _) in enumerate(REFUSED)]


@pytest.fixture
def kv(valkey_url: str) -> Iterator[ValkeyClient]:
    with ValkeyClient(valkey_url, key_prefix="crm:", check_connection=False) as client:
        yield client


def assert_failed(span: ReadableSpan, kind: str) -> None:
    """``span`` records a failure of class ``kind``, by its class alone."""
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == kind.rsplit(".", 1)[1]
    attributes = span.attributes or {}
    assert attributes["error.type"] == kind
    assert "crm.kv.found" not in attributes
    assert [dict(e.attributes or {}) for e in span.events] == [{"exception.type": kind}]


def failed_points(telemetry: Telemetry, operation: str) -> list[dict[str, Any]]:
    return [
        {**p.attributes, "count": p.count}
        for p in telemetry.points("crm.call.duration")
        if p.attributes["crm.operation"] == operation and "error.type" in p.attributes
    ]


def test_get_json_of_a_value_that_is_not_json_is_a_failed_call(
    telemetry: Telemetry, kv: ValkeyClient
) -> None:
    kv.set("profile:p1", "planted {not json")
    telemetry.clear()
    with pytest.raises(ValkeyDataError):
        kv.get_json("profile:p1")
    (span,) = telemetry.ours()
    assert span.name == "GET"
    assert_failed(span, DATA_ERROR)
    assert (span.attributes or {})["crm.kv.key_prefix"] == "crm:profile:"
    assert "planted" not in span.to_json()
    assert failed_points(telemetry, "get_json") == [
        {
            "crm.port": "KeyValueStore",
            "crm.operation": "get_json",
            "db.system.name": "redis",
            "crm.kv.key_prefix": "crm:profile:",
            "error.type": DATA_ERROR,
            "count": 1,
        }
    ]


def test_a_successful_get_json_still_says_found_and_is_timed_once(
    telemetry: Telemetry, kv: ValkeyClient
) -> None:
    kv.set_json("profile:p1", {"a": 1})
    assert kv.get_json("profile:p1") == {"a": 1}
    assert kv.get_json("profile:missing") is None
    found = [(s.attributes or {})["crm.kv.found"] for s in telemetry.named("get_json")]
    assert found == [True, False]
    (point,) = [p for p in telemetry.points("crm.call.duration")
                if p.attributes["crm.operation"] == "get_json"]
    assert (point.count, "error.type" in point.attributes) == (2, False)


@pytest.mark.parametrize(("operation", "call"), REFUSED, ids=REFUSED_IDS)
def test_a_call_refused_for_its_arguments_is_one_failed_span_and_point(
    telemetry: Telemetry, kv: ValkeyClient, operation: str, call: Callable[[Any], Any]
) -> None:
    telemetry.clear()
    with pytest.raises(ValkeyInputError):
        call(kv)
    (span,) = telemetry.ours()
    assert (span.attributes or {})["crm.operation"] == operation
    assert_failed(span, INPUT_ERROR)
    (point,) = failed_points(telemetry, operation)
    assert (point["error.type"], point["count"]) == (INPUT_ERROR, 1)


def test_a_key_that_is_not_a_str_shows_only_the_clients_prefix(
    telemetry: Telemetry, kv: ValkeyClient
) -> None:
    with pytest.raises(ValkeyInputError):
        kv.get(12345)  # type: ignore[arg-type]
    (span,) = telemetry.ours()
    assert (span.attributes or {})["crm.kv.key_prefix"] == "crm:"
    assert "12345" not in span.to_json()


def test_a_key_given_by_keyword_is_described_as_a_positional_one(
    telemetry: Telemetry, kv: ValkeyClient
) -> None:
    kv.set(key="session:s1", value="v", expire_seconds=60)
    assert kv.get(key="session:s1") == "v"
    assert [(s.attributes or {})["crm.kv.key_prefix"] for s in telemetry.ours()] == [
        "crm:session:", "crm:session:"
    ]


def test_a_closed_client_is_a_failed_call_too(telemetry: Telemetry, valkey_url: str) -> None:
    kv = ValkeyClient(valkey_url, check_connection=False)
    kv.close()
    with pytest.raises(ValkeyError, match="closed"):
        kv.get("session:s1")
    (span,) = telemetry.ours()
    assert_failed(span, error_type(ValkeyError("x")))


# --- the asyncio client ------------------------------------------------------------------------

AsyncCall = Callable[[AsyncValkeyClient], Awaitable[Any]]
ASYNC_REFUSED: list[tuple[str, AsyncCall]] = [
    ("get", lambda kv: kv.get(123)),  # type: ignore[arg-type]
    ("set", lambda kv: kv.set("session:x", 1)),  # type: ignore[arg-type]
    ("expire", lambda kv: kv.expire("session:x", 0)),
    ("hit", lambda kv: kv.hit("rate:x", -1)),
    ("set_json", lambda kv: kv.set_json("profile:x", {1, 2})),  # type: ignore[arg-type]
]


@pytest.mark.asyncio
async def test_the_asyncio_client_records_decoding_and_refusals_as_failures(
    telemetry: Telemetry, valkey_url: str
) -> None:
    async with AsyncValkeyClient(valkey_url, key_prefix="crm:", check_connection=False) as kv:
        await kv.set("profile:p1", "planted {not json")
        telemetry.clear()
        with pytest.raises(ValkeyDataError):
            await kv.get_json("profile:p1")
        (span,) = telemetry.ours()
        assert_failed(span, DATA_ERROR)
        assert [p["error.type"] for p in failed_points(telemetry, "get_json")] == [DATA_ERROR]
        for operation, call in ASYNC_REFUSED:
            telemetry.clear()
            with pytest.raises(ValkeyInputError):
                await call(kv)
            (span,) = telemetry.ours()
            assert (span.attributes or {})["crm.operation"] == operation
            assert_failed(span, INPUT_ERROR)
            assert [p["error.type"] for p in failed_points(telemetry, operation)] == [
                INPUT_ERROR
            ]
