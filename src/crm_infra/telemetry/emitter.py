"""The one module that imports OpenTelemetry (the API only), loaded once the application has.

An :class:`Emitter` holds a tracer from the global tracer provider and the instruments of a
meter from the global meter provider (either may be absent: an application may configure
traces without metrics or the other way round). While one of crm-infra's spans is current, the
drivers' own instrumentation (``opentelemetry-instrumentation-psycopg``, ``-redis``,
``-requests``...) is suppressed through the context key OpenTelemetry defines for this, so a
port call makes one span, not two. A failure is recorded by its class alone: status
description, ``error.type`` and the ``exception`` event never carry a message, because
messages name keys and quote the server, which may quote a value.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from crm_infra.pool_stats import PoolStats
from crm_infra.telemetry.calls import Attributes, Call, CallSpec, error_type
from crm_infra.telemetry.pools import watched_pools
from crm_infra.telemetry.switch import AttributeValue

__all__ = ["SCOPE", "Block", "Emitter", "mark_failed", "quiet"]

SCOPE = "crm_infra"
"""The instrumentation scope of every tracer and meter crm-infra asks for."""

# opentelemetry-instrumentation's is_instrumentation_enabled() also reads this plain key, for
# instrumentations older than the API's own key.
_SUPPRESS_PLAIN = "suppress_instrumentation"
_DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_POOL_NAME = "db.client.connection.pool.name"
_perf_counter = time.perf_counter


class Emitter:
    """Spans and metric points for port calls, to one tracer and one meter."""

    def __init__(self, tracer: trace.Tracer | None, meter: metrics.Meter | None) -> None:
        self._tracer = tracer
        self._meter = meter
        self._lock = threading.Lock()
        self._counters: dict[str, metrics.Counter] = {}
        self._histograms: dict[str, metrics.Histogram] = {}
        self._duration: metrics.Histogram | None = None
        if meter is not None:
            self._duration = meter.create_histogram(
                "crm.call.duration",
                unit="s",
                description="How long one port call took, by port and operation.",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            )
            _observe_pools(meter)

    @classmethod
    def for_providers(cls, tracer_provider: object, meter_provider: object) -> Emitter:
        """An emitter for these providers (None: that signal is not recorded)."""
        tracer = None
        if isinstance(tracer_provider, trace.TracerProvider):
            tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        meter = None
        if isinstance(meter_provider, metrics.MeterProvider):
            meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        return cls(tracer, meter)

    # --- calls -----------------------------------------------------------------------------

    def run(
        self,
        spec: CallSpec,
        method: Callable[..., Any],
        owner: Any,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """Call ``method(owner, *args, **kwargs)`` in a span of its own, timed."""
        parent = otel_context.get_current()
        if parent.get(_SUPPRESS_INSTRUMENTATION_KEY):
            return method(owner, *args, **kwargs)  # the application asked for silence
        call = spec.describe(owner, args, kwargs)
        span, token = self._enter(call, parent)
        started = _perf_counter()
        try:
            result = method(owner, *args, **kwargs)
        except BaseException as exc:
            self._detach(token)
            self._failed(spec, call, span, exc, started)
            raise
        self._detach(token)
        self._succeeded(spec, call, span, result, started)
        return result

    async def run_async(
        self,
        spec: CallSpec,
        method: Callable[..., Any],
        owner: Any,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """Await ``method(owner, *args, **kwargs)`` in a span of its own, timed."""
        parent = otel_context.get_current()
        if parent.get(_SUPPRESS_INSTRUMENTATION_KEY):
            return await method(owner, *args, **kwargs)
        call = spec.describe(owner, args, kwargs)
        span, token = self._enter(call, parent)
        started = _perf_counter()
        try:
            result = await method(owner, *args, **kwargs)
        except BaseException as exc:
            self._detach(token)
            self._failed(spec, call, span, exc, started)
            raise
        self._detach(token)
        self._succeeded(spec, call, span, result, started)
        return result

    def block(
        self,
        spec: CallSpec,
        manager: Any,
        owner: Any,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """Wrap the context manager ``manager`` so that its block is one span."""
        if otel_context.get_current().get(_SUPPRESS_INSTRUMENTATION_KEY):
            return manager  # the application asked for silence
        return Block(self, spec, manager, spec.describe(owner, args, kwargs))

    # --- the pieces ------------------------------------------------------------------------

    def _enter(self, call: Call, parent: otel_context.Context) -> tuple[Span | None, object]:
        """Start the span of ``call`` and make it current with the drivers' instrumentation
        suppressed; return it and the token to detach. Without a tracer there is no span,
        but the suppression still holds: a port call that runs another (the asyncio Vault
        client's check runs the sync one) must still record one duration point."""
        if self._tracer is None:
            return None, otel_context.attach(quiet(parent, None))
        span = self._tracer.start_span(
            call.name,
            parent,
            kind=SpanKind.CLIENT if call.client else SpanKind.INTERNAL,
            attributes=call.attributes,
        )
        return span, otel_context.attach(quiet(parent, span))

    @staticmethod
    def _detach(token: object) -> None:
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]  # a Token from attach()

    def _succeeded(
        self, spec: CallSpec, call: Call, span: Span | None, result: Any, started: float
    ) -> None:
        elapsed = _perf_counter() - started
        if span is not None:
            extra = spec.outcome(call, result)
            if extra:
                span.set_attributes(extra)
            span.end()
        if self._duration is not None:
            measured = spec.measured(call, result)
            self._duration.record(
                elapsed,
                {**call.metric_attributes, **measured} if measured else call.metric_attributes,
            )
            if call.counter is not None:
                self.count(call.counter, 1, call.metric_attributes)

    def _failed(
        self,
        spec: CallSpec,
        call: Call,
        span: Span | None,
        exc: BaseException,
        started: float,
    ) -> None:
        elapsed = _perf_counter() - started
        kind = error_type(exc)
        if span is not None:
            mark_failed(span, exc, spec.failure(call, exc))
            span.end()
        if self._duration is not None:
            self._duration.record(elapsed, {**call.metric_attributes, "error.type": kind})

    # --- the internal API ------------------------------------------------------------------

    def count(
        self, name: str, amount: int, attributes: Mapping[str, AttributeValue] | None
    ) -> None:
        """Add ``amount`` to the counter ``name``."""
        if self._meter is None:
            return
        counter = self._counters.get(name)
        if counter is None:
            with self._lock:
                counter = self._counters.get(name)
                if counter is None:
                    counter = self._meter.create_counter(name, unit="1")
                    self._counters[name] = counter
        counter.add(amount, attributes)

    def record(
        self,
        name: str,
        value: float,
        attributes: Mapping[str, AttributeValue] | None,
        *,
        unit: str,
    ) -> None:
        """Record ``value`` in the histogram ``name``."""
        if self._meter is None:
            return
        histogram = self._histograms.get(name)
        if histogram is None:
            with self._lock:
                histogram = self._histograms.get(name)
                if histogram is None:
                    histogram = self._meter.create_histogram(name, unit=unit)
                    self._histograms[name] = histogram
        histogram.record(value, attributes)


def quiet(parent: otel_context.Context, span: Span | None) -> otel_context.Context:
    """``parent`` with ``span`` (if any) current and the drivers' instrumentation
    suppressed."""
    ctx = parent if span is None else trace.set_span_in_context(span, parent)
    ctx = otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, ctx)
    return otel_context.set_value(_SUPPRESS_PLAIN, True, ctx)


def mark_failed(span: Span, exc: BaseException, extra: Attributes) -> None:
    """Record a failure on ``span`` by its class only (see the module docstring)."""
    kind = error_type(exc)
    span.set_attributes({**extra, "error.type": kind})
    span.add_event("exception", {"exception.type": kind})
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


class Block:
    """A context manager's block as one span (``with`` and ``async with`` alike).

    Entering and leaving the wrapped manager (a pooled connection taken, ``BEGIN``, the
    commit or rollback, the connection given back) runs with the drivers' instrumentation
    suppressed; the body runs with the span current and nothing suppressed, so calls made in
    it are its children.
    """

    def __init__(self, emitter: Emitter, spec: CallSpec, manager: Any, call: Call) -> None:
        self._emitter = emitter
        self._spec = spec
        self._manager = manager
        self._call = call
        self._span: Span | None = None
        self._body: object = None  # the token of the body's context
        self._started = 0.0

    def _open(self) -> object:
        parent = otel_context.get_current()
        self._span, token = self._emitter._enter(self._call, parent)
        self._started = _perf_counter()
        if self._span is not None:
            self._body = trace.set_span_in_context(self._span, parent)
        return token

    def _opened(self, token: object) -> None:
        Emitter._detach(token)
        if self._body is not None:
            self._body = otel_context.attach(self._body)  # type: ignore[arg-type]

    def _closing(self) -> object:
        Emitter._detach(self._body)
        return otel_context.attach(quiet(otel_context.get_current(), self._span))

    def _ended(self, token: object, exc: BaseException | None) -> None:
        Emitter._detach(token)
        if exc is None:
            self._emitter._succeeded(self._spec, self._call, self._span, None, self._started)
        else:
            self._emitter._failed(self._spec, self._call, self._span, exc, self._started)

    def __enter__(self) -> Any:
        token = self._open()
        try:
            value = self._manager.__enter__()
        except BaseException as exc:
            self._ended(token, exc)
            raise
        self._opened(token)
        return value

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        token = self._closing()
        try:
            handled = bool(self._manager.__exit__(exc_type, exc, tb))
        except BaseException as raised:
            self._ended(token, raised)
            raise
        self._ended(token, None if handled else exc)
        return handled

    async def __aenter__(self) -> Any:
        token = self._open()
        try:
            value = await self._manager.__aenter__()
        except BaseException as exc:
            self._ended(token, exc)
            raise
        self._opened(token)
        return value

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        token = self._closing()
        try:
            handled = bool(await self._manager.__aexit__(exc_type, exc, tb))
        except BaseException as raised:
            self._ended(token, raised)
            raise
        self._ended(token, None if handled else exc)
        return handled


# --- pools -------------------------------------------------------------------------------------


def _observe_pools(meter: metrics.Meter) -> None:
    """Create the observable instruments that read every watched pool at collection."""

    def points(
        read: Callable[[PoolStats], Iterable[tuple[float, Attributes]]],
    ) -> Callable[[metrics.CallbackOptions], Iterable[metrics.Observation]]:
        def callback(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            return [
                metrics.Observation(value, {**_pool_attributes(stats), **extra})
                for stats in watched_pools()
                for value, extra in read(stats)
            ]

        return callback

    meter.create_observable_up_down_counter(
        "db.client.connection.count",
        [points(lambda s: [(s.idle, {"db.client.connection.state": "idle"}),
                           (s.in_use, {"db.client.connection.state": "used"})])],
        unit="{connection}",
        description="Connections open in each pool, idle or in use.",
    )
    meter.create_observable_up_down_counter(
        "db.client.connection.max",
        [points(lambda s: [] if s.max is None else [(s.max, {})])],
        unit="{connection}",
        description="The most connections each pool opens.",
    )
    meter.create_observable_up_down_counter(
        "db.client.connection.pending_requests",
        [points(lambda s: [] if s.waiting is None else [(s.waiting, {})])],
        unit="{request}",
        description="Calls waiting for a connection of each pool.",
    )
    meter.create_observable_counter(
        "crm.pool.wait_time",
        [points(lambda s: [] if s.wait_seconds is None else [(s.wait_seconds, {})])],
        unit="s",
        description="Time calls have waited for a connection of each pool, in all.",
    )
    meter.create_observable_counter(
        "crm.pool.requests",
        [points(lambda s: [] if s.requests is None else [(s.requests, {})])],
        unit="{request}",
        description="Connections asked of each pool (with crm.pool.wait_time: the mean wait).",
    )


def _pool_attributes(stats: PoolStats) -> Attributes:
    return {_POOL_NAME: stats.name, "db.system.name": stats.system}
