"""Hostile input to the in-memory database fake (the same cases run on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crm_infra.fakes import InMemoryUserScopedDB
from tests.battery.bad_input import DatabaseBadInput


class TestFakeDatabaseBadInput(DatabaseBadInput):
    @pytest.fixture
    def db(self) -> Iterator[InMemoryUserScopedDB]:
        with InMemoryUserScopedDB() as fake:
            yield fake
