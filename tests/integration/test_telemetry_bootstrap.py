"""``create_database`` and ``drop_database`` on a real server with psycopg's own OpenTelemetry
instrumentation on: no span holds a password (``CREATE ROLE ... PASSWORD '...'`` runs with
every instrumentation suppressed); and without OpenTelemetry they import nothing of it."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from crm_infra.bootstrap import create_database, drop_database
from crm_infra.redaction import password_of
from crm_infra.telemetry.silence import silenced
from tests.fixtures.telemetry import WITHOUT_OPENTELEMETRY, Telemetry


def test_no_span_holds_a_password_of_the_bootstrap(
    driver_instrumentation: Telemetry, pg_superuser_url: str
) -> None:
    telemetry = driver_instrumentation
    # The instrumentation is on: a statement on a connection made now makes a span...
    with psycopg.connect(pg_superuser_url, autocommit=True) as conn:
        conn.execute("SELECT 'the instrumentation is on'")
        assert [s.name for s in telemetry.spans()] == ["SELECT"]
        # ... and none under silenced(), which restores the context after it.
        with silenced():
            conn.execute("SELECT 'silenced'")
        assert len(telemetry.spans()) == 1
        conn.execute("SELECT 'on again'")
        assert len(telemetry.spans()) == 2
    telemetry.clear()
    made = create_database(pg_superuser_url, prefix="crm_otel")
    try:
        passwords = [password_of(made.app_url), password_of(made.admin_url)]
        assert all(passwords)
        with psycopg.connect(made.app_url) as conn:  # the role works: the password was set
            conn.execute("SELECT 1")
    finally:
        drop_database(made)
    everything = "\n".join(span.to_json() for span in telemetry.spans())
    assert [p for p in passwords if p and p in everything] == []
    # Nothing of the bootstrap itself reached a span: only the check's own SELECT 1.
    statements = [(s.attributes or {}).get("db.statement") for s in telemetry.spans()]
    assert statements == ["SELECT 1"]


_BOOTSTRAP = WITHOUT_OPENTELEMETRY + """
import os
from crm_infra.bootstrap import create_database, drop_database
made = create_database(os.environ["URL"], prefix="crm_nootel")
drop_database(made)
print(" ".join(sorted(m for m in sys.modules if m.startswith("opentelemetry"))) or "-")
"""


def test_without_opentelemetry_the_bootstrap_runs_and_imports_none_of_it(
    pg_superuser_url: str,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _BOOTSTRAP],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "URL": pg_superuser_url},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["-"]
