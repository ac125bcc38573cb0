"""The Valkey adapter's errors, shared by every topology (and by the sync and async clients)::

    KeyValueStoreError
    └── ValkeyError                      also: authentication refused, client closed, other
        ├── ValkeyInputError             (KeyValueStoreInputError, ValueError) bad arguments
        ├── ValkeyDataError              (KeyValueStoreDataError) stored value of the wrong shape
        └── ValkeyUnavailableError       (KeyValueStoreUnavailableError) unreachable, timed out
"""

from __future__ import annotations

from crm_infra.errors import (
    KeyValueStoreDataError,
    KeyValueStoreError,
    KeyValueStoreInputError,
    KeyValueStoreUnavailableError,
)

__all__ = ["ValkeyDataError", "ValkeyError", "ValkeyInputError", "ValkeyUnavailableError"]


class ValkeyError(KeyValueStoreError):
    """A Valkey operation failed; the message names the operation and the key."""


class ValkeyInputError(ValkeyError, KeyValueStoreInputError):
    """Bad arguments, or a value JSON or UTF-8 cannot hold; nothing was sent or stored."""


class ValkeyDataError(ValkeyError, KeyValueStoreDataError):
    """The stored value has the wrong shape (not an integer, not JSON, not UTF-8 text)."""


class ValkeyUnavailableError(ValkeyError, KeyValueStoreUnavailableError):
    """Valkey could not be reached, or did not answer within the time budget."""
