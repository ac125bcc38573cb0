"""One module masks secrets for every other: text, URLs, reports and raised exceptions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from crm_infra import health
from crm_infra.adapters.postgres import errors as postgres_errors
from crm_infra.adapters.valkey import client as valkey_client
from crm_infra.redaction import (
    one_line,
    password_of,
    raise_sanitized,
    redact,
    redact_address,
    redact_url,
    sanitized_copy,
    short_error,
)

SECRET = "MARKER-s3cret"


def test_the_older_names_are_the_same_functions() -> None:
    assert health.redact is redact
    assert health.redact_address is redact_address
    assert health.short_error is short_error
    assert postgres_errors.scrub is redact
    assert postgres_errors.password_of is password_of
    assert valkey_client.redact_url is redact_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://app:MARKER@db/crm", "postgresql://app:***@db/crm"),
        ("host=db password='two MARKER words' user=app", "host=db password=*** user=app"),
        ("secret_id = MARKER, next", "secret_id = *** next"),
        ("{'password': 'MARKER', 'port': 6379}", "{'password': ***, 'port': 6379}"),
        ('{"client_token": "MARKER"}', '{"client_token": ***}'),
        ("{'X-Vault-Token': 'MARKER'}", "{'X-Vault-Token': ***}"),
        ("checking the token failed: the token is invalid", None),
        ("api_key=MARKER", "api_key=***"),
    ],
)
def test_redact_masks_secret_shaped_values(text: str, expected: str | None) -> None:
    assert redact(text) == (text if expected is None else expected)


def test_redact_masks_known_secrets_also_percent_encoded() -> None:
    secret = "p@ss/w#rd"
    text = f"bad URL postgres://u:p%40ss%2Fw%23rd@h/x, and {secret} again"
    shown = redact(text, [secret, None, ""])
    assert "p%40ss" not in shown
    assert secret not in shown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "failed: Connection refused\n\tIs the server running on that host?",
            "failed: Connection refused; Is the server running on that host?",
        ),
        ("1 error occurred:\n\t* permission denied\n\n", "1 error occurred: permission denied"),
        ("2 errors occurred:\n\t* one\n\t* two\n", "2 errors occurred: one; two"),
        ("  plain   text ", "plain text"),
        ("", ""),
    ],
)
def test_one_line_keeps_the_structure_of_a_multi_line_message(text: str, expected: str) -> None:
    assert one_line(text) == expected


def test_short_error_may_show_another_message_and_any_length() -> None:
    exc = RuntimeError(f"password={SECRET}")
    assert short_error(exc, message="x" * 500, limit=None) == "RuntimeError: " + "x" * 500
    assert short_error(exc, limit=20).endswith("…")
    assert len(short_error(exc, limit=20)) == 20
    assert SECRET not in short_error(exc)
    assert short_error(RuntimeError(SECRET), [SECRET]) == "RuntimeError: ***"


class _Driver(Exception):
    """A driver's error that holds its connection, as psycopg's and requests' do."""

    def __init__(self, message: str, connection: object = None) -> None:
        super().__init__(message)
        self.connection = connection


class _Picky(Exception):
    """A driver's error whose constructor takes more than a message."""

    def __init__(self, message: str, doc: str, pos: int) -> None:
        super().__init__(message, doc, pos)
        self.doc = doc


def test_a_sanitized_copy_keeps_the_class_and_the_masked_message_only() -> None:
    original = _Driver(f"failed:\n  postgresql://u:{SECRET}@h/db", {"password": SECRET})
    original.__cause__ = OSError(SECRET)
    copy = sanitized_copy(original)
    assert type(copy) is _Driver
    assert str(copy) == "failed: postgresql://u:***@h/db"
    assert copy.connection is None
    assert copy.__cause__ is None
    assert copy.__context__ is None
    assert copy.__traceback__ is None


def test_a_sanitized_copy_of_a_picky_class_is_a_bare_instance() -> None:
    copy = sanitized_copy(_Picky("bad", SECRET, 3), message="cannot decode")
    assert type(copy) is _Picky
    assert copy.args == ("cannot decode",)
    assert not hasattr(copy, "doc")


@contextmanager
def _translating() -> Iterator[None]:
    """An adapter's boundary, written as adapters write it: raise while handling."""
    try:
        yield
    except _Driver as exc:
        raise_sanitized(ValueError("ours"), sanitized_copy(exc))


def test_raise_sanitized_leaves_the_original_out_of_the_chain() -> None:
    with pytest.raises(ValueError, match="ours") as info, _translating():
        raise _Driver("boom", connection=SECRET)
    error = info.value
    assert isinstance(error.__cause__, _Driver)
    assert error.__cause__.connection is None
    assert error.__context__ is None
    assert error.__suppress_context__


def _load(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:  # holds the whole document (.doc)
        raise_sanitized(KeyError("not JSON"), None)


def test_raise_sanitized_without_a_cause_leaves_no_chain_at_all() -> None:
    with pytest.raises(KeyError) as info:
        _load(f"not json {SECRET}")
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("http://user:MARKER-pw@127.0.0.1:8200", "http://***@127.0.0.1:8200"),
        ("not a url password=MARKER", "not a url password=***"),
    ],
)
def test_redact_address(address: str, shown: str) -> None:
    assert redact_address(address) == shown
