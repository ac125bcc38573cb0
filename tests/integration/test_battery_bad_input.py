"""Hostile input to the real adapters on real servers (the fakes run the same cases)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from crm_infra.adapters import PostgresClient, ValkeyClient, VaultClient
from crm_infra.devservers.openbao import OpenBaoServer
from tests.battery.bad_input import DatabaseBadInput, KeyValueBadInput, SecretBadInput
from tests.fixtures.openbao import VaultMount


class RealSecrets:
    """A VaultClient on the test's own mount; writes go through the root token."""

    def __init__(self, store: VaultClient, mount: VaultMount) -> None:
        self.store = store
        self._mount = mount

    def put(self, path: str, data: dict[str, Any]) -> None:
        self._mount.put(path, data)


class TestValkeyBadInput(KeyValueBadInput):
    @pytest.fixture
    def kv(self, valkey_url: str) -> Iterator[ValkeyClient]:
        with ValkeyClient(valkey_url, key_prefix=f"b{uuid.uuid4().hex[:8]}:") as store:
            yield store


class TestVaultBadInput(SecretBadInput):
    @pytest.fixture
    def secret_backend(
        self, openbao_server: OpenBaoServer, vault_mount: VaultMount
    ) -> Iterator[RealSecrets]:
        with VaultClient(
            openbao_server.addr, openbao_server.token, mount_point=vault_mount.name, timeout=30
        ) as client:
            yield RealSecrets(client, vault_mount)


class TestPostgresBadInput(DatabaseBadInput):
    @pytest.fixture
    def db(self, pg_db: PostgresClient) -> PostgresClient:
        return pg_db
