"""The error the in-memory database fake adds: SQL it cannot run faithfully, by name."""

from __future__ import annotations

from crm_infra.errors import UnsupportedQueryError

__all__ = ["TEST_AGAINST_PG", "UnparsableQueryError", "refuse"]

TEST_AGAINST_PG = "test that query against PostgreSQL"


class UnparsableQueryError(UnsupportedQueryError):
    """SQL the fake cannot parse: most likely a syntax error, so it aborts a transaction.

    PostgreSQL parses a whole message before running any of it and aborts the transaction
    it was sent in; a statement that PostgreSQL would run is still best tested against it.
    """


def refuse(construct: str) -> UnsupportedQueryError:
    """Return the error for SQL the fake cannot run faithfully, naming the construct."""
    return UnsupportedQueryError(
        f"the in-memory database fake does not support {construct}; {TEST_AGAINST_PG} "
        "(an integration or contract test with the real database)"
    )
