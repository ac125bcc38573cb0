"""PostgreSQL errors: the adapter's classes and the one place psycopg errors are translated.

::

    PostgresError (DatabaseError)                 carries .sqlstate and .operation
    ├── PostgresIntegrityError (IntegrityError)   SQLSTATE class 23
    ├── PostgresRowSecurityError (RowSecurityError)   42501 raised by a policy check
    ├── PostgresNoRowsError (NoRowsError)         execute_scalar found no row
    ├── PostgresTransactionUsageError (TransactionUsageError)
    ├── PostgresUnsafeQueryError (UnsafeQueryError)   refused before any I/O
    ├── PostgresParamsError (TypeError)           params of the wrong kind for the placeholders
    ├── PostgresUnsafeRoleError (UnsafeRoleError)
    ├── PostgresTimeoutError (QueryTimeoutError)  57014, 55P03, the client's deadline
    ├── PostgresInputError (DatabaseInputError)   a parameter PostgreSQL text cannot hold
    ├── PostgresUnavailableError (DatabaseUnavailableError)   class 08, 57P0x, pool timeout
    │   └── PostgresCredentialsExpiredError (DatabaseCredentialsExpiredError)
    └── PostgresConfigError (ConfigError)         e.g. admin work without an admin URL

Messages never carry a password: psycopg puts the whole connection string into some errors
(a malformed URL, for one), so every message is scrubbed of the configured passwords and of
anything shaped like ``password=...`` or ``user:secret@``.

Nor does the chain of a raised error: psycopg's exception holds the connection (``pgconn``,
whose ``info`` and ``password`` give the password back) and the server's result (DETAIL, with
row values). The error's ``__cause__`` is a copy of psycopg's exception, of the same class, with
the scrubbed message and the diagnostics that name things (SQLSTATE, constraint, table, column,
source function) but no connection, no DETAIL, CONTEXT or internal query; its ``__context__`` is
empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import psycopg
from psycopg.pq import DiagnosticField
from psycopg_pool import PoolClosed, PoolTimeout

from crm_infra.errors import (
    ConfigError,
    DatabaseCredentialsExpiredError,
    DatabaseError,
    DatabaseInputError,
    DatabaseUnavailableError,
    InfraError,
    IntegrityError,
    NoRowsError,
    QueryTimeoutError,
    RowSecurityError,
    TransactionUsageError,
    UnsafeQueryError,
    UnsafeRoleError,
)
from crm_infra.redaction import one_line, password_of, raise_sanitized, redact, sanitized_copy

__all__ = [
    "PostgresConfigError",
    "PostgresCredentialsExpiredError",
    "PostgresError",
    "PostgresInputError",
    "PostgresIntegrityError",
    "PostgresNoRowsError",
    "PostgresParamsError",
    "PostgresRowSecurityError",
    "PostgresTimeoutError",
    "PostgresTransactionUsageError",
    "PostgresUnavailableError",
    "PostgresUnsafeQueryError",
    "PostgresUnsafeRoleError",
    "ResultLoadError",
    "input_error",
    "password_of",
    "raise_translated",
    "scrub",
    "translate_errors",
    "translate_input_errors",
    "unsendable_error",
]


class PostgresError(DatabaseError):
    """A PostgreSQL operation failed; ``sqlstate`` is the server's code when there is one."""

    def __init__(self, message: str, *, sqlstate: str | None = None, operation: str = "") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.operation = operation


class PostgresIntegrityError(PostgresError, IntegrityError):
    """A NOT NULL, UNIQUE, FOREIGN KEY, CHECK or exclusion constraint refused a write."""


class PostgresRowSecurityError(PostgresError, RowSecurityError):
    """A row-level security policy refused a write (another user's row, or no user at all)."""


class PostgresNoRowsError(PostgresError, NoRowsError):
    """``execute_scalar`` found no row."""


class PostgresTransactionUsageError(PostgresError, TransactionUsageError):
    """A transaction was used in a way that cannot be honoured safely."""


class PostgresUnsafeQueryError(PostgresError, UnsafeQueryError):
    """User-scoped SQL refused before any I/O: not one data statement, or one that could act
    beyond its user and call. The message names the construct as it was written."""


class PostgresParamsError(PostgresError, TypeError):
    """Parameters of the wrong kind for the placeholders (a str, a mapping for ``%s``...);
    nothing was sent, and a transaction goes on as if the call had not been made."""


class PostgresUnsafeRoleError(PostgresError, UnsafeRoleError):
    """The user-facing role could bypass row-level security; the client refused to start."""


class PostgresTimeoutError(PostgresError, QueryTimeoutError):
    """A statement or lock timeout ran out."""


class PostgresInputError(PostgresError, DatabaseInputError):
    """A parameter PostgreSQL text cannot hold (a NUL byte, a lone surrogate); nothing was sent."""


def input_error(operation: str) -> PostgresInputError:
    """Return the error for a parameter that cannot be encoded as UTF-8 text."""
    return PostgresInputError(
        f"{operation} failed: a parameter cannot be encoded as UTF-8 text (a lone surrogate?); "
        "nothing was sent",
        operation=operation,
    )


def unsendable_error(operation: str, exc: ValueError) -> PostgresInputError:
    """Return the error for a parameter psycopg cannot turn into text (an int of over 4300
    digits: Python's own limit)."""
    return PostgresInputError(
        f"{operation} failed: a parameter cannot be sent ({exc}); nothing was sent",
        operation=operation,
    )


class PostgresUnavailableError(PostgresError, DatabaseUnavailableError):
    """The server is unreachable, went away, or no pooled connection became free in time."""


class PostgresCredentialsExpiredError(PostgresUnavailableError, DatabaseCredentialsExpiredError):
    """The pool's short-lived credentials from Vault ended and could be neither renewed nor
    replaced; new ones are asked for in the background, and calls work again once they come."""


class PostgresConfigError(PostgresError, ConfigError):
    """The client was configured in a way that cannot serve the call."""


scrub = redact
"""Mask passwords in a message: :func:`crm_infra.redaction.redact` (the adapter's name for it)."""


# Where the server raises a policy's refusal (WITH CHECK, and USING for ON CONFLICT UPDATE).
# The source function travels with every server error and, unlike the message, is never
# translated by lc_messages; other 42501 errors (permission denied) come from elsewhere.
_POLICY_CHECK_FUNCTION = "ExecWithCheckOptions"


def _is_policy_violation(exc: psycopg.Error) -> bool:
    source = exc.diag.source_function
    if source is not None:
        return bool(source == _POLICY_CHECK_FUNCTION)
    # A server (or proxy) that leaves the source out: the English text is all there is.
    return "row-level security" in str(exc.diag.message_primary or "")


class ResultLoadError(psycopg.InterfaceError):
    """A value in a statement's result that psycopg cannot load into Python (a date past the
    year 9999, ``infinity``...). The statement itself ran: not an input error."""

    @classmethod
    def wrap(cls, exc: psycopg.DataError) -> ResultLoadError:
        return cls(
            "the statement ran (outside a transaction block, its writes are committed), but "
            f"its result holds a value Python cannot load: {exc}"
        )


def _classify(exc: psycopg.Error) -> type[PostgresError]:
    state = exc.sqlstate or ""
    cls: type[PostgresError] = PostgresError
    if isinstance(exc, PoolTimeout):
        cls = PostgresUnavailableError
    elif isinstance(exc, PoolClosed):
        cls = PostgresError
    elif isinstance(exc, psycopg.DataError) and not state:
        cls = PostgresInputError  # refused client-side, e.g. a NUL byte in text
    elif state.startswith("23"):
        cls = PostgresIntegrityError
    elif state == "42501" and _is_policy_violation(exc):
        cls = PostgresRowSecurityError
    elif state in {"57014", "55P03"}:
        cls = PostgresTimeoutError
    elif state.startswith("08") or state in {"57P01", "57P02", "57P03"}:
        cls = PostgresUnavailableError
    elif not state and isinstance(exc, psycopg.OperationalError):
        cls = PostgresUnavailableError  # connection failures carry no SQLSTATE
    return cls


def _message(exc: psycopg.Error) -> str:
    # The primary message names the constraint or policy; DETAIL (row values) stays out of it.
    primary = exc.diag.message_primary if exc.sqlstate else None
    return primary or str(exc).strip() or type(exc).__name__


# What the chained copy of a server error keeps of its diagnostics: the fields that name things.
# Not DETAIL (row values: "Key (email)=(...)"), CONTEXT or the internal query (SQL with values).
_KEPT_DIAGNOSTICS = (
    DiagnosticField.SEVERITY,
    DiagnosticField.SEVERITY_NONLOCALIZED,
    DiagnosticField.SQLSTATE,
    DiagnosticField.MESSAGE_PRIMARY,
    DiagnosticField.MESSAGE_HINT,
    DiagnosticField.STATEMENT_POSITION,
    DiagnosticField.SCHEMA_NAME,
    DiagnosticField.TABLE_NAME,
    DiagnosticField.COLUMN_NAME,
    DiagnosticField.DATATYPE_NAME,
    DiagnosticField.CONSTRAINT_NAME,
    DiagnosticField.SOURCE_FILE,
    DiagnosticField.SOURCE_LINE,
    DiagnosticField.SOURCE_FUNCTION,
)


def _driver_copy(exc: psycopg.Error, text: str, secrets: Iterable[str | None]) -> psycopg.Error:
    """Return psycopg's error again, safe to chain: see the module's docstring."""
    info: dict[DiagnosticField, bytes] = {}
    if exc.sqlstate:
        diag = exc.diag
        for field in _KEPT_DIAGNOSTICS:
            value = getattr(diag, field.name.lower())
            if value is not None:
                info[field] = redact(str(value), secrets).encode()
    return sanitized_copy(exc, secrets, message=text, info=info or None)


def raise_translated(exc: psycopg.Error, operation: str, secrets: Iterable[str | None]) -> NoReturn:
    """Raise the :class:`PostgresError` class for ``exc``, its message scrubbed and on one line.

    Raises:
        PostgresError: or a subclass, chained to a copy of ``exc`` that holds no connection,
            no password and no row values (``__context__`` empty).
    """
    cls = _classify(exc)
    text = redact(one_line(_message(exc)), secrets)
    state = exc.sqlstate
    suffix = f" (SQLSTATE {state})" if state else ""
    error = cls(f"{operation} failed: {text}{suffix}", sqlstate=state, operation=operation)
    raise_sanitized(error, _driver_copy(exc, text, secrets))


@contextmanager
def translate_errors(operation: str, secrets: Iterable[str | None] = ()) -> Iterator[None]:
    """Turn psycopg and pool errors raised in the block into :class:`PostgresError` classes.

    Args:
        operation: what was being done, for the message (e.g. ``execute: SELECT ...``).
        secrets: passwords to scrub from every message.

    Raises:
        PostgresError: see :func:`raise_translated`.
    """
    try:
        yield
    except InfraError:
        raise
    except psycopg.Error as exc:
        raise_translated(exc, operation, secrets)


@contextmanager
def translate_input_errors(operation: str) -> Iterator[None]:
    """Around a call that turns parameters into text: what it cannot turn is an input error.

    Only there: a ValueError of the caller's own (in an ``admin_transaction()`` body, say)
    passes through as it is.

    Raises:
        PostgresInputError: a parameter cannot be encoded or written as text.
    """
    try:
        yield
    except InfraError:
        raise
    except UnicodeEncodeError:
        # Not chained: the codec error holds the whole value (.object), which may be secret.
        raise_sanitized(input_error(operation), None)
    except ValueError as exc:
        raise_sanitized(unsendable_error(operation, exc), sanitized_copy(exc))
