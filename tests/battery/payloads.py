"""Hostile inputs shared by the battery: injection payloads, awkward keys, big values."""

from __future__ import annotations

__all__ = ["AWKWARD_KEYS", "INJECTIONS", "MIB", "UNICODE_PATHS"]

MIB = 1024 * 1024

INJECTIONS: dict[str, str] = {
    "quote-or": "' OR '1'='1",
    "drop-table": "x'); DROP TABLE contacts; --",
    "stacked": "1; DELETE FROM contacts WHERE true; --",
    "comment": "*/ SELECT 1 /*",
    "dollar-quote": "$$; DROP TABLE users; $$",
    "backslash": "\\'; SELECT pg_sleep(10); --",
    "set-config": "'; SELECT set_config('app.current_user_id', '', false); --",
    "percent": "%s %(x)s %% {0}",
    "lua": "'); redis.call('FLUSHALL'); --",
    "resp": "v\r\n*1\r\n$8\r\nFLUSHALL\r\n",
    "json": '{"$where": "1"} ]}',
}
"""Text that must be stored and read back literally, never interpreted."""

AWKWARD_KEYS: dict[str, str] = {
    "space": "user 1 session",
    "newline": "user\n1",
    "crlf": "user\r\nFLUSHALL\r\n",
    "star": "*",
    "glob-star": "user:*",
    "glob-question": "user:?",
    "glob-class": "user:[0-9]",
    "backslash": "user:\\*",
    "nul": "a\x00b",
    "unicode": "ключ:🔑:é",
    "empty": "",
    "long": "k" * 10_000,
}
"""Keys that must address exactly one entry, literally (globs are not patterns)."""

UNICODE_PATHS: dict[str, str] = {
    "cyrillic look-alike": "crm/dаtabase",
    "fullwidth solidus": "crm／database",
    "right-to-left override": "crm/\u202edatabase",
    "combining accent": "crm/database\u0301",
    "emoji": "crm/🔑",
    "lone surrogate": "crm/\ud800",
    "NUL in the middle": "crm/database\x00/../../sys",
}
"""Secret paths with non-ASCII or invisible characters: all refused before any request."""
