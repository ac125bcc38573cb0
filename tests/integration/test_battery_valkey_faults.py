"""ValkeyClient under faults the basic fault tests leave out: crashes, slow and blackholed links.

The promise: every failure is a typed ``ValkeyUnavailableError`` that names the operation and
arrives within the call's budget; the same client works again once the fault is gone; INCR and
hit count at most once; what the server acknowledged before a crash (AOF) or a clean restart
(RDB or AOF) is still there, expiry included.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import RedisError

from crm_infra.adapters import ValkeyClient
from crm_infra.adapters.valkey import ValkeyUnavailableError
from crm_infra.devservers.valkey import Persistence, ValkeyDevServer
from crm_infra.errors import BackendUnavailableError
from tests.fixtures.common import wait_until
from tests.fixtures.tcp_proxy import TcpProxy

CONNECT_S, REPLY_S, BUDGET_S = 0.3, 0.5, 1.5


def _client(port: int) -> ValkeyClient:
    return ValkeyClient(
        f"redis://127.0.0.1:{port}/0",
        key_prefix="app:",
        connect_timeout=CONNECT_S,
        socket_timeout=REPLY_S,
        timeout=BUDGET_S,
    )


def _raw(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)


def _fails_typed(call: Callable[[], object], op: str) -> tuple[ValkeyUnavailableError, float]:
    started = time.monotonic()
    with pytest.raises(ValkeyUnavailableError) as info:
        call()
    elapsed = time.monotonic() - started
    assert isinstance(info.value, BackendUnavailableError)
    assert isinstance(info.value.__cause__, RedisError)
    assert f"Valkey {op}" in str(info.value)
    return info.value, elapsed


@pytest.fixture
def proxy(private_valkey: ValkeyDevServer) -> Iterator[TcpProxy]:
    with TcpProxy(private_valkey.port) as link:
        yield link


@pytest.fixture
def kv(proxy: TcpProxy) -> Iterator[ValkeyClient]:
    with _client(proxy.port) as client:
        yield client


# --- a crash (SIGKILL) and a restart --------------------------------------------------------


def test_a_killed_server_gives_typed_errors_and_the_client_recovers_after_restart(
    private_valkey: ValkeyDevServer,
) -> None:
    with _client(private_valkey.port) as kv:
        kv.set("k", "v")
        private_valkey.kill()
        for op, call in (
            ("get", lambda: kv.get("k")),
            ("incr", lambda: kv.incr("n")),
            ("hit", lambda: kv.hit("rl", 60)),
        ):
            _error, elapsed = _fails_typed(call, op)
            assert elapsed < BUDGET_S + 0.5
        private_valkey.start()
        assert kv.health_check() is True
        assert kv.incr("n") == 1  # the failed INCR was never counted
        assert kv.hit("rl", 60) == 1  # the script is loaded again on the new server


def test_writes_acknowledged_before_a_crash_survive_it_with_aof(tmp_path: Path) -> None:
    acknowledged: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    with ValkeyDevServer(persistence="aof", data_dir=tmp_path) as server:
        kv = _client(server.port)

        def writer() -> None:
            n = 0
            while not stop.is_set():
                key = f"s{n}"
                try:
                    kv.set(key, key)
                except ValkeyUnavailableError:
                    return  # the crash: expected, and typed
                except BaseException as exc:
                    failures.append(exc)
                    return
                acknowledged.append(key)
                n += 1

        thread = threading.Thread(target=writer)
        thread.start()
        wait_until(lambda: len(acknowledged) >= 10, timeout=30, what="the first writes")
        server.kill()
        thread.join(timeout=BUDGET_S + 2)
        stop.set()
        assert not thread.is_alive()
        server.start()
        with _raw(server.port) as raw:
            stored = set(raw.keys("app:s*"))
        kv.close()
    assert failures == []
    assert len(acknowledged) > 10
    missing = [key for key in acknowledged if f"app:{key}" not in stored]
    assert missing == []


@pytest.mark.parametrize("persistence", ["rdb", "aof"])
def test_sessions_keep_their_data_and_expiry_across_a_clean_restart(
    tmp_path: Path, persistence: Persistence
) -> None:
    sessions = {
        f"session:{uuid.uuid4()}": {"user_id": str(uuid.uuid4()), "roles": ["agent"], "n": i}
        for i in range(20)
    }
    with ValkeyDevServer(persistence=persistence, data_dir=tmp_path) as server:
        with _client(server.port) as kv:
            for key, data in sessions.items():
                kv.set_json(key, data, expire_seconds=3600)
            kv.set_json("session:forever", {"pinned": True})
        server.stop()
        server.start()
        with _client(server.port) as kv:
            for key, data in sessions.items():
                assert kv.get_json(key) == data
                assert 3500 < kv.ttl(key) <= 3600  # the expiry survived and was not reset
            assert kv.get_json("session:forever") == {"pinned": True}
            assert kv.ttl("session:forever") == -1


# --- a slow link ----------------------------------------------------------------------------


def test_a_slow_link_within_the_reply_timeout_works(proxy: TcpProxy, kv: ValkeyClient) -> None:
    proxy.delay = 0.1
    started = time.monotonic()
    kv.set("k", "v")
    assert kv.get("k") == "v"
    assert kv.hit("rl", 60) == 1
    assert time.monotonic() - started >= 0.3  # the delay was really there


def test_a_link_slower_than_the_reply_timeout_raises_within_the_budget(
    proxy: TcpProxy, kv: ValkeyClient
) -> None:
    kv.set("k", "v")
    proxy.delay = 2 * BUDGET_S
    error, elapsed = _fails_typed(lambda: kv.get("k"), "get")
    assert "did not answer in time" in str(error)
    assert elapsed < BUDGET_S + 0.5
    proxy.heal()
    assert kv.get("k") == "v"


def test_a_slow_incr_that_times_out_still_counts_once(
    private_valkey: ValkeyDevServer, proxy: TcpProxy, kv: ValkeyClient
) -> None:
    assert kv.incr("counter") == 1
    proxy.delay = REPLY_S + 0.3  # the INCR reaches the server, but too late for the caller
    _fails_typed(lambda: kv.incr("counter"), "incr")
    proxy.heal()
    with _raw(private_valkey.port) as raw:
        # The late INCR lands, and nothing else the client sent is still on its way.
        wait_until(
            lambda: raw.get("app:counter") == "2" and proxy.in_flight == 0,
            timeout=30,
            what="the late INCR",
        )
        assert raw.get("app:counter") == "2"  # counted once, never resent
    assert kv.incr("counter") == 3


# --- a blackholed link ----------------------------------------------------------------------


@pytest.mark.parametrize("op", ["get", "set", "exists", "incr", "hit", "health_check"])
def test_a_blackholed_link_raises_within_the_budget_naming_the_operation(
    proxy: TcpProxy, kv: ValkeyClient, op: str
) -> None:
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: kv.get("k"),
        "set": lambda: kv.set("k", "v"),
        "exists": lambda: kv.exists("k"),
        "incr": lambda: kv.incr("k"),
        "hit": lambda: kv.hit("rl", 60),
        "health_check": kv.health_check,
    }
    kv.set("k", "1")
    proxy.blackhole()
    _error, elapsed = _fails_typed(calls[op], op)
    assert elapsed < BUDGET_S + 0.5


def test_the_client_recovers_when_a_blackholed_link_heals(
    private_valkey: ValkeyDevServer, proxy: TcpProxy, kv: ValkeyClient
) -> None:
    kv.set("k", "v")
    proxy.blackhole()
    _fails_typed(lambda: kv.hit("rl", 60), "hit")
    proxy.heal()
    assert kv.get("k") == "v"
    assert kv.hit("rl", 60) == 1  # the swallowed hit never reached the server
    with _raw(private_valkey.port) as raw:
        assert raw.ttl("app:rl") > 0


def test_connections_cut_while_pooled_are_replaced_and_incr_counts_once(
    private_valkey: ValkeyDevServer, proxy: TcpProxy, kv: ValkeyClient
) -> None:
    assert kv.incr("counter") == 1
    assert proxy.open_connections >= 1
    proxy.cut()  # returns once the client has seen the resets
    # The pool notices the dead connection before sending, so nothing is lost or doubled.
    assert kv.incr("counter") == 2
    assert kv.get("counter") == "2"
    with _raw(private_valkey.port) as raw:
        assert raw.get("app:counter") == "2"
