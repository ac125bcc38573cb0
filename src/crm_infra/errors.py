"""The error tree of crm-infra.

Every error the package raises is an :class:`InfraError`. Each port has one family; the real
adapters subclass those families (``VaultError``, ``PostgresError``, ``ValkeyError``) and the
fakes raise the same port-level classes, so domain code catches port-level errors only and never
imports hvac, psycopg or redis. Where a builtin means the same thing, the error subclasses it too.

::

    InfraError
    ├── ConfigError (ValueError)                  settings that cannot work
    ├── InvalidUserIdError (ValueError)           a user id that is not a UUID
    ├── MissingUserContextError (LookupError)     no user id given and none in context
    ├── BackendUnavailableError                   marker: unreachable, sealed, timed out
    ├── SecretStoreError
    │   ├── InvalidSecretPathError (ValueError)
    │   ├── SecretNotFoundError (LookupError)
    │   ├── InvalidSecretError                    a field missing or malformed
    │   ├── SecretAccessDeniedError               the token lacks permission for the path
    │   ├── SecretStoreAuthError                  the token is invalid, expired or revoked
    │   └── SecretStoreUnavailableError (BackendUnavailableError)
    ├── DatabaseError
    │   ├── IntegrityError                        NOT NULL, UNIQUE, FOREIGN KEY, CHECK
    │   ├── DatabaseInputError (ValueError)       a parameter text cannot hold (NUL, surrogate)
    │   ├── RowSecurityError                      a write that row-level security refuses
    │   ├── NoRowsError (ValueError)              execute_scalar found no row
    │   ├── TransactionUsageError                 e.g. nesting a transaction for another user
    │   ├── UnsafeQueryError (ValueError)         user-scoped SQL that is not one data statement
    │   ├── UnsupportedQueryError                 SQL the in-memory fake cannot run faithfully
    │   ├── MigrationError                        a migration failed or was edited after applying
    │   ├── UnsafeRoleError                       a user-facing role that would bypass RLS
    │   ├── QueryTimeoutError                     a statement or deadline ran out
    │   └── DatabaseUnavailableError (BackendUnavailableError)
    │       └── DatabaseCredentialsExpiredError   Vault's credentials ended, not renewed
    └── KeyValueStoreError
        ├── KeyValueStoreInputError (ValueError)  bad arguments, values JSON cannot hold
        ├── KeyValueStoreDataError                a stored value of the wrong shape
        └── KeyValueStoreUnavailableError (BackendUnavailableError)

Messages name the path, key or operation that failed and never a secret value, token or password.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "ConfigError",
    "DatabaseCredentialsExpiredError",
    "DatabaseError",
    "DatabaseInputError",
    "DatabaseUnavailableError",
    "InfraError",
    "IntegrityError",
    "InvalidSecretError",
    "InvalidSecretPathError",
    "InvalidUserIdError",
    "KeyValueStoreDataError",
    "KeyValueStoreError",
    "KeyValueStoreInputError",
    "KeyValueStoreUnavailableError",
    "MigrationError",
    "MissingUserContextError",
    "NoRowsError",
    "QueryTimeoutError",
    "RowSecurityError",
    "SecretAccessDeniedError",
    "SecretNotFoundError",
    "SecretStoreAuthError",
    "SecretStoreError",
    "SecretStoreUnavailableError",
    "TransactionUsageError",
    "UnsafeQueryError",
    "UnsafeRoleError",
    "UnsupportedQueryError",
]


class InfraError(Exception):
    """Base of every error raised by crm-infra."""


class ConfigError(InfraError, ValueError):
    """Settings that cannot work; the message lists every problem found."""


class InvalidUserIdError(InfraError, ValueError):
    """A user id that is not a UUID (the empty string included)."""


class MissingUserContextError(InfraError, LookupError):
    """A user-scoped operation ran with no user id given and none set in ``user_context``."""


class BackendUnavailableError(InfraError):
    """A backend could not be reached, is sealed, or did not answer in time.

    Each port family has its own subclass; catch this one to treat any outage alike
    (for example to answer HTTP 503).
    """


# --- secrets ---------------------------------------------------------------------------------


class SecretStoreError(InfraError):
    """A secret could not be read."""


class InvalidSecretPathError(SecretStoreError, ValueError):
    """A secret path that is malformed or could escape the secrets mount; no request was sent."""


class SecretNotFoundError(SecretStoreError, LookupError):
    """No secret at the path, or its latest version was deleted or destroyed."""


class InvalidSecretError(SecretStoreError):
    """A secret exists but a field is missing or malformed (for example a wrong URL scheme)."""


class SecretAccessDeniedError(SecretStoreError):
    """The credentials are valid but their policy does not allow reading the path."""


class SecretStoreAuthError(SecretStoreError):
    """The credentials are invalid, expired or revoked."""


class SecretStoreUnavailableError(SecretStoreError, BackendUnavailableError):
    """The secret store is unreachable, sealed, or did not answer in time."""


# --- database --------------------------------------------------------------------------------


class DatabaseError(InfraError):
    """A database operation failed."""


class DatabaseInputError(DatabaseError, ValueError):
    """A parameter the database cannot hold (a NUL byte or a lone surrogate in text); nothing
    was stored."""


class IntegrityError(DatabaseError):
    """A NOT NULL, UNIQUE, FOREIGN KEY or CHECK constraint refused a write."""


class RowSecurityError(DatabaseError):
    """Row-level security refused a write (a row for another user, or no user at all)."""


class NoRowsError(DatabaseError, ValueError):
    """``execute_scalar`` found no row to take a value from."""


class TransactionUsageError(DatabaseError):
    """A transaction was used in a way that cannot be honoured safely.

    For example: nesting ``transaction()`` for a different user than the enclosing one.
    """


class UnsafeQueryError(DatabaseError, ValueError):
    """User-scoped SQL refused before any I/O: not exactly one data statement (SELECT, INSERT,
    UPDATE, DELETE, MERGE), or one that could act beyond its own user and call (set the user,
    change the session, run SQL text). The message names the construct as it was written."""


class UnsupportedQueryError(DatabaseError):
    """SQL that the in-memory fake cannot run faithfully; test that query against PostgreSQL."""


class MigrationError(DatabaseError):
    """A migration failed, an applied migration file was edited, or the RLS audit found gaps."""


class UnsafeRoleError(DatabaseError):
    """The role used for user-facing work could bypass row-level security."""


class QueryTimeoutError(DatabaseError):
    """A statement timeout or the client's own deadline ran out."""


class DatabaseUnavailableError(DatabaseError, BackendUnavailableError):
    """The database is unreachable, or no pooled connection became free in time."""


class DatabaseCredentialsExpiredError(DatabaseUnavailableError):
    """The short-lived database credentials from Vault ended and could be neither renewed nor
    replaced (Vault unreachable, or refusing); the client recovers once Vault issues new ones."""


# --- key-value -------------------------------------------------------------------------------


class KeyValueStoreError(InfraError):
    """A key-value operation failed."""


class KeyValueStoreInputError(KeyValueStoreError, ValueError):
    """Bad arguments (e.g. ``expire_seconds <= 0``) or a value that JSON cannot hold."""


class KeyValueStoreDataError(KeyValueStoreError):
    """A stored value has the wrong shape (not JSON, not an integer)."""


class KeyValueStoreUnavailableError(KeyValueStoreError, BackendUnavailableError):
    """The key-value store is unreachable or did not answer in time."""
