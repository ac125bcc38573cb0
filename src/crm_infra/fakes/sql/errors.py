"""The error the in-memory database fake adds: SQL it cannot run faithfully, by name."""

from __future__ import annotations

from crm_infra.errors import UnsupportedQueryError

__all__ = ["TEST_AGAINST_PG", "UnparsableQueryError", "refuse"]

TEST_AGAINST_PG = "test that query against PostgreSQL"


class UnparsableQueryError(UnsupportedQueryError):
    """SQL that PostgreSQL's grammar accepts but the fake's translator cannot parse.

    Syntax errors are told by PostgreSQL's own grammar first (as ``PostgresClient`` tells
    them, a plain ``DatabaseError`` that aborts a transaction); this is only what the fake
    cannot run, which leaves a transaction going on, as PostgreSQL would run it.
    """


def refuse(construct: str) -> UnsupportedQueryError:
    """Return the error for SQL the fake cannot run faithfully, naming the construct."""
    return UnsupportedQueryError(
        f"the in-memory database fake does not support {construct}; {TEST_AGAINST_PG} "
        "(an integration or contract test with the real database)"
    )
