"""Instructions per call, counted by valgrind's callgrind: a measure that the machine's load
does not move (the same code counts the same to about 0.1%), for the differences too small
for the timing benchmarks to see through their noise.

Each case runs in a child process under ``valgrind --tool=callgrind --instr-atstart=no``:
it warms up, then the parent turns instrumentation on (``callgrind_control -i on``) for
``CALLS`` calls and off again, so start-up and warm-up are not counted. Counted: the client
process only (every thread of it), not the server, which does the same work in every case
but the floor's.

- floor: the raw pooled psycopg query of ``bench_postgres`` (the user set once per
  connection);
- execute: ``PostgresClient.execute``, OpenTelemetry absent;
- execute, extra loaded, no SDK: the same with OpenTelemetry's API imported and no SDK
  configured (target <= 1.02x execute: what the hooks cost when nothing is recorded);
- execute, SDK configured: spans through a batch processor to an exporter that drops them,
  metrics to an in-memory reader (for scale);
- execute, no SDK, then the SDK by hand: the no-SDK case followed by one span and one
  histogram point made with the same SDK alone, as ``bench_telemetry`` makes them: the floor
  of any instrumentation with this SDK; the SDK case over this one is what crm-infra adds
  beyond the SDK;
- execute, SDK sampling 1 in 100: the SDK case with ``ParentBased(TraceIdRatioBased(0.01))``.
- execute, metrics only: a meter provider and no tracer provider.

Needs ``valgrind`` (Debian: ``apt-get install valgrind``); without it the benchmark says so
and counts as missed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

from benchmarks.bench_postgres import _calls, _database, _floor_pool, _seed
from crm_infra.adapters import PostgresClient
from crm_infra.migrations import apply_migrations

CALLS = 1000
WARMUP = 300
NO_SDK = "execute, extra loaded, no SDK"
SDK = "execute, SDK configured"
BY_HAND = "execute, no SDK, then the SDK by hand"
SAMPLED = "execute, SDK sampling 1 in 100"
METRICS = "execute, metrics only"
CASES = ("floor", "execute", NO_SDK, SDK, BY_HAND, SAMPLED, METRICS)
_OTEL_MODULES = ("opentelemetry.trace", "opentelemetry.metrics", "opentelemetry.metrics._internal")


def _configure(case: str) -> Callable[[], None] | None:
    """Set up OpenTelemetry as ``case`` says, before anything of crm-infra runs; return what
    to do after each call besides it (the SDK's span and point made by hand), if anything."""
    if case == METRICS:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    elif case in (SDK, BY_HAND, SAMPLED):
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        from benchmarks.bench_telemetry import _Dropped, _sdk_alone

        sampler = ParentBased(TraceIdRatioBased(0.01)) if case == SAMPLED else None
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(_Dropped()))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        if case == BY_HAND:  # not set globally: crm-infra sees the API alone, as for NO_SDK
            return _sdk_alone(provider, meter_provider)
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(meter_provider)
    elif case == NO_SDK:
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401 - loaded, as an application would
    else:
        for name in _OTEL_MODULES:  # as without the extra (something may have loaded them)
            sys.modules.pop(name, None)
    return None


def _child(case: str, app_url: str, pairs_text: str) -> None:
    """Run ``case``: say READY, wait for GO, make the calls, say DONE, wait for the end."""
    after = _configure(case)
    pairs = [(UUID(u), UUID(c)) for u, c in (p.split(":") for p in pairs_text.split(","))]
    floor_user = pairs[0][0]
    with (
        PostgresClient(app_url, 1, min_pool_size=1) as client,
        _floor_pool(app_url, floor_user, 1) as floor,
    ):
        fns = _calls(client, floor, floor, pairs, floor_user)
        call: Callable[[int], object] = fns["floor" if case == "floor" else "adapter"]
        fn = call
        if after is not None:

            def fn(i: int) -> object:
                result = call(i)
                after()
                return result

        for i in range(WARMUP):
            fn(i)
        _say_and_wait("READY")
        for i in range(CALLS):
            fn(i)
        _say_and_wait("DONE")


def _say_and_wait(word: str) -> None:
    print(word, flush=True)
    sys.stdin.readline()


def _count(case: str, app_url: str, pairs_text: str, valgrind: str) -> int:
    """Instructions counted for ``CALLS`` calls of ``case``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        child = subprocess.Popen(
            [
                valgrind, "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={out}",
                sys.executable, "-m", "benchmarks.bench_instructions",
                "--child", case, app_url, pairs_text,
            ],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            for word, switch in (("READY", "on"), ("DONE", "off")):
                line = child.stdout.readline().strip()
                if line != word:
                    raise RuntimeError(f"{case}: the child said {line!r}, not {word}")
                _instrument(child.pid, switch)
                child.stdin.write("\n")
                child.stdin.flush()
            child.stdin.close()
            if child.wait(timeout=600) != 0:
                raise RuntimeError(f"{case}: the child failed")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        return _total(out.read_text())


def _instrument(pid: int, switch: str) -> None:
    subprocess.run(
        ["callgrind_control", "-i", switch, str(pid)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _total(profile: str) -> int:
    """The instruction total of a callgrind output file."""
    # The header's summary counts from the start, when instrumentation was off: 0.
    found = re.search(r"^totals:\s*(\d+)", profile, re.MULTILINE)
    if found is None:
        raise RuntimeError("callgrind wrote no total")
    return int(found.group(1))


def main() -> bool:
    """Count each case; print instructions per call and the ratios; True when met."""
    valgrind = shutil.which("valgrind")
    if valgrind is None or shutil.which("callgrind_control") is None:
        print("\n== instructions: valgrind is not installed (apt-get install valgrind); MISSED")
        return False
    with _database() as db:
        with PostgresClient(db.app_url, 1, admin_connection_url=db.admin_url) as setup:
            apply_migrations(setup)
            pairs = _seed(setup)
        pairs_text = ",".join(f"{u}:{c}" for u, c in pairs)
        per_call: dict[str, float] = {
            case: _count(case, db.app_url, pairs_text, valgrind) / CALLS for case in CASES
        }
    execute = per_call["execute"]
    print(f"\n== instructions per call in the client process (callgrind, {CALLS} calls)")
    print(f"{'case':40} {'instructions':>12} {'vs execute':>11}")
    for case, count in per_call.items():
        print(f"{case:40} {count:12,.0f} {count / execute:10.3f}x")
    no_sdk = per_call[NO_SDK] / execute
    met = no_sdk <= 1.02
    print(f"extra loaded, no SDK: {no_sdk:.3f}x execute (<= 1.02 {'met' if met else 'MISSED'})")
    beyond = per_call[SDK] - per_call[BY_HAND]
    print(f"SDK configured, beyond the SDK by hand: {per_call[SDK] / per_call[BY_HAND]:.3f}x "
          f"({beyond:+,.0f} instructions per call)")
    return met


def _run_child(argv: list[str]) -> None:
    case, app_url, pairs_text = argv
    _child(case, app_url, pairs_text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _run_child(sys.argv[2:])
    else:
        raise SystemExit(0 if main() else 1)
