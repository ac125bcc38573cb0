"""Without the ``otel`` extra, or with it and no SDK configured, crm-infra imports nothing of
OpenTelemetry (checked in fresh interpreters, whose sys.modules nothing else has filled).

With the extra installed, redis-py 8 loads parts of OpenTelemetry on its own (its
``redis.observability``); what crm-infra adds to that is what is checked: nothing."""

from __future__ import annotations

import subprocess
import sys

from tests.fixtures.telemetry import WITHOUT_OPENTELEMETRY

_CALLS = """
import sys
from uuid import uuid4
from crm_infra import Settings, build_infrastructure, telemetry, user_context
from crm_infra.adapters import PostgresClient, ValkeyClient, VaultClient
with build_infrastructure(Settings.from_env({})) as infra:
    report = infra.health()
    assert report.ok
    with user_context(uuid4()):
        infra.db.execute("SELECT name FROM contacts")
    infra.kv.set("session:1", "x")  # the Valkey adapter's own code, over fakeredis
    assert infra.kv.hit("rate:1", 60) == 1
    infra.secrets.get_secret("crm/valkey")
telemetry.count("crm.vault.renewals")
telemetry.record("crm.vault.renewal.duration", 0.5)
assert telemetry.active() is None
assert "crm_infra.telemetry.emitter" not in sys.modules
print(" ".join(sorted(m for m in sys.modules if m.startswith("opentelemetry"))) or "-")
"""

# What the drivers alone load, without crm-infra.
_DRIVERS_ALONE = """
import sys
import fakeredis, hvac, psycopg, psycopg_pool, redis, requests
print(" ".join(sorted(m for m in sys.modules if m.startswith("opentelemetry"))) or "-")
"""


def _loaded(script: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split()) - {"-"}


def test_without_the_extra_every_call_works_and_nothing_is_imported() -> None:
    assert _loaded(WITHOUT_OPENTELEMETRY + _CALLS) == set()


def test_with_the_extra_but_no_sdk_configured_nothing_more_is_imported() -> None:
    import opentelemetry.trace  # noqa: F401  # the extra is installed here: the case is real

    assert _loaded(_CALLS) == _loaded(_DRIVERS_ALONE)  # and the script: not our emitter


def test_the_check_itself_sees_an_import() -> None:
    assert "opentelemetry.trace" in _loaded("import opentelemetry.trace\n" + _CALLS)
