"""What only the in-memory secret store has: its set-up methods, repr and lifecycle."""

from __future__ import annotations

import pytest

from crm_infra import InvalidSecretError, InvalidSecretPathError, SecretNotFoundError
from crm_infra.fakes import InMemorySecretStore


def test_an_empty_store_has_nothing() -> None:
    with pytest.raises(SecretNotFoundError):
        InMemorySecretStore().get_secret("crm/database")


def test_the_initial_mapping_is_copied() -> None:
    initial = {"crm/valkey": {"url": "redis://h"}}
    store = InMemorySecretStore(initial)
    initial["crm/valkey"]["url"] = "changed"
    assert store.get_valkey_url() == "redis://h"


def test_an_invalid_initial_path_is_refused() -> None:
    with pytest.raises(InvalidSecretPathError):
        InMemorySecretStore({"/crm/valkey": {"url": "redis://h"}})


def test_put_refuses_data_vault_could_not_hold() -> None:
    store = InMemorySecretStore()
    with pytest.raises(InvalidSecretError, match="JSON"):
        store.put_secret("crm/x", {"k": object()})
    with pytest.raises(SecretNotFoundError):
        store.get_secret("crm/x")


def test_deleting_a_missing_secret_is_an_error() -> None:
    with pytest.raises(SecretNotFoundError, match="nothing to delete"):
        InMemorySecretStore().delete_secret("crm/x")


def test_repr_lists_paths_but_no_values() -> None:
    store = InMemorySecretStore({"crm/email": {"api_key": "marker-key-123", "from_address": "a@b"}})
    store.put_secret("crm/gone", {"k": "v"})
    store.delete_secret("crm/gone")
    text = repr(store)
    assert "crm/email" in text
    assert "crm/gone" not in text
    assert "marker-key-123" not in text


def test_it_is_a_context_manager() -> None:
    with InMemorySecretStore({"crm/x": {"k": "v"}}) as store:
        assert store.get_secret("crm/x") == {"k": "v"}
    store.close()
