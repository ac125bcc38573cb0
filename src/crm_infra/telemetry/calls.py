"""What one port call says about itself: :class:`Call`, built by a :class:`CallSpec`.

Each adapter has its specs (``adapters/<backend>/telemetry.py``): they read the call's
arguments and the adapter's configuration, and return only what may be shown, the SQL template
and the key prefix, never a value, a key suffix, a user id, a secret, a token or a password. A
spec runs only when something will be recorded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from crm_infra.telemetry.switch import AttributeValue

__all__ = ["Attributes", "Call", "CallSpec", "error_type", "is_name"]

Attributes = Mapping[str, AttributeValue]


class Call:
    """One port call: its span's name and attributes, and the attributes of its metric
    points (a low-cardinality part: no SQL text)."""

    __slots__ = ("attributes", "client", "counter", "metric_attributes", "name")

    def __init__(
        self,
        name: str,
        attributes: Attributes,
        metric_attributes: Attributes,
        *,
        client: bool = True,
        counter: str | None = None,
    ) -> None:
        self.name = name
        self.attributes = attributes
        self.metric_attributes = metric_attributes
        self.client = client  # a call to a server (CLIENT span), else a block (INTERNAL)
        self.counter = counter  # a counter to add one to when the call succeeds


_NAME = re.compile(r"[a-z][a-z_-]{0,31}")


def is_name(segment: str) -> bool:
    """Whether a segment of a key or of a path reads as the name of a kind of thing, and so
    may be shown: 1 to 32 lowercase ASCII letters, ``_`` or ``-``, starting with a letter
    (``session``, ``rate_limit``, ``database``). Digits, capitals, ``@`` and ``.`` are never
    shown: ids, numbers, emails and tokens hold them (``fullmatch``, since ``$`` would let a
    final newline by). Letters alone cannot tell a lowercase username from a name, which is
    why the docs ask for ids after a name (``cart:{user_id}``)."""
    return _NAME.fullmatch(segment) is not None


def error_type(exc: BaseException) -> str:
    """The ``error.type`` of a failure: its class's qualified name, never its message
    (messages name keys and quote servers, which may quote values)."""
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


class CallSpec:
    """How the calls of one adapter method are described; subclasses fill in ``describe``
    and what they need of the others. The defaults add nothing."""

    def describe(self, owner: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Call:
        """Return the call about to run on ``owner`` with these arguments."""
        raise NotImplementedError

    def outcome(self, call: Call, result: Any) -> Attributes:
        """Return the attributes a successful ``result`` adds to the span (a row count, a
        hit count)."""
        return {}

    def measured(self, call: Call, result: Any) -> Attributes:
        """Return the attributes a successful ``result`` adds to the call's duration point
        (low-cardinality only: whether a read was served from a cache)."""
        return {}

    def failure(self, call: Call, exc: BaseException) -> Attributes:
        """Return the attributes a failure adds to the span besides ``error.type``."""
        return {}
