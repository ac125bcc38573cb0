"""Secret path validation, the secret-data helpers and the layout: pure logic, no server."""

from __future__ import annotations

import pytest

from crm_infra import InvalidSecretError, InvalidSecretPathError, SecretNotFoundError
from crm_infra.fakes import InMemorySecretStore
from crm_infra.secret_paths import (
    DATABASE_PATH,
    EMAIL_PATH,
    MAX_PATH_LENGTH,
    PATH_PREFIX,
    VALKEY_PATH,
    EmailCredentials,
    SecretLayoutMethods,
    copy_secret_data,
    is_flat,
    layout,
    normalise_secret_data,
    read_policy,
    validate_mount_point,
    validate_secret_path,
)
from tests.fixtures.secret_paths import BAD_PATHS, GOOD_PATHS


@pytest.mark.parametrize("path", GOOD_PATHS)
def test_a_good_path_is_returned_unchanged(path: str) -> None:
    assert validate_secret_path(path) == path


@pytest.mark.parametrize("path", list(BAD_PATHS.values()), ids=list(BAD_PATHS))
def test_a_bad_path_is_an_invalid_path_and_a_value_error(path: str) -> None:
    with pytest.raises(InvalidSecretPathError) as info:
        validate_secret_path(path)
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, SecretNotFoundError)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/crm/x", "leading '/'"),
        ("crm/x/", "empty segment"),
        ("crm//x", "empty segment"),
        ("crm/../x", "'..' segment"),
        ("./x", "'.' segment"),
        ("crm/\x00", "control"),
        ("crm/\u200b", "control or format"),
        ("crm/%2e%2e", "character outside"),
        ("x" * (MAX_PATH_LENGTH + 1), "longer than 512"),
        ("secret/data/crm/x", "API prefix"),
    ],
)
def test_the_message_says_why(path: str, reason: str) -> None:
    with pytest.raises(InvalidSecretPathError, match=reason):
        validate_secret_path(path)


def test_control_characters_are_escaped_in_the_message() -> None:
    with pytest.raises(InvalidSecretPathError) as info:
        validate_secret_path("crm/a\nb\x1b[31m")
    message = str(info.value)
    assert "\n" not in message
    assert "\x1b" not in message
    assert "\\n" in message


def test_the_api_prefix_is_refused_for_the_given_mount_too() -> None:
    with pytest.raises(InvalidSecretPathError, match="'crm/x'"):
        validate_secret_path("kv/data/crm/x", mount_point="kv")
    assert validate_secret_path("kv/data/crm/x") == "kv/data/crm/x"  # another mount's path


def test_a_caller_chosen_error_class_is_raised() -> None:
    class Mine(InvalidSecretPathError):
        pass

    with pytest.raises(Mine):
        validate_secret_path("..", error=Mine)


@pytest.mark.parametrize("value", [None, 3, b"crm/x", ["crm", "x"]])
def test_a_non_string_path_names_its_type(value: object) -> None:
    with pytest.raises(InvalidSecretPathError, match=type(value).__name__):
        validate_secret_path(value)


def test_flat_data_is_copied_shallowly_and_nested_data_deeply() -> None:
    flat = {"a": "1", "b": 2, "c": None, "d": True, "e": 1.5}
    assert is_flat(flat)
    copied = copy_secret_data(flat)
    assert copied == flat
    assert copied is not flat
    nested = {"l": [1, {"x": "y"}]}
    assert not is_flat(nested)
    deep = copy_secret_data(nested)
    deep["l"][1]["x"] = "changed"
    assert nested == {"l": [1, {"x": "y"}]}


def test_normalise_makes_a_json_round_trip() -> None:
    data = {"t": (1, 2), "n": {"k": "v"}}
    stored = normalise_secret_data("p", data)
    assert stored == {"t": [1, 2], "n": {"k": "v"}}
    assert stored["n"] is not data["n"]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("not a mapping", "must be a mapping"),
        ({1: "v"}, "int key"),
        ({"k": b"bytes"}, "JSON cannot"),
        ({"k": float("nan")}, "JSON cannot"),
        ({"k": {1, 2}}, "JSON cannot"),
    ],
)
def test_normalise_refuses_what_vault_cannot_store(data: object, match: str) -> None:
    with pytest.raises(InvalidSecretError, match=match):
        normalise_secret_data("p", data)


# --- the layout, written once --------------------------------------------------------------


def _layout() -> dict[str, dict[str, str]]:
    return layout(
        database_url="postgresql://app@db/crm",
        admin_database_url="postgresql://admin@db/crm",
        valkey_url="redis://kv:6379/0",
        email_api_key="key",
        email_from_address="crm@example.com",
    )


def test_the_layout_is_what_the_accessors_read() -> None:
    store = InMemorySecretStore(_layout())
    assert store.get_database_url() == "postgresql://app@db/crm"
    assert store.get_admin_database_url() == "postgresql://admin@db/crm"
    assert store.get_valkey_url() == "redis://kv:6379/0"
    assert store.get_email_credentials() == EmailCredentials("crm@example.com", "key")
    assert set(_layout()) == {DATABASE_PATH, VALKEY_PATH, EMAIL_PATH}
    assert all(path.startswith(PATH_PREFIX) for path in _layout())


def test_the_read_policy_covers_the_layout_under_the_mount() -> None:
    policy = read_policy("team/kv")
    assert f'path "team/kv/data/{PATH_PREFIX}*"' in policy
    assert '["read"]' in policy


class _Invalid(InvalidSecretError):
    """A store's own class for a bad field."""


class _Store(SecretLayoutMethods):
    invalid_secret_error = _Invalid

    def get_secret(self, path: str) -> dict[str, str]:
        return {"url": "mysql://x", "admin_url": "", "api_key": "k", "from_address": "nobody"}

    def health_check(self) -> bool:
        return True


@pytest.mark.parametrize(
    "method",
    ["get_database_url", "get_admin_database_url", "get_valkey_url", "get_email_credentials"],
)
def test_the_layout_methods_raise_the_stores_own_class(method: str) -> None:
    with pytest.raises(_Invalid):
        getattr(_Store(), method)()


@pytest.mark.parametrize("mount", ["secret", "team/kv", "kv-v2"])
def test_a_mount_point_follows_the_rules_of_a_path(mount: str) -> None:
    assert validate_mount_point(mount) == mount


@pytest.mark.parametrize("mount", ["", "/secret", "secret/", "../sys", "a b", "kv%2f"])
def test_a_bad_mount_point_is_refused(mount: str) -> None:
    with pytest.raises(InvalidSecretPathError, match="invalid KV mount point"):
        validate_mount_point(mount)
