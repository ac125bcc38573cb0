"""The ports: what domain code may depend on.

Four small :class:`typing.Protocol` classes. Real adapters (``crm_infra.adapters``) and in-memory
fakes (``crm_infra.fakes``) implement them; ``crm_infra.composition`` picks one set. Domain code is
typed against these names only, and against :class:`UserScopedDB` rather than :class:`AdminDB`
wherever it handles a user's data.

Each port has an asyncio twin of the same name with ``Async`` in front (``AsyncUserScopedDB``...):
every method the same, as ``async def``, with the same semantics and errors; ``transaction()``
and ``admin_transaction()`` return async context managers yielding an :class:`AsyncTransaction`.

Every method raises only errors from :mod:`crm_infra.errors`, in the family of its port.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Protocol, TypeAlias, runtime_checkable

from crm_infra.user_context import UserId

__all__ = [
    "AdminDB",
    "AsyncAdminDB",
    "AsyncKeyValueStore",
    "AsyncSecretStore",
    "AsyncTransaction",
    "AsyncUserScopedDB",
    "JSONValue",
    "KeyValueStore",
    "Params",
    "Row",
    "SecretStore",
    "Transaction",
    "UserScopedDB",
]

Row: TypeAlias = dict[str, Any]
"""One result row: column name to value, with psycopg's Python types (UUID, aware datetime...)."""

Params: TypeAlias = Sequence[Any] | Mapping[str, Any]
"""Query parameters: a sequence for ``%s`` placeholders, a mapping for ``%(name)s``."""

JSONValue: TypeAlias = (
    dict[str, Any] | list[Any] | tuple[Any, ...] | str | int | float | bool | None
)
"""A value :func:`json.dumps` can hold (containers are checked when serialised)."""


@runtime_checkable
class SecretStore(Protocol):
    """Read-only access to secrets (KV v2 layout: ``crm/database``, ``crm/valkey``...)."""

    def get_secret(self, path: str) -> Mapping[str, Any]:
        """Return the latest version of the secret at ``path`` (never empty, never None).

        Raises:
            InvalidSecretPathError: the path is malformed; nothing was sent.
            SecretNotFoundError: nothing at the path, or its latest version was deleted.
            SecretAccessDeniedError: the credentials may not read the path.
            SecretStoreAuthError: the credentials are invalid, expired or revoked.
            SecretStoreUnavailableError: the store is unreachable, sealed or timed out.
        """
        ...

    def health_check(self) -> bool:
        """Return True when the store answers and the credentials are valid; raise otherwise."""
        ...


@runtime_checkable
class Transaction(Protocol):
    """A handle on one open transaction; every call runs inside it, for its one user."""

    def execute(self, query: str, params: Params = ()) -> list[Row]:
        """Run ``query`` and return all rows; ``[]`` for a statement without a result."""
        ...

    def execute_one(self, query: str, params: Params = ()) -> Row | None:
        """Run ``query`` and return its first row, or None when there is none."""
        ...

    def execute_scalar(self, query: str, params: Params = ()) -> Any:
        """Run ``query`` and return the first column of the first row.

        Raises:
            NoRowsError: the query returned no row (also a ``ValueError``).
        """
        ...


@runtime_checkable
class UserScopedDB(Protocol):
    """SQL on behalf of one user, under row-level security.

    ``user_id`` defaults to the current user of :func:`crm_infra.user_context`; with neither,
    :class:`MissingUserContextError` is raised before any I/O, and a user id that is not a UUID
    raises :class:`InvalidUserIdError` before any I/O. Other users' rows are invisible, and a
    write that would give a row to another user raises :class:`RowSecurityError`.
    """

    def execute(self, query: str, params: Params = (), user_id: UserId | None = None) -> list[Row]:
        """Run ``query`` (``%s`` placeholders) in its own transaction; return all rows."""
        ...

    def execute_one(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> Row | None:
        """Run ``query`` in its own transaction; return the first row or None."""
        ...

    def execute_scalar(self, query: str, params: Params = (), user_id: UserId | None = None) -> Any:
        """Run ``query`` in its own transaction; return the first column of the first row.

        Raises:
            NoRowsError: the query returned no row (also a ``ValueError``).
        """
        ...

    def transaction(self, user_id: UserId | None = None) -> AbstractContextManager[Transaction]:
        """Open one transaction for one user; commit on normal exit, roll back on an exception.

        Nested inside a transaction for the same user it is a savepoint; for another user it
        raises :class:`TransactionUsageError`.
        """
        ...

    def health_check(self) -> bool:
        """Return True when the database answers; raise :class:`DatabaseError` otherwise."""
        ...


@runtime_checkable
class AdminDB(Protocol):
    """The explicit row-level-security bypass: migrations and cross-user batch work only.

    Never hand this to code that acts for a single user; type such code against
    :class:`UserScopedDB`.
    """

    def execute_admin(self, query: str, params: Params = ()) -> list[Row]:
        """Run ``query`` as the admin role, bypassing row-level security; return all rows."""
        ...

    def admin_transaction(self) -> AbstractContextManager[Transaction]:
        """Open one admin transaction; commit on normal exit, roll back on an exception."""
        ...

    def health_check(self) -> bool:
        """Return True when the database answers; raise :class:`DatabaseError` otherwise."""
        ...


@runtime_checkable
class KeyValueStore(Protocol):
    """Ephemeral string values with expiry: sessions, caches and rate-limit counters.

    ``expire_seconds`` and ``window_seconds`` must be positive integers; anything else raises
    :class:`KeyValueStoreInputError` (a ``ValueError``) and changes nothing.
    """

    def get(self, key: str) -> str | None:
        """Return the value at ``key``, or None when the key does not exist."""
        ...

    def set(self, key: str, value: str, expire_seconds: int | None = None) -> None:
        """Store ``value`` at ``key``, expiring after ``expire_seconds`` (None: never)."""
        ...

    def delete(self, key: str) -> bool:
        """Delete ``key``; return True when it existed."""
        ...

    def incr(self, key: str) -> int:
        """Add one to the integer at ``key`` (missing counts as 0); return the new value.

        Never retried after a timeout: that could count twice.

        Raises:
            KeyValueStoreDataError: the value at ``key`` is not an integer.
        """
        ...

    def expire(self, key: str, seconds: int) -> bool:
        """Set ``key`` to expire in ``seconds``; return False when the key does not exist."""
        ...

    def ttl(self, key: str) -> int:
        """Return the seconds left: -2 when the key does not exist, -1 when it never expires."""
        ...

    def exists(self, key: str) -> bool:
        """Return True when ``key`` exists."""
        ...

    def get_json(self, key: str) -> Any:
        """Return the JSON value at ``key`` decoded, or None when the key does not exist.

        Raises:
            KeyValueStoreDataError: the stored value is not JSON (the value is not echoed).
        """
        ...

    def set_json(self, key: str, value: JSONValue, expire_seconds: int | None = None) -> None:
        """Store ``value`` as JSON at ``key``, expiring after ``expire_seconds`` (None: never).

        Raises:
            KeyValueStoreInputError: JSON cannot hold ``value``; nothing is stored.
        """
        ...

    def hit(self, key: str, window_seconds: int) -> int:
        """Count one hit in the fixed window at ``key``; return the count in this window.

        Atomic and one round trip: the first hit of a window starts the counter and its
        expiry together, so a counter never outlives its window. Never retried after a
        timeout: that could count twice.
        """
        ...

    def health_check(self) -> bool:
        """Return True when the store answers; raise :class:`KeyValueStoreError` otherwise."""
        ...


# --- the asyncio twins: the same methods, awaited ---------------------------------------------


@runtime_checkable
class AsyncSecretStore(Protocol):
    """:class:`SecretStore` for asyncio."""

    async def get_secret(self, path: str) -> Mapping[str, Any]:
        """See :meth:`SecretStore.get_secret`."""
        ...

    async def health_check(self) -> bool:
        """See :meth:`SecretStore.health_check`."""
        ...


@runtime_checkable
class AsyncTransaction(Protocol):
    """:class:`Transaction` for asyncio: the handle an async ``transaction()`` yields."""

    async def execute(self, query: str, params: Params = ()) -> list[Row]:
        """See :meth:`Transaction.execute`."""
        ...

    async def execute_one(self, query: str, params: Params = ()) -> Row | None:
        """See :meth:`Transaction.execute_one`."""
        ...

    async def execute_scalar(self, query: str, params: Params = ()) -> Any:
        """See :meth:`Transaction.execute_scalar`."""
        ...


@runtime_checkable
class AsyncUserScopedDB(Protocol):
    """:class:`UserScopedDB` for asyncio."""

    async def execute(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> list[Row]:
        """See :meth:`UserScopedDB.execute`."""
        ...

    async def execute_one(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> Row | None:
        """See :meth:`UserScopedDB.execute_one`."""
        ...

    async def execute_scalar(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> Any:
        """See :meth:`UserScopedDB.execute_scalar`."""
        ...

    def transaction(
        self, user_id: UserId | None = None
    ) -> AbstractAsyncContextManager[AsyncTransaction]:
        """See :meth:`UserScopedDB.transaction`; ``async with``."""
        ...

    async def health_check(self) -> bool:
        """See :meth:`UserScopedDB.health_check`."""
        ...


@runtime_checkable
class AsyncAdminDB(Protocol):
    """:class:`AdminDB` for asyncio."""

    async def execute_admin(self, query: str, params: Params = ()) -> list[Row]:
        """See :meth:`AdminDB.execute_admin`."""
        ...

    def admin_transaction(self) -> AbstractAsyncContextManager[AsyncTransaction]:
        """See :meth:`AdminDB.admin_transaction`; ``async with``."""
        ...

    async def health_check(self) -> bool:
        """See :meth:`AdminDB.health_check`."""
        ...


@runtime_checkable
class AsyncKeyValueStore(Protocol):
    """:class:`KeyValueStore` for asyncio."""

    async def get(self, key: str) -> str | None:
        """See :meth:`KeyValueStore.get`."""
        ...

    async def set(self, key: str, value: str, expire_seconds: int | None = None) -> None:
        """See :meth:`KeyValueStore.set`."""
        ...

    async def delete(self, key: str) -> bool:
        """See :meth:`KeyValueStore.delete`."""
        ...

    async def incr(self, key: str) -> int:
        """See :meth:`KeyValueStore.incr`."""
        ...

    async def expire(self, key: str, seconds: int) -> bool:
        """See :meth:`KeyValueStore.expire`."""
        ...

    async def ttl(self, key: str) -> int:
        """See :meth:`KeyValueStore.ttl`."""
        ...

    async def exists(self, key: str) -> bool:
        """See :meth:`KeyValueStore.exists`."""
        ...

    async def get_json(self, key: str) -> Any:
        """See :meth:`KeyValueStore.get_json`."""
        ...

    async def set_json(
        self, key: str, value: JSONValue, expire_seconds: int | None = None
    ) -> None:
        """See :meth:`KeyValueStore.set_json`."""
        ...

    async def hit(self, key: str, window_seconds: int) -> int:
        """See :meth:`KeyValueStore.hit`."""
        ...

    async def health_check(self) -> bool:
        """See :meth:`KeyValueStore.health_check`."""
        ...
