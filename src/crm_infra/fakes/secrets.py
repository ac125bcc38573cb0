"""An in-memory :class:`SecretStore` with the Vault adapter's behaviour and errors, and its
asyncio face.

Use it in unit tests instead of a Vault server::

    store = InMemorySecretStore({"crm/database": {"url": "postgresql://app@db/crm"}})
    assert store.get_database_url() == "postgresql://app@db/crm"

    store = AsyncInMemorySecretStore({"crm/database": {"url": "postgresql://app@db/crm"}})
    assert await store.get_database_url() == "postgresql://app@db/crm"

The contract suite (``tests/contract/test_secret_store.py``) runs the same tests against this
fake and a real OpenBao server, which is what makes it safe to trust.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from crm_infra._twins import same_arguments_as
from crm_infra.errors import InvalidSecretError, SecretNotFoundError
from crm_infra.secret_paths import (
    DEFAULT_MOUNT_POINT,
    AsyncSecretLayoutMethods,
    SecretLayoutMethods,
    copy_secret_data,
    normalise_secret_data,
    validate_secret_path,
)

__all__ = ["AsyncInMemorySecretStore", "InMemorySecretStore"]


class InMemorySecretStore(SecretLayoutMethods):
    """Secrets held in a dict, read and written like Vault's KV v2 (latest version only).

    Also offers ``get_database_url()``, ``get_admin_database_url()``, ``get_valkey_url()`` and
    ``get_email_credentials()`` (:class:`~crm_infra.secret_paths.SecretLayoutMethods`).

    Args:
        secrets: path to secret fields, e.g. ``{"crm/valkey": {"url": "redis://..."}}``; the
            data is copied, as Vault would store it (a JSON round trip).
        mount_point: the mount paths are relative to; only used to refuse paths given in the
            API form (``secret/data/...``), exactly as the Vault adapter does.

    Raises:
        InvalidSecretPathError: a path in ``secrets`` is invalid.
        InvalidSecretError: secret data is not a str-keyed mapping of JSON values.
    """

    def __init__(
        self,
        secrets: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        mount_point: str = DEFAULT_MOUNT_POINT,
    ) -> None:
        self._mount_point = mount_point
        self._lock = threading.Lock()
        self._secrets: dict[str, dict[str, Any]] = {}
        self._deleted: set[str] = set()
        for path, data in (secrets or {}).items():
            self.put_secret(path, data)

    # --- the port ------------------------------------------------------------------------

    def get_secret(self, path: str) -> dict[str, Any]:
        """Return a copy of the latest version of the secret at ``path``.

        Raises:
            InvalidSecretPathError: the path is malformed; nothing was looked up.
            SecretNotFoundError: nothing at the path, or it was deleted (the message says which).
            InvalidSecretError: the secret has no fields.
        """
        validate_secret_path(path, mount_point=self._mount_point)
        with self._lock:
            if path in self._deleted:
                raise SecretNotFoundError(
                    f"secret not found at path {path!r}: its latest version was deleted"
                )
            data = self._secrets.get(path)
            if data is None:
                raise SecretNotFoundError(f"secret not found at path {path!r}")
            if not data:
                raise InvalidSecretError(f"secret {path!r} has no fields")
            return copy_secret_data(data)

    def health_check(self) -> bool:
        """Return True: an in-memory store is always reachable."""
        return True

    # --- test set-up -----------------------------------------------------------------------

    def put_secret(self, path: str, data: Mapping[str, Any]) -> None:
        """Write a new latest version of the secret at ``path`` (undoing a delete).

        Raises:
            InvalidSecretPathError: the path is malformed.
            InvalidSecretError: ``data`` is not a str-keyed mapping of JSON values.
        """
        validate_secret_path(path, mount_point=self._mount_point)
        stored = normalise_secret_data(path, data)
        with self._lock:
            self._secrets[path] = stored
            self._deleted.discard(path)

    def delete_secret(self, path: str) -> None:
        """Soft-delete the latest version at ``path``; later reads say it was deleted.

        Raises:
            InvalidSecretPathError: the path is malformed.
            SecretNotFoundError: there is no secret at ``path`` (a likely typo in a test).
        """
        validate_secret_path(path, mount_point=self._mount_point)
        with self._lock:
            if path not in self._secrets:
                raise SecretNotFoundError(f"secret not found at path {path!r}; nothing to delete")
            self._deleted.add(path)

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Do nothing; present so the fake can stand wherever the adapter is closed."""

    def __enter__(self) -> InMemorySecretStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        # Paths only: values are secrets.
        with self._lock:
            paths = sorted(p for p in self._secrets if p not in self._deleted)
        return f"InMemorySecretStore(paths={paths!r})"


class AsyncInMemorySecretStore(AsyncSecretLayoutMethods):
    """:class:`InMemorySecretStore` for asyncio code: the same secrets, checks and errors, awaited.

    Every method is the sync store's, behind ``async def``; none waits for anything, so a call
    never lets another task run in the middle of it. Also offers ``await
    store.get_database_url()``... (:class:`~crm_infra.secret_paths.AsyncSecretLayoutMethods`).

    The arguments are :class:`InMemorySecretStore`'s; :meth:`wrapping` gives the asyncio face
    of an existing sync store instead (both then hold the same secrets).

    Raises:
        InvalidSecretPathError: a path in ``secrets`` is invalid.
        InvalidSecretError: secret data is not a str-keyed mapping of JSON values.
    """

    @same_arguments_as(InMemorySecretStore.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._store = InMemorySecretStore(*args, **kwargs)

    @classmethod
    def wrapping(cls, store: InMemorySecretStore) -> AsyncInMemorySecretStore:
        """Return the asyncio face of ``store``: the same secrets, seen and changed by both."""
        face = cls()
        face._store = store
        return face

    @property
    def sync(self) -> InMemorySecretStore:
        """The sync store underneath (the same secrets), for synchronous set-up code."""
        return self._store

    async def get_secret(self, path: str) -> dict[str, Any]:
        """See :meth:`InMemorySecretStore.get_secret`."""
        return self._store.get_secret(path)

    async def health_check(self) -> bool:
        """Return True: an in-memory store is always reachable."""
        return self._store.health_check()

    async def put_secret(self, path: str, data: Mapping[str, Any]) -> None:
        """See :meth:`InMemorySecretStore.put_secret`."""
        self._store.put_secret(path, data)

    async def delete_secret(self, path: str) -> None:
        """See :meth:`InMemorySecretStore.delete_secret`."""
        self._store.delete_secret(path)

    async def close(self) -> None:
        """Do nothing; present so the fake can stand wherever the adapter is closed."""
        self._store.close()

    async def __aenter__(self) -> AsyncInMemorySecretStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Async{self._store!r}"
