"""How ``PostgresClient`` types a statement's int parameters, which decides integer arithmetic.

The fake must type an int parameter as PostgreSQL will see it, and that depends on the path:

* user-scoped: every value travels as a protocol parameter with a declared type (one
  statement per call, lists or not). An ``int`` is declared ``int8`` (``numeric`` beyond, a
  value the fake refuses when it binds it); an int subclass (an ``IntEnum``) as psycopg
  picks by its value (``int2``, ``int4`` or ``int8``); ``None`` and ``str`` are ``unknown``:
  the server gives them the type of what they meet, like an untyped NULL;
* admin: psycopg binds server-side, an ``int`` as int2, int4, int8 or numeric by its value.

``tests/unit/test_fake_database_paths.py`` checks these against the types the client declares.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Final

from crm_infra.ports import Params

__all__ = [
    "CONTEXT",
    "RUN_TIME",
    "ParamWidths",
    "user_widths",
]

RUN_TIME: Final = 0
"""An int whose width psycopg picks by its value when the statement runs."""
CONTEXT: Final = -1
"""No integer type of its own: an untyped parameter (None, str...) or not an int at all."""

ParamWidths = tuple[int, ...] | tuple[tuple[str, int], ...]
"""Per parameter (or per name, for a mapping): 64, RUN_TIME or CONTEXT."""


def user_widths(params: Params) -> ParamWidths:
    """Return the widths of a user-scoped statement's parameters (the translation's key)."""
    if type(params) is tuple or type(params) is list:  # the common case, cached by types
        return _widths_by_types(tuple(map(type, params)))
    if isinstance(params, Mapping):
        return tuple((str(k), _width(type(v))) for k, v in params.items())
    if isinstance(params, str | bytes | bytearray):
        return ()  # refused when it is bound (psycopg's TypeError)
    return tuple(_width(type(v)) for v in params)


@functools.lru_cache(maxsize=4096)
def _widths_by_types(kinds: tuple[type, ...]) -> tuple[int, ...]:
    return tuple(_width(k) for k in kinds)


def _width(kind: type) -> int:
    if kind is int:
        return 64  # declared int8 by the client, whatever the value
    if issubclass(kind, int) and kind is not bool:
        return RUN_TIME  # left to psycopg, which picks by the value
    return CONTEXT
