"""Checks on SQL text shared by the PostgreSQL client and the in-memory fake."""

from __future__ import annotations

import functools

__all__ = ["shown", "untextable_reason"]


@functools.lru_cache(maxsize=4096)  # on every execute: once per distinct text, not per call
def untextable_reason(query: str) -> str | None:
    """Return why PostgreSQL cannot receive ``query`` whole, or None when it can.

    libpq ends the text at a NUL byte, so ``DELETE FROM t\\0 WHERE id = %s`` would delete every
    row; a lone surrogate has no UTF-8 form.
    """
    if "\x00" in query:
        return "the SQL text contains a NUL (0x00) byte, where PostgreSQL would end it"
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        return "the SQL text cannot be encoded as UTF-8 (a lone surrogate?)"
    return None


def shown(query: str) -> str:
    """Return ``query`` as it may appear in a message (lone surrogates escaped)."""
    return query.encode("utf-8", "backslashreplace").decode("utf-8")
