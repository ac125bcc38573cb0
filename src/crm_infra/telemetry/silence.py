"""Switch every OpenTelemetry instrumentation off for a block, if OpenTelemetry is loaded.

For code that sends secrets in SQL text (``CREATE ROLE ... PASSWORD '...'`` in
:mod:`crm_infra.bootstrap`) outside any crm-infra span: with a driver's instrumentation on
(``opentelemetry-instrumentation-psycopg``), the driver's own span would carry the statement,
password and all. :func:`silenced` sets OpenTelemetry's suppression key in the context for
the block (the API's ``_SUPPRESS_INSTRUMENTATION_KEY``, and the plain ``"suppress_instrumentation"``
key that older instrumentations read), which every instrumentation checks before it makes a
span; crm-infra's own spans are not made under it either.

Like :mod:`crm_infra.telemetry.switch`, it looks in ``sys.modules`` only: when
``opentelemetry.context`` has not been loaded, no instrumentation can be running (each reads
the context through that module), so the block runs as it is and nothing is imported.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

__all__ = ["silenced"]

_modules = sys.modules
_CONTEXT = "opentelemetry.context"
# opentelemetry-instrumentation's is_instrumentation_enabled() also reads this plain key, for
# instrumentations older than the API's own key (as crm_infra.telemetry.emitter sets it).
_SUPPRESS_PLAIN = "suppress_instrumentation"


class silenced:  # lowercase: it reads as a function, ``with silenced():``
    """A context manager: OpenTelemetry instrumentation suppressed inside the block (when
    OpenTelemetry is loaded; otherwise nothing happens and nothing is imported).

    Works in asyncio code as well (the context is the task's); one instance is not
    re-entrant.
    """

    __slots__ = ("_context", "_token")

    def __init__(self) -> None:
        self._context: Any = None
        self._token: object = None

    def __enter__(self) -> None:
        context: Any = _modules.get(_CONTEXT)
        key = getattr(context, "_SUPPRESS_INSTRUMENTATION_KEY", None)
        if key is None:
            return  # not loaded (or still loading): no instrumentation can read a context
        quiet = context.set_value(_SUPPRESS_PLAIN, True, context.set_value(key, True))
        self._context = context
        self._token = context.attach(quiet)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        context, token = self._context, self._token
        if context is not None:
            self._context = self._token = None
            context.detach(token)
