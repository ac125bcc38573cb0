"""Tools to prove that no credential leaks: unique markers and a scanner of everything produced.

A test plants :func:`marker` values as passwords, tokens and secret values, provokes errors,
and hands every exception, repr and captured log to a :class:`LeakScan`, which fails naming
what leaked and where. Exceptions are scanned as a traceback prints them (str, repr and every
chained cause and context), and then as a debugger or an error reporter could see them: every
object reachable from the exception (see :func:`reachable_texts`), so a password held by a
driver's connection object on a ``__context__`` counts too.
"""

from __future__ import annotations

import logging
import traceback
import types
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pytest

__all__ = ["LeakScan", "marker", "provoke_database_errors", "reachable_texts"]


def marker(kind: str) -> str:
    """Return a unique, greppable secret value, e.g. ``LEAKpassword7f3a9c...``."""
    return f"LEAK{kind}{uuid.uuid4().hex}"


def _fragments(secret: str) -> list[str]:
    # The whole marker, and its random tail on its own: catches a value cut or re-encoded
    # around its prefix (e.g. a URL parser that splits a password at '#').
    tail = secret[-16:]
    return [secret, tail]


# Objects whose content is not the exception's: code, frames and modules reach everything in the
# process (a traceback's frames hold every local of every caller), so the walk never enters them.
_OPAQUE = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.FrameType,
    types.TracebackType,
    types.CodeType,
    types.GeneratorType,
)
_SCALARS = (bool, int, float, complex, type(None))
_SKIPPED = _SCALARS + _OPAQUE
# Types whose computed attributes (properties, C getters) are part of what they hold: psycopg's
# ``pgconn.info`` (the connection options, password included), ``pgconn.password``, ``diag``.
# Other types' properties are not evaluated: some do I/O (requests' ``Response.content``).
_COMPUTED_VIEWS = ("psycopg", "psycopg_binary", "psycopg_c", "psycopg_pool", "crm_infra")
MAX_DEPTH = 14
MAX_OBJECTS = 50_000


def _safe(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as exc:  # a getter that refuses (a closed connection) holds nothing
        return f"<{type(exc).__name__}>"


def _children(obj: object) -> Iterator[tuple[str, object]]:
    """Yield (name, value) for what ``obj`` holds: items, attributes, slots, chained errors."""
    if isinstance(obj, BaseException):
        yield "args", obj.args
        yield "__cause__", obj.__cause__
        yield "__context__", obj.__context__
        yield "__notes__", getattr(obj, "__notes__", None)
    if isinstance(obj, Mapping):
        for key in list(_safe(lambda: list(obj.keys())) or []):  # type: ignore[call-overload]
            yield f"[{key!r:.40}] key", key
            yield f"[{key!r:.40}]", _safe(lambda k=key: obj[k])  # type: ignore[misc]
    elif isinstance(obj, list | tuple | set | frozenset):
        for index, item in enumerate(obj):
            yield f"[{index}]", item
    attributes = getattr(obj, "__dict__", None)
    if isinstance(attributes, dict):
        yield from list(attributes.items())
    cls = type(obj)
    computed = cls.__module__.split(".")[0] in _COMPUTED_VIEWS
    for klass in cls.__mro__:
        for name in klass.__dict__.get("__slots__", ()) if klass is not object else ():
            if hasattr(obj, name):
                yield name, _safe(lambda n=name: getattr(obj, n))  # type: ignore[misc]
        if not computed:
            continue
        for name, attribute in list(klass.__dict__.items()):
            if name.startswith("__") or not isinstance(
                attribute, property | types.GetSetDescriptorType | types.MemberDescriptorType
            ):
                continue
            yield name, _safe(lambda n=name: getattr(obj, n))  # type: ignore[misc]


def reachable_texts(error: BaseException) -> Iterator[tuple[str, str]]:
    """Yield (where, text) for every string, bytes and repr reachable from ``error``.

    The walk goes through ``args``, ``__cause__``, ``__context__``, ``__notes__``, every
    attribute in ``__dict__`` and ``__slots__``, the items of mappings and sequences, and the
    computed attributes of psycopg's objects, to :data:`MAX_DEPTH` levels; tracebacks, frames,
    code, classes and modules are not entered (they reach the whole process).

    Raises:
        AssertionError: more than :data:`MAX_OBJECTS` objects were reachable (the walk would
            be incomplete, and an incomplete scan proves nothing).
    """
    seen: set[int] = set()
    stack: list[tuple[str, object, int]] = [("error", error, 0)]
    while stack:
        where, obj, depth = stack.pop()
        if id(obj) in seen or isinstance(obj, _SKIPPED):
            continue
        seen.add(id(obj))
        assert len(seen) <= MAX_OBJECTS, f"more than {MAX_OBJECTS} objects reachable from {where}"
        if isinstance(obj, str):
            yield where, obj
            continue
        if isinstance(obj, bytes | bytearray | memoryview):
            yield where, bytes(obj).decode("latin-1")
            continue
        yield f"{where} repr", str(_safe(lambda o=obj: repr(o)))  # type: ignore[misc]
        if depth < MAX_DEPTH:
            stack.extend((f"{where}.{name}", child, depth + 1) for name, child in _children(obj))


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
        for path, text in reachable_texts(error):
            self.add(f"{where}: {path}", text)

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


def provoke_database_errors(
    db: Any, scan: LeakScan, value: str, *, surrogate: bool = True
) -> tuple[Any, Any]:
    """Provoke each database error around a row value ``value``; return (alice, bob) ids.

    ``db`` is a UserScopedDB and AdminDB (the fake or PostgresClient): the same scenario runs
    on both, so a message that shows row values is caught on either backend. ``surrogate``
    False leaves out the parameter with a lone surrogate (see its own test).
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
    if surrogate:
        scan.expect_error(
            "surrogate", lambda: db.execute("SELECT %s::text AS t", (value + "\ud800",), alice)
        )
    return alice, bob

