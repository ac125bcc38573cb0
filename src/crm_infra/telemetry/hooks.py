"""The hooks on the adapters' methods: one decorator line per method.

``@traced(spec)`` on a method (sync or ``async def``, told apart here) makes one span and one
duration point per call; ``@traced_block(spec)`` on a method that returns a context manager
(``with`` or ``async with``) makes one span for the whole block. Without a configured SDK a
hooked method costs one extra call and one dictionary lookup (:func:`~.switch.active`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from crm_infra.telemetry.calls import CallSpec
from crm_infra.telemetry.switch import active

__all__ = ["traced", "traced_block"]

_F = TypeVar("_F", bound=Callable[..., Any])


def traced(spec: CallSpec) -> Callable[[_F], _F]:
    """Trace and time every call of the decorated method as ``spec`` describes it."""

    def decorate(method: _F) -> _F:
        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def run_async(owner: Any, /, *args: Any, **kwargs: Any) -> Any:
                emitter = active()
                if emitter is None:
                    return await method(owner, *args, **kwargs)
                return await emitter.run_async(spec, method, owner, args, kwargs)

            return cast(_F, run_async)

        @functools.wraps(method)
        def run(owner: Any, /, *args: Any, **kwargs: Any) -> Any:
            emitter = active()
            if emitter is None:
                return method(owner, *args, **kwargs)
            return emitter.run(spec, method, owner, args, kwargs)

        return cast(_F, run)

    return decorate


def traced_block(spec: CallSpec) -> Callable[[_F], _F]:
    """Trace the block of the context manager the decorated method returns (``with`` or
    ``async with``): what the adapter sends to open and close it runs with the driver's own
    instrumentation suppressed; the body is the caller's and is not."""

    def decorate(method: _F) -> _F:
        @functools.wraps(method)
        def open_block(owner: Any, /, *args: Any, **kwargs: Any) -> Any:
            emitter = active()
            manager = method(owner, *args, **kwargs)
            if emitter is None:
                return manager
            return emitter.block(spec, manager, owner, args, kwargs)

        return cast(_F, open_block)

    return decorate
