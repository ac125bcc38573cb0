"""Type-check only: both key-value implementations satisfy the KeyValueStore port."""

from __future__ import annotations

from crm_infra.adapters import ValkeyClient
from crm_infra.fakes import InMemoryKeyValueStore
from crm_infra.ports import KeyValueStore


def check(url: str) -> None:
    real: KeyValueStore = ValkeyClient(url)
    fake: KeyValueStore = InMemoryKeyValueStore(key_prefix="t:")
