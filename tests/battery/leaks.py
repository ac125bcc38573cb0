"""Tools to prove that no credential leaks: unique markers and a scanner of everything produced.

A test plants :func:`marker` values as passwords, tokens and secret values, provokes errors,
and hands every exception, repr and captured log to a :class:`LeakScan`, which fails naming
what leaked and where. Exceptions are scanned as a traceback prints them (str, repr and every
chained cause and context), so a secret hidden in a ``__cause__`` counts too.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pytest

__all__ = ["LeakScan", "marker", "provoke_database_errors"]


def marker(kind: str) -> str:
    """Return a unique, greppable secret value, e.g. ``LEAKpassword7f3a9c...``."""
    return f"LEAK{kind}{uuid.uuid4().hex}"


def _fragments(secret: str) -> list[str]:
    # The whole marker, and its random tail on its own: catches a value cut or re-encoded
    # around its prefix (e.g. a URL parser that splits a password at '#').
    tail = secret[-16:]
    return [secret, tail]


class LeakScan:
    """Collect texts produced by the code under test and check that no marker is in them."""

    def __init__(self, *secrets: str) -> None:
        self.secrets = list(secrets)
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str) -> None:
        """Record ``text`` (described by ``where``) for the check."""
        self.texts.append((where, text))

    def add_error(self, where: str, error: BaseException) -> None:
        """Record an exception as str, repr and its full printed traceback (causes included)."""
        self.add(f"{where}: str", str(error))
        self.add(f"{where}: repr", repr(error))
        self.add(f"{where}: traceback", "".join(traceback.format_exception(error)))
        args = getattr(error, "args", ())
        self.add(f"{where}: args", repr(args))

    def expect_error(
        self, where: str, call: Callable[[], object], error: type[BaseException] = Exception
    ) -> BaseException:
        """Run ``call``, which must raise ``error``; record the exception and return it."""
        with pytest.raises(error) as info:
            call()
        self.add_error(where, info.value)
        return info.value

    def add_records(self, records: Iterable[logging.LogRecord]) -> None:
        """Record log records as a handler would format them (message, args, exc_info)."""
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        for record in records:
            self.add(f"log {record.name}", formatter.format(record))
            self.add(f"log {record.name} args", repr(record.args))

    def check(self) -> None:
        """Fail naming each marker found, and where; pass when the scan saw something."""
        assert self.texts, "nothing was scanned"
        found = [
            f"{where}: {secret[:12]}... in {text[:300]!r}"
            for where, text in self.texts
            for secret in self.secrets
            if any(fragment in text for fragment in _fragments(secret))
        ]
        assert not found, "credentials leaked:\n" + "\n".join(found)


def provoke_database_errors(db: Any, scan: LeakScan, value: str) -> tuple[Any, Any]:
    """Provoke each database error around a row value ``value``; return (alice, bob) ids.

    ``db`` is a UserScopedDB and AdminDB (the fake or PostgresClient): the same scenario runs
    on both, so a message that shows row values is caught on either backend.
    """
    alice = db.execute_admin(
        "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{value}@x",)
    )[0]["id"]
    bob = db.execute_admin("INSERT INTO users (email) VALUES ('b@x') RETURNING id")[0]["id"]
    scan.expect_error(
        "unique violation",
        lambda: db.execute_admin("INSERT INTO users (email) VALUES (%s)", (f"{value}@x",)),
    )
    scan.expect_error(
        "check violation",
        lambda: db.execute(
            "INSERT INTO tickets (subject, status) VALUES (%s, %s)", (value, value), alice
        ),
    )
    scan.expect_error(
        "row security",
        lambda: db.execute(
            "INSERT INTO contacts (user_id, name) VALUES (%s, %s)", (bob, value), alice
        ),
    )
    # Not scanned: PostgreSQL's primary message quotes a value it cannot parse
    # ('invalid input syntax for type uuid: "..."'); docs/reliability.md says so.
    scan.expect_error("NUL", lambda: db.execute("SELECT %s::text AS t", (value + "\x00",), alice))
    scan.expect_error(
        "surrogate", lambda: db.execute("SELECT %s::text AS t", (value + "\ud800",), alice)
    )
    return alice, bob

