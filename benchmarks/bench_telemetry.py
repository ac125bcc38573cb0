"""What telemetry costs ``PostgresClient.execute``, in one run, against the same call with
OpenTelemetry absent:

- absent: OpenTelemetry not loaded, as without the ``otel`` extra (crm-infra only looks for
  OpenTelemetry's trace and metrics modules in ``sys.modules``; here they are
  hidden from it for the rounds that stand for this case, since redis-py loads them whenever
  they are installed);
- no SDK: the extra installed and loaded, no provider configured (target <= 1.02x absent);
- metrics only: an SDK's meter provider and no tracer provider, as an application that wants
  metrics alone configures (for scale);
- SDK: an SDK configured, spans through a batch processor to an exporter that drops them,
  metrics to an in-memory reader (target <= 1.10x absent).

The raw pooled psycopg query (benchmarks/bench_postgres.py's floor) is shown for scale, and
the absent case against itself for the noise of the machine: a ratio is meaningful only well
outside it. So is the SDK's own cost: the absent call followed by one span with the same
attributes as an ``execute`` span and one histogram point, made by hand with the SDK alone,
against the absent call, in alternating rounds: no instrumentation can come in under that
ratio with this SDK. It is measured beside real calls, not in a loop of its own, where the
SDK's code and data stay in the CPU's caches and it looks about half as costly. What
crm-infra adds beyond it is the SDK row divided by this one. Last, the same SDK sampling one
trace in 100 (``ParentBased(TraceIdRatioBased(0.01))``), for scale: every call still records
its metric points. The SDK can be set only once per process, so the no-SDK rounds come first
and the sampler is switched in place.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)

from benchmarks.bench_postgres import POOL, _calls, _counter, _database, _floor_pool, _seed
from benchmarks.harness import time_per_call
from crm_infra.adapters import PostgresClient
from crm_infra.migrations import apply_migrations

CALLS = 200
ROUNDS = 41
SAMPLED = 0.01  # a common production ratio: every call still records its metric points
_OTEL_MODULES = ("opentelemetry.trace", "opentelemetry.metrics", "opentelemetry.metrics._internal")


class _Dropped(SpanExporter):
    """Takes spans and does nothing, so that the export's network cost is not measured."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Switchable(Sampler):
    """Samples every trace, or as ``sampling`` says once it is set: one provider for both
    cases, since the SDK can be set only once per process."""

    def __init__(self) -> None:
        self.inner: Sampler = ALWAYS_ON

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return self.inner.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"Switchable({self.inner.get_description()})"


@contextmanager
def _absent() -> Iterator[None]:
    """What crm-infra sees without the extra: no OpenTelemetry in sys.modules."""
    saved = {name: sys.modules.pop(name) for name in _OTEL_MODULES if name in sys.modules}
    try:
        yield
    finally:
        sys.modules.update(saved)


class Measured:
    """One case against the absent call: per-round pairs, timed back to back."""

    def __init__(self, measured: list[float], absent: list[float]) -> None:
        pairs = list(zip(measured, absent, strict=True))
        self.ratio = statistics.median(m / a for m, a in pairs)
        self.absent_us = statistics.median(absent) * 1e6
        self.added_us = statistics.median(m - a for m, a in pairs) * 1e6


def _measure(call: Callable[[], object], baseline: Callable[[], object]) -> Measured:
    """Time ``call`` (as it is) against ``baseline`` with OpenTelemetry absent, in rounds of
    one batch each, the order alternating; each round's two batches make one ratio, so drift
    slower than a round cancels, and the median of the rounds' ratios is the result."""
    for _ in range(50):
        call()
    measured: list[float] = []
    absent: list[float] = []
    for i in range(ROUNDS):
        first_present = i % 2 == 0
        for present in (first_present, not first_present):
            if present:
                measured.append(time_per_call(call, CALLS))
            else:
                with _absent():
                    absent.append(time_per_call(baseline, CALLS))
    return Measured(measured, absent)


def _sdk_alone(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> Callable[[], None]:
    """One span and one histogram point, made by the SDK alone, as crm-infra makes them."""
    tracer = tracer_provider.get_tracer("bench")
    histogram = meter_provider.get_meter("bench").create_histogram("bench.duration", unit="s")
    attributes: dict[str, str | int] = {
        "crm.port": "UserScopedDB", "crm.operation": "execute", "db.system.name": "postgresql",
        "db.operation.name": "SELECT", "db.query.text": "SELECT id FROM contacts WHERE id = $1",
        "server.address": "127.0.0.1", "server.port": 5432, "db.namespace": "crm",
    }
    point = {"crm.port": "UserScopedDB", "crm.operation": "execute"}

    def one() -> None:
        span = tracer.start_span("execute", attributes=attributes)
        span.set_attributes({"db.response.returned_rows": 1})
        span.end()
        histogram.record(0.0001, point)

    return one


def _row(name: str, case: Measured, target: float | None = None) -> bool:
    """Print one case: its ratio, the microseconds it adds, and the target when it has one."""
    line = f"{name:44} {case.ratio:7.3f}x {case.added_us:+7.1f} us"
    met = target is None or case.ratio <= target
    if target is not None:
        line += f"  <= {target:g}  {'met' if met else 'MISSED'}"
    print(line)
    return met


def main() -> bool:
    """Run the cases; print the ratios; return True when the targets are met."""
    with _database() as db:
        with PostgresClient(db.app_url, POOL, admin_connection_url=db.admin_url) as setup:
            apply_migrations(setup)
            pairs = _seed(setup)
        floor_user = pairs[0][0]
        with (
            PostgresClient(db.app_url, POOL, min_pool_size=POOL) as client,
            _floor_pool(db.app_url, floor_user, POOL) as floor,
        ):
            fns = _calls(client, floor, floor, pairs, floor_user)
            adapter, raw = _counter(fns["adapter"]), _counter(fns["floor"])
            with _absent():
                floor_ratio = statistics.median(
                    time_per_call(adapter, CALLS) / time_per_call(raw, CALLS) for _ in range(5)
                )
            print("\n== telemetry: PostgresClient.execute against itself with OpenTelemetry absent")
            print(f"{'case':44} {'ratio':>8} {'added':>10}")
            print(f"{'(for scale) absent, vs raw pooled psycopg':44} {floor_ratio:7.3f}x")
            with _absent():
                noise = _measure(adapter, adapter)
            _row("(noise) absent, vs absent", noise)
            no_sdk = _row("extra installed, no SDK configured", _measure(adapter, adapter), 1.02)
            meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
            metrics.set_meter_provider(meter_provider)
            _row("(for scale) metrics only, no tracer provider", _measure(adapter, adapter))
            exporter = BatchSpanProcessor(_Dropped())
            sampler = _Switchable()
            tracer_provider = TracerProvider(sampler=sampler)
            tracer_provider.add_span_processor(exporter)
            trace.set_tracer_provider(tracer_provider)
            sdk = _measure(adapter, adapter)
            with_sdk = _row("SDK configured (spans and metrics)", sdk, 1.10)
            one = _sdk_alone(tracer_provider, meter_provider)

            def by_hand() -> None:
                adapter()
                one()

            with _absent():
                alone = _measure(by_hand, adapter)
            _row("(for scale) the SDK alone, made by hand", alone)
            print(f"{'(for scale) crm-infra beyond the SDK alone':44} "
                  f"{sdk.ratio / alone.ratio:7.3f}x {sdk.added_us - alone.added_us:+7.1f} us")
            sampler.inner = ParentBased(TraceIdRatioBased(SAMPLED))
            _row("(for scale) SDK, 1 trace in 100 sampled", _measure(adapter, adapter))
            tracer_provider.shutdown()
            print(f"\nOne call with OpenTelemetry absent: {sdk.absent_us:.1f} us. The SDK alone "
                  f"adds {alone.added_us:.1f} us to it: within 1.10x only for calls of "
                  f"{alone.added_us / 0.10:.0f} us or more.")
    return no_sdk and with_sdk


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
