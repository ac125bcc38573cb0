"""The fakes never show a secret value in messages, tracebacks, reprs or logs either."""

from __future__ import annotations

import logging

import pytest

from crm_infra import secret_paths
from crm_infra.fakes import InMemoryKeyValueStore, InMemorySecretStore, InMemoryUserScopedDB
from crm_infra.secret_cache import CachedSecretStore
from tests.battery.leaks import LeakScan, marker, provoke_database_errors


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def test_the_fake_secret_store_never_shows_values(caplog: pytest.LogCaptureFixture) -> None:
    password, api_key, value = marker("password"), marker("apikey"), marker("value")
    scan = LeakScan(password, api_key, value)
    store = InMemorySecretStore(
        {
            "crm/database": {
                "url": f"mysql://u:{password}@h/db",
                "admin_url": f"postgresql://a:{password}@h/db",
            },
            "crm/valkey": {"url": value},
            "crm/email": {"api_key": api_key, "from_address": value},
            "app/gone": {"token": value},
        }
    )
    store.delete_secret("app/gone")
    cached = CachedSecretStore(store, 60)
    for name, target in (("store", store), ("cache", cached)):
        scan.add(f"{name} repr", repr(target))
        scan.expect_error(f"{name} deleted", lambda t=target: t.get_secret("app/gone"))  # type: ignore[misc]
        scan.expect_error(f"{name} missing", lambda t=target: t.get_secret("app/none"))  # type: ignore[misc]
        for accessor in (
            secret_paths.database_url,
            secret_paths.valkey_url,
            secret_paths.email_credentials,
        ):
            scan.expect_error(f"{name} {accessor.__name__}", lambda a=accessor, t=target: a(t))  # type: ignore[misc]
    scan.expect_error("bad data", lambda: store.put_secret("app/x", {"k": {value}}))
    scan.expect_error("NaN", lambda: store.put_secret("app/x", {value: float("nan")}))
    store.put_secret("crm/email", {"api_key": api_key, "from_address": "crm@example.com"})
    credentials = store.get_email_credentials()
    scan.add("credentials repr", repr(credentials))
    scan.add("credentials str", str(credentials))
    scan.add_records(caplog.records)
    scan.check()


def test_the_fake_key_value_store_never_shows_values(caplog: pytest.LogCaptureFixture) -> None:
    value = marker("session")
    scan = LeakScan(value)
    with InMemoryKeyValueStore(key_prefix="p:") as kv:
        scan.add("repr", repr(kv))
        kv.set("text", f"{{not json {value}")
        scan.expect_error("get_json", lambda: kv.get_json("text"))
        scan.expect_error("incr", lambda: kv.incr("text"))
        scan.expect_error("hit", lambda: kv.hit("text", 5))
        scan.expect_error("set_json of a set", lambda: kv.set_json("k", {"s": {value}}))
        scan.expect_error("set_json of NaN", lambda: kv.set_json("k", {value: float("nan")}))
        scan.expect_error("surrogate", lambda: kv.set("k", value + "\ud800"))
        scan.expect_error("not a str", lambda: kv.set("k", value.encode()))  # type: ignore[arg-type]
    scan.expect_error("closed", lambda: kv.get("text"))
    scan.add_records(caplog.records)
    scan.check()


def test_the_fake_database_never_shows_row_values(caplog: pytest.LogCaptureFixture) -> None:
    value = marker("rowvalue")
    scan = LeakScan(value)
    with InMemoryUserScopedDB() as db:
        scan.add("repr", repr(db))
        alice, _ = provoke_database_errors(db, scan, value)
    scan.expect_error("closed", lambda: db.execute("SELECT 1", (), alice))
    scan.add_records(caplog.records)
    scan.check()


class _Slotted:
    __slots__ = ("secret",)

    def __init__(self, secret: bytes) -> None:
        self.secret = secret


class _Request:
    def __init__(self, headers: dict[str, object]) -> None:
        self.headers = headers


def test_the_scan_finds_a_secret_anywhere_in_an_exception_chain() -> None:
    token, password, note = marker("token"), marker("password"), marker("note")
    inner = OSError("connection refused")
    inner.request = _Request({"X-Vault-Token": token})  # type: ignore[attr-defined]
    outer = RuntimeError("failed")
    outer.__context__ = inner
    inner.__cause__ = KeyError({"conn": [_Slotted(password.encode())]})
    inner.add_note(note)
    scan = LeakScan(token, password, note)
    scan.add_error("chain", outer)
    with pytest.raises(AssertionError) as info:
        scan.check()
    for where in (
        "__context__.request.headers.['X-Vault-Token']",
        "__context__.__cause__.args.[0].['conn'].[0].secret",
        "__context__.__notes__.[0]",
    ):
        assert where in str(info.value)


def test_the_scan_does_not_enter_tracebacks() -> None:
    secret = marker("local")

    def fail(local: str) -> None:
        raise ValueError("no secret here")

    with pytest.raises(ValueError, match="no secret here") as info:
        fail(secret)
    scan = LeakScan(secret)
    scan.add_error("error", info.value)
    scan.check()  # the frame's locals hold it: out of reach by design (documented)
