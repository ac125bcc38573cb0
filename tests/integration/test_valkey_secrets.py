"""A Valkey password never shows in reprs, messages, tracebacks or the errors' chains."""

from __future__ import annotations

import traceback
from collections.abc import Iterator

import pytest

from crm_infra.adapters import ValkeyClient, ValkeyError
from crm_infra.devservers.valkey import ValkeyDevServer
from tests.battery.leaks import reachable_texts
from tests.fixtures.valkey import running_valkey

PASSWORD = "m4rker-Pa55word-7f3a"


@pytest.fixture
def locked_valkey() -> Iterator[ValkeyDevServer]:
    with running_valkey(password=PASSWORD) as server:
        yield server


def _full_text(error: BaseException) -> str:
    """The printed traceback and everything the exception and its chain hold."""
    reachable = (text for _, text in reachable_texts(error))
    return "".join(traceback.format_exception(error)) + "\n".join(reachable)


def test_the_password_opens_the_server(locked_valkey: ValkeyDevServer) -> None:
    with ValkeyClient(locked_valkey.url) as kv:
        kv.set("k", "v")
        assert kv.get("k") == "v"


def test_reprs_hide_the_password(locked_valkey: ValkeyDevServer) -> None:
    with ValkeyClient(locked_valkey.url, key_prefix="p:") as kv:
        assert PASSWORD not in repr(kv)
        assert "***" in repr(kv)
    assert PASSWORD not in repr(locked_valkey)
    assert PASSWORD in locked_valkey.url  # the one place it must be


def test_a_wrong_password_fails_without_echoing_either(locked_valkey: ValkeyDevServer) -> None:
    wrong = locked_valkey.url.replace(PASSWORD, "m4rker-wrong-guess")
    with pytest.raises(ValkeyError, match="refused the credentials") as info:
        ValkeyClient(wrong)
    text = _full_text(info.value)
    assert "m4rker" not in text


def test_a_missing_password_fails_with_a_clear_message(locked_valkey: ValkeyDevServer) -> None:
    bare = locked_valkey.url.replace(f":{PASSWORD}@", "")
    with pytest.raises(ValkeyError, match="refused the credentials"):
        ValkeyClient(bare)


def test_outage_messages_hide_the_password(locked_valkey: ValkeyDevServer) -> None:
    kv = ValkeyClient(locked_valkey.url, connect_timeout=0.3, socket_timeout=0.5, timeout=1.5)
    try:
        locked_valkey.stop()
        for call in (lambda: kv.get("k"), lambda: kv.hit("k", 5), lambda: kv.incr("k")):
            with pytest.raises(ValkeyError) as info:
                call()
            assert PASSWORD not in _full_text(info.value)
    finally:
        kv.close()
