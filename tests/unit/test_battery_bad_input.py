"""Hostile input to the in-memory fakes (the same cases run on real servers in integration)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from crm_infra.adapters import ValkeyClient
from crm_infra.fakes import InMemoryKeyValueStore, InMemorySecretStore
from tests.battery.bad_input import KeyValueBadInput, SecretBadInput
from tests.fixtures.openbao import TEST_SECRETS


class FakeSecrets:
    """The in-memory secret store holding the layout, written through ``put_secret``."""

    def __init__(self) -> None:
        self.store = InMemorySecretStore(TEST_SECRETS)

    def put(self, path: str, data: dict[str, Any]) -> None:
        self.store.put_secret(path, data)


class TestFakeKeyValueBadInput(KeyValueBadInput):
    @pytest.fixture
    def kv(self) -> Iterator[ValkeyClient]:
        with InMemoryKeyValueStore(key_prefix="app:") as store:
            yield store


class TestFakeSecretBadInput(SecretBadInput):
    @pytest.fixture
    def secret_backend(self) -> FakeSecrets:
        return FakeSecrets()
