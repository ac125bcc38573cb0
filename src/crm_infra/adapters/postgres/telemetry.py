"""What the PostgreSQL clients' spans say: the SQL template, never a value.

Values travel as protocol parameters and never appear here, nor does the user id (the user
setting is not a statement of the call's). ``db.query.text`` is the SQL as the caller wrote it
(cut at :data:`QUERY_TEXT_LIMIT` characters): values belong in ``params``. The attributes
follow OpenTelemetry's conventions for SQL client spans; see docs/operations.md.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from crm_infra.pool_stats import PoolStats
from crm_infra.telemetry import Call, CallSpec
from crm_infra.telemetry.calls import Attributes
from crm_infra.telemetry.pools import client_number

__all__ = [
    "ADMIN_CONNECTION",
    "ADMIN_DB",
    "ADMIN_TRANSACTION",
    "ADMIN_TRANSACTION_EXECUTE",
    "CONNECTION",
    "EXECUTE",
    "EXECUTE_ADMIN",
    "HEALTH_CHECK",
    "QUERY_TEXT_LIMIT",
    "TRANSACTION",
    "TRANSACTION_EXECUTE",
    "USER_SCOPED_DB",
    "Block",
    "Statement",
    "pool_stats",
]

USER_SCOPED_DB = "UserScopedDB"
ADMIN_DB = "AdminDB"
QUERY_TEXT_LIMIT = 2048
"""``db.query.text`` is cut here (a migration can be long; the start says which)."""

_CALLS_KEPT = 1024  # per client: distinct (operation, SQL text) pairs whose Call is reused


class _Known:
    """What one client's spans repeat: its servers, and the Call of each (operation, SQL)."""

    __slots__ = ("admin", "app", "calls")

    def __init__(self, owner: Any) -> None:
        self.app = _where(owner._app_conninfo)
        self.admin = _where(owner._admin_conninfo)
        self.calls: dict[tuple[str, object], Call] = {}


_known: weakref.WeakKeyDictionary[Any, _Known] = weakref.WeakKeyDictionary()


def _where(conninfo: str | None) -> Attributes:
    if conninfo is None:
        return {}
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return {}
    found: dict[str, str | int] = {"server.address": str(parts.get("host") or "localhost")}
    port = str(parts.get("port") or "5432")
    if port.isdigit():
        found["server.port"] = int(port)
    if parts.get("dbname"):
        found["db.namespace"] = str(parts["dbname"])
    return found


def _known_of(owner: Any) -> _Known:
    known = _known.get(owner)
    if known is None:
        known = _known[owner] = _Known(owner)
    return known


def _server_of(owner: Any, admin: bool) -> Attributes:
    """The server attributes of ``owner``'s application or admin role (read once)."""
    known = _known_of(owner)
    return known.admin if admin else known.app


def _verb(query: str) -> str:
    """The statement's first keyword (``SELECT``), after any leading comments."""
    text = query.lstrip()
    while text.startswith(("--", "/*")):
        end = text.find("\n") if text.startswith("--") else text.find("*/")
        if end < 0:
            return ""
        text = text[end + (1 if text.startswith("--") else 2):].lstrip()
    word = text.split(None, 1)[0] if text else ""
    word = word.rstrip(";(")
    return word.upper() if word.isascii() and word.isalpha() else ""


class Statement(CallSpec):
    """One statement: ``execute``, ``execute_admin``, a transaction handle's ``execute``,
    the health check's ``SELECT 1``.

    Args:
        port: ``UserScopedDB`` or ``AdminDB``.
        operation: the method (``execute``, ``transaction.execute``...).
        query_at: where the SQL is among the method's positional arguments.
        query: the SQL the method always sends (the health check), instead.
    """

    def __init__(
        self, port: str, operation: str, query_at: int = 0, *, query: str | None = None
    ) -> None:
        self._port = port
        self._operation = operation
        self._query_at = query_at
        self._query = query
        self._admin = port == ADMIN_DB
        self._metric: Attributes = {
            "crm.port": port,
            "crm.operation": operation,
            "db.system.name": "postgresql",
        }

    def describe(self, owner: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Call:
        query = self._query
        if query is None:
            query = args[self._query_at] if len(args) > self._query_at else kwargs.get("query")
        # The same SQL makes the same span start: built once per client and text.
        known = _known_of(owner)
        key = (self._operation, query if isinstance(query, str) else None)
        call = known.calls.get(key)
        if call is None:
            if len(known.calls) >= _CALLS_KEPT:
                known.calls.clear()
            call = known.calls[key] = self._call(known, query)
        return call

    def _call(self, known: _Known, query: object) -> Call:
        attributes: dict[str, str | int | bool | float] = {
            **self._metric,
            **(known.admin if self._admin else known.app),
        }
        verb = ""
        if isinstance(query, str):
            verb = _verb(query)
            attributes["db.query.text"] = query[:QUERY_TEXT_LIMIT]
        if verb:
            attributes["db.operation.name"] = verb
        return Call(verb or self._operation, attributes, self._metric)

    def outcome(self, call: Call, result: Any) -> Attributes:
        if isinstance(result, list):
            return {"db.response.returned_rows": len(result)}
        return {}

    def failure(self, call: Call, exc: BaseException) -> Attributes:
        sqlstate = getattr(exc, "sqlstate", None)
        return {"db.response.status_code": sqlstate} if isinstance(sqlstate, str) else {}


class Block(CallSpec):
    """A block: ``transaction()``, ``admin_transaction()``, ``connection()``,
    ``admin_connection()``; its statements are spans of their own inside it."""

    def __init__(self, port: str, operation: str) -> None:
        self._admin = port == ADMIN_DB
        self._metric: Attributes = {
            "crm.port": port,
            "crm.operation": operation,
            "db.system.name": "postgresql",
        }
        self._operation = operation

    def describe(self, owner: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Call:
        attributes = {**self._metric, **_server_of(owner, self._admin)}
        return Call(self._operation, attributes, self._metric, client=False)


def pool_stats(owner: Any) -> dict[str, PoolStats]:
    """The state of ``owner``'s pools that are open (the admin pool opens on first use;
    a closed client has none)."""
    found: dict[str, PoolStats] = {}
    if owner._closed:
        return found
    for pool, admin in ((owner._pool, False), (owner._admin_pool, True)):
        if pool is None:
            continue
        where = _server_of(owner, admin)
        name = (
            f"{pool.name} {where.get('server.address', '?')}:{where.get('server.port', '?')}"
            f"/{where.get('db.namespace', '')} #{client_number(owner)}"
        )
        stats = pool.get_stats()
        size = int(stats.get("pool_size", 0))
        idle = int(stats.get("pool_available", 0))
        found[name] = PoolStats(
            name=name,
            system="postgresql",
            size=size,
            idle=idle,
            in_use=max(0, size - idle),
            max=int(stats.get("pool_max", 0)) or None,
            waiting=int(stats.get("requests_waiting", 0)),
            wait_seconds=int(stats.get("requests_wait_ms", 0)) / 1000,
            requests=int(stats.get("requests_num", 0)),
        )
    return found


# The hooks of PostgresClient and AsyncPostgresClient, one per method.
EXECUTE = Statement(USER_SCOPED_DB, "execute")
TRANSACTION = Block(USER_SCOPED_DB, "transaction")
TRANSACTION_EXECUTE = Statement(USER_SCOPED_DB, "transaction.execute", 1)
HEALTH_CHECK = Statement(USER_SCOPED_DB, "health_check", query="SELECT 1")
CONNECTION = Block(USER_SCOPED_DB, "connection")
EXECUTE_ADMIN = Statement(ADMIN_DB, "execute_admin")
ADMIN_TRANSACTION = Block(ADMIN_DB, "admin_transaction")
ADMIN_TRANSACTION_EXECUTE = Statement(ADMIN_DB, "admin_transaction.execute", 1)
ADMIN_CONNECTION = Block(ADMIN_DB, "admin_connection")
