"""A tiny timing harness: run an adapter call and its raw-client baseline in one process,
interleaved in rounds so drift (CPU frequency, other load) hits both alike, and print ratios.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Comparison",
    "async_timer",
    "compare",
    "print_comparisons",
    "time_per_call",
]

Timer = Callable[[Callable[[], Any], int], float]


def time_per_call(fn: Callable[[], object], calls: int) -> float:
    """Return the mean seconds per call of ``fn`` over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def async_timer(loop: asyncio.AbstractEventLoop) -> Timer:
    """A timer for coroutine functions: ``calls`` awaited one after another inside ``loop``,
    timed there, so entering the loop is not part of any call."""

    async def batch(fn: Callable[[], Awaitable[object]], calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await fn()
        return (time.perf_counter() - start) / calls

    return lambda fn, calls: loop.run_until_complete(batch(fn, calls))


@dataclass
class Comparison:
    """One adapter operation against its baseline; ``ratio`` is adapter / baseline time."""

    name: str
    baseline_name: str
    adapter_s: list[float] = field(default_factory=list)
    baseline_s: list[float] = field(default_factory=list)
    target: float | None = None  # the ratio to stay under, when there is one
    higher_is_better: bool = False

    @property
    def adapter(self) -> float:
        return statistics.median(self.adapter_s)

    @property
    def baseline(self) -> float:
        return statistics.median(self.baseline_s)

    @property
    def ratio(self) -> float:
        return self.adapter / self.baseline

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target


def compare(
    name: str,
    adapter: Callable[[], object],
    baseline_name: str,
    baseline: Callable[[], object],
    *,
    calls: int,
    rounds: int = 7,
    warmup: int = 50,
    target: float | None = None,
    timer: Timer = time_per_call,
) -> Comparison:
    """Time ``adapter`` and ``baseline`` in alternating rounds; keep per-round means.

    ``timer`` runs the calls: :func:`time_per_call`, or :func:`async_timer` for coroutine
    functions.
    """
    timer(adapter, warmup)
    timer(baseline, warmup)
    result = Comparison(name, baseline_name, target=target)
    for i in range(rounds):
        # Alternate which goes first so neither always runs on a warmer cache.
        pair = [(adapter, result.adapter_s), (baseline, result.baseline_s)]
        for fn, sink in pair if i % 2 == 0 else reversed(pair):
            sink.append(timer(fn, calls))
    return result


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:9.2f} us"
    return f"{seconds * 1e3:9.3f} ms"


def print_comparisons(title: str, comparisons: list[Comparison]) -> None:
    """Print one table: operation, times, ratio and whether the target is met."""
    print(f"\n== {title}")
    print(f"{'operation':34} {'adapter':>12} {'baseline':>12} {'ratio':>9}  target")
    for c in comparisons:
        verdict = ""
        if c.target is not None:
            op = ">=" if c.higher_is_better else "<="
            verdict = f"{op} {c.target:g}  {'met' if c.met else 'MISSED'}"
        print(
            f"{c.name:34} {_fmt(c.adapter):>12} {_fmt(c.baseline):>12} "
            f"{c.ratio:8.3f}x  {verdict}   (vs {c.baseline_name})"
        )
