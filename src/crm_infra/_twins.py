"""What the sync and asyncio twins of a class share that is not protocol code: their signature,
and the asyncio clients' ``async with``.

An asyncio twin takes the same constructor arguments as its sync twin. Written twice, the two
lists drift (a new option lands in one); :func:`same_arguments_as` makes the sync twin's
``__init__`` the only place they are written: mypy checks calls of the twin against it, and
``inspect.signature`` and ``help()`` show it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

__all__ = ["OpenedByAsyncWith", "same_arguments_as"]

P = ParamSpec("P")
S = TypeVar("S")


def same_arguments_as(
    source: Callable[Concatenate[Any, P], None],
) -> Callable[[Callable[Concatenate[S, ...], None]], Callable[Concatenate[S, P], None]]:
    """Give the decorated ``__init__(self, *args, **kwargs)`` the parameters of ``source``.

    Example::

        class AsyncVaultClient:
            @same_arguments_as(VaultClient.__init__)
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self._vault = VaultClient(*args, **kwargs)
    """

    def decorate(init: Callable[Concatenate[S, ...], None]) -> Callable[Concatenate[S, P], None]:
        init.__signature__ = inspect.signature(source)  # type: ignore[attr-defined]  # read by inspect
        return init

    return decorate


class OpenedByAsyncWith:
    """``async with client:`` opens (``await client.open()``) and closes the client; when
    opening fails, closes it again (no ``__aexit__`` follows a failed ``__aenter__``)."""

    async def open(self) -> None:
        """Connect or log in (subclasses)."""

    async def close(self) -> None:
        """Close (subclasses); idempotent."""

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
