"""Whether to emit, decided on every call for the price of a dictionary lookup.

crm-infra never imports OpenTelemetry itself. An application that wants traces or metrics
configures an SDK, and to do so it imports ``opentelemetry.trace`` or ``opentelemetry.metrics``
and sets a global provider; until it has, there is nothing to emit to. So each call looks
those modules up in ``sys.modules``: absent (the ``otel`` extra not installed, or installed
and never loaded) the call goes on at once. Present, the global providers are read, and
an :class:`~crm_infra.telemetry.emitter.Emitter` is built once per pair of providers (the
providers are set once per process, so in practice once).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crm_infra.telemetry.emitter import Emitter

__all__ = ["AttributeValue", "active", "count", "record"]

AttributeValue = str | bool | int | float
"""What an attribute of a span or a metric point may hold here."""

_modules = sys.modules
_TRACE = "opentelemetry.trace"
_METRICS = "opentelemetry.metrics._internal"
_MISSING = object()
# The API's public getters cost microseconds (each looks up an environment variable, through a
# KeyError when it is unset); the globals they return are read directly, and the getters are
# called only where a provider may come from the environment or the globals have moved.
_PROVIDERS_FROM_ENV = any(
    name in os.environ for name in ("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_PYTHON_METER_PROVIDER")
)


class _Resolved:
    """The emitter of the providers seen last (None: they are no-ops)."""

    __slots__ = ("emitter", "meter_provider", "tracer_provider")

    def __init__(self) -> None:
        self.tracer_provider: object = None
        self.meter_provider: object = None
        self.emitter: Emitter | None = None


_resolved = _Resolved()


def active() -> Emitter | None:
    """Return the emitter for the application's providers, or None when nothing would be
    recorded (OpenTelemetry not loaded, or no SDK configured)."""
    trace: Any = _modules.get(_TRACE)
    metrics: Any = _modules.get(_METRICS)
    if trace is None and metrics is None:
        return None
    tracer_provider = None if trace is None else getattr(trace, "_TRACER_PROVIDER", _MISSING)
    meter_provider = None if metrics is None else getattr(metrics, "_METER_PROVIDER", _MISSING)
    resolved = _resolved
    if (
        tracer_provider is resolved.tracer_provider
        and meter_provider is resolved.meter_provider
    ):
        return resolved.emitter
    return _resolve(trace, tracer_provider, metrics, meter_provider)


def _provider(module: Any, read: object, getter: str) -> object:
    """The provider behind what :func:`active` read, through the API's getter where the
    global alone cannot say (the API's stand-in, when none is set, counts as none)."""
    if module is None:
        return None
    if read is _MISSING or (read is None and _PROVIDERS_FROM_ENV):
        return getattr(module, getter)()
    return read


def _stand_in(module: Any, provider: object, names: tuple[str, ...]) -> bool:
    """Whether ``provider`` is none or one of the API's stand-ins (nothing configured)."""
    return module is None or provider is None or type(provider).__name__ in names


def _resolve(trace: Any, read_tracer: object, metrics: Any, read_meter: object) -> Emitter | None:
    tracer_provider = _provider(trace, read_tracer, "get_tracer_provider")
    meter_provider = _provider(metrics, read_meter, "get_meter_provider")
    tracing = not _stand_in(trace, tracer_provider, ("ProxyTracerProvider", "NoOpTracerProvider"))
    # The metrics API's stand-in before a provider is set is private: known by its name.
    metering = not _stand_in(
        metrics, meter_provider, ("_ProxyMeterProvider", "NoOpMeterProvider")
    )
    emitter = None
    if tracing or metering:
        # Imported only now: the application has loaded and configured OpenTelemetry.
        from crm_infra.telemetry.emitter import Emitter  # noqa: PLC0415

        emitter = Emitter.for_providers(
            tracer_provider if tracing else None, meter_provider if metering else None
        )
    resolved = _resolved
    resolved.emitter = emitter
    resolved.tracer_provider = read_tracer
    resolved.meter_provider = read_meter
    return emitter


def count(
    name: str, amount: int = 1, attributes: Mapping[str, AttributeValue] | None = None
) -> None:
    """Add ``amount`` to the counter ``name`` (created on first use, unit ``1``).

    For events the rest of crm-infra wants counted, e.g. ``count("crm.vault.token.events",
    attributes={"crm.event": "renewed"})``. Nothing happens without a configured SDK.
    Attribute values must be low-cardinality and never a secret, a user id or a value.
    """
    emitter = active()
    if emitter is not None:
        emitter.count(name, amount, attributes)


def record(
    name: str,
    value: float,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    unit: str = "s",
) -> None:
    """Record ``value`` in the histogram ``name`` (created on first use with ``unit``).

    For durations the rest of crm-infra wants measured, e.g. how long a lease renewal took.
    Nothing happens without a configured SDK.
    """
    emitter = active()
    if emitter is not None:
        emitter.record(name, value, attributes, unit=unit)
