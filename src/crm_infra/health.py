"""Health reports: run named checks concurrently, each under its own timeout.

A check that hangs cannot hang the report and cannot hide the others: each runs in its own daemon
thread, and the report is assembled when every check has answered or its deadline has passed.
A thread still stuck in a dead dependency is left behind (it holds no lock of ours, and as a
daemon it cannot keep the process alive). :func:`run_checks_async` does the same with tasks, for
the asyncio infrastructure.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

# Re-exported: the CLI, the composition root and the dev stack show errors through these.
from crm_infra.redaction import redact, redact_address, short_error

__all__ = [
    "ComponentHealth",
    "HealthReport",
    "redact",
    "redact_address",
    "run_checks",
    "run_checks_async",
    "short_error",
]


@attrs.frozen
class ComponentHealth:
    """The state of one component: healthy or the reason it is not, and how long it took.

    Attributes:
        ok: True when the component answered its health check in time.
        latency_ms: how long the check took (up to the timeout when it did not answer).
        error: a short, secret-free description of what failed, or None when healthy.
    """

    ok: bool
    latency_ms: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"ok": ..., "latency_ms": ..., "error": ...}`` for JSON output."""
        return {"ok": self.ok, "latency_ms": self.latency_ms, "error": self.error}


def _freeze(components: Mapping[str, ComponentHealth]) -> Mapping[str, ComponentHealth]:
    return MappingProxyType(dict(components))


@attrs.frozen
class HealthReport:
    """The state of every component, keyed ``secrets``, ``database`` and ``keyvalue``."""

    components: Mapping[str, ComponentHealth] = attrs.field(converter=_freeze)

    @property
    def ok(self) -> bool:
        """Return True when every component is healthy."""
        return all(c.ok for c in self.components.values())

    def to_dict(self) -> dict[str, Any]:
        """Return the report as ``crm-infra check --json`` prints it."""
        return {
            "ok": self.ok,
            "components": {name: c.to_dict() for name, c in self.components.items()},
        }


def _run_one(check: Callable[[], object]) -> ComponentHealth:
    start = time.perf_counter()
    try:
        result = check()
    except Exception as exc:  # noqa: BLE001  # any failure is the component's state, not the report's
        return ComponentHealth(False, _elapsed_ms(start), short_error(exc))
    if result is False:
        return ComponentHealth(False, _elapsed_ms(start), "health check answered False")
    return ComponentHealth(True, _elapsed_ms(start))


def _elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


def run_checks(checks: Mapping[str, Callable[[], object]], timeout: float) -> HealthReport:
    """Run every check at once, each in its own thread; give each ``timeout`` seconds.

    Args:
        checks: component name to a callable that returns True (or anything but False) when
            healthy and raises or returns False otherwise.
        timeout: seconds each check may take; a check still running then is reported as failed.

    Returns:
        A report with one entry per check, in the order of ``checks``.
    """
    results: dict[str, ComponentHealth] = {}
    done = {name: threading.Event() for name in checks}

    def worker(name: str, check: Callable[[], object]) -> None:
        results[name] = _run_one(check)
        done[name].set()

    start = time.perf_counter()
    for name, check in checks.items():
        threading.Thread(
            target=worker, args=(name, check), name=f"health-{name}", daemon=True
        ).start()
    deadline = start + timeout
    components: dict[str, ComponentHealth] = {}
    for name in checks:
        if done[name].wait(max(0.0, deadline - time.perf_counter())):
            components[name] = results[name]
        else:
            components[name] = ComponentHealth(
                False, _elapsed_ms(start), f"no answer within {timeout:g} s"
            )
    return HealthReport(components)


async def run_checks_async(
    checks: Mapping[str, Callable[[], Awaitable[object]]],
    timeout: float,
    *,
    limit: int | None = None,
) -> HealthReport:
    """Run every check at once as tasks; give each ``timeout`` seconds.

    The asyncio twin of :func:`run_checks`: a check still running at its deadline is
    cancelled and reported as failed. Errors are kept whole unless ``limit`` cuts them.
    """

    async def one(check: Callable[[], Awaitable[object]]) -> ComponentHealth:
        start = time.perf_counter()
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                result = await check()
        except TimeoutError as exc:
            if deadline.expired():
                return ComponentHealth(False, _elapsed_ms(start), f"no answer within {timeout:g} s")
            return ComponentHealth(False, _elapsed_ms(start), short_error(exc, limit=limit))
        except Exception as exc:  # noqa: BLE001  # the component's state, not the report's
            return ComponentHealth(False, _elapsed_ms(start), short_error(exc, limit=limit))
        if result is False:
            return ComponentHealth(False, _elapsed_ms(start), "health check answered False")
        return ComponentHealth(True, _elapsed_ms(start))

    results = await asyncio.gather(*(one(check) for check in checks.values()))
    return HealthReport(dict(zip(checks, results, strict=True)))
