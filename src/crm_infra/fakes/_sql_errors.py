"""The one error the in-memory database fake adds: SQL it cannot run faithfully, by name."""

from __future__ import annotations

from crm_infra.errors import UnsupportedQueryError

__all__ = ["TEST_AGAINST_PG", "refuse"]

TEST_AGAINST_PG = "test that query against PostgreSQL"


def refuse(construct: str) -> UnsupportedQueryError:
    """Return the error for SQL the fake cannot run faithfully, naming the construct."""
    return UnsupportedQueryError(
        f"the in-memory database fake does not support {construct}; {TEST_AGAINST_PG} "
        "(an integration or contract test with the real database)"
    )
