"""``crm.kv.key_prefix`` shows a key's first segment only when it reads as a namespace name
(``^[a-z][a-z_-]{0,31}$``): a user id, a number, an email or a capitalised name put first in
a key shows as the client's own ``key_prefix`` alone, on spans and on metric points alike,
which also keeps the metrics' attribute values few."""

from __future__ import annotations

import uuid

import pytest

from crm_infra.adapters.valkey.telemetry import key_prefix
from crm_infra.fakes import InMemoryKeyValueStore
from tests.fixtures.telemetry import Telemetry

USER_ID = "3f2a7c1e-9b4d-4e8a-a1f0-5c6d7e8f9a0b"

SHOWN = [
    ("crm:", "session:abc", "crm:session:"),
    ("crm:", "rate_limit:login:someone", "crm:rate_limit:"),
    ("crm:", "feature-flags:beta", "crm:feature-flags:"),
    ("", "cart:" + USER_ID, "cart:"),
    ("crm:", "a:1", "crm:a:"),
    ("crm:", "a" * 32 + ":x", "crm:" + "a" * 32 + ":"),  # the longest name shown
]
HIDDEN = [
    ("crm:", f"{USER_ID}:cart"),  # a uuid
    ("crm:", f"{uuid.UUID(USER_ID).hex}:cart"),  # the same, as hex
    ("crm:", "user42:cart"),  # a digit
    ("crm:", "2024:report"),
    ("crm:", "Session:abc"),  # uppercase
    ("crm:", "SESSION:abc"),
    ("crm:", "someone@example.com:cart"),  # an email
    ("crm:", "someone.example:cart"),
    ("crm:", "a" * 33 + ":x"),  # too long to be a name
    ("crm:", "_private:x"),  # a name starts with a letter
    ("crm:", "-x:y"),
    ("crm:", ":leading-colon"),  # an empty segment
    ("crm:", "session\n:x"),  # a final newline would pass a `$`
    ("crm:", "séance:x"),  # non-ASCII letters
    ("crm:", "two words:x"),
    ("crm:", "no-colon-token"),  # no segment at all
    ("", "session"),
]


@pytest.mark.parametrize(("prefix", "key", "shown"), SHOWN)
def test_a_namespace_name_before_the_first_colon_is_shown(
    prefix: str, key: str, shown: str
) -> None:
    assert key_prefix(prefix, key) == shown


@pytest.mark.parametrize(("prefix", "key"), HIDDEN)
def test_any_other_first_segment_shows_the_clients_prefix_alone(prefix: str, key: str) -> None:
    assert key_prefix(prefix, key) == prefix


def test_a_key_that_is_not_a_str_shows_the_clients_prefix() -> None:
    assert key_prefix("crm:", 123) == "crm:"
    assert key_prefix("crm:", None) == "crm:"


def test_a_user_id_first_in_a_key_reaches_no_span_and_no_metric_point(
    telemetry: Telemetry,
) -> None:
    kv = InMemoryKeyValueStore(key_prefix="crm:")
    email = "someone@example.com"
    kv.set(f"{USER_ID}:cart", "v")
    kv.get(f"{USER_ID}:cart")
    kv.hit(f"{USER_ID}:login", 60)
    kv.hit(f"{email}:login", 60)
    kv.hit("user42:login", 60)
    kv.hit("rate_limit:login", 60)
    spans = telemetry.ours()
    assert [(s.attributes or {})["crm.kv.key_prefix"] for s in spans] == [
        "crm:", "crm:", "crm:", "crm:", "crm:", "crm:rate_limit:"
    ]
    durations = {
        (p.attributes["crm.operation"], p.attributes["crm.kv.key_prefix"]): p.count
        for p in telemetry.points("crm.call.duration")
    }
    assert durations == {
        ("set", "crm:"): 1, ("get", "crm:"): 1, ("hit", "crm:"): 3, ("hit", "crm:rate_limit:"): 1
    }
    hits = {p.attributes["crm.kv.key_prefix"]: p.value for p in telemetry.points("crm.kv.hits")}
    assert hits == {"crm:": 3, "crm:rate_limit:": 1}
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    everything = "\n".join([*(s.to_json() for s in telemetry.spans()), data.to_json()])
    for secret in (USER_ID, email, "user42"):
        assert secret not in everything
