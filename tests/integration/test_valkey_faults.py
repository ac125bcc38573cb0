"""ValkeyClient against a real server that stops, crashes, restarts, freezes, sits behind a slow
or blackholed link, or cannot be reached at all.

The promise: every failure is a typed ``ValkeyUnavailableError`` (also the port's
``KeyValueStoreUnavailableError``) that names the operation and arrives within the call's
budget, never a raw redis exception or a hang; the same client works again once the fault is
gone; INCR and hit are never sent twice; what the server acknowledged before a crash (AOF) or a
clean restart (RDB or AOF) is still there, expiry included.

The other topologies have their own files: ``test_valkey_cluster_faults.py`` and
``test_valkey_sentinel_faults.py``.
"""

from __future__ import annotations

import socket
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
from crm_infra.errors import BackendUnavailableError, KeyValueStoreUnavailableError
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.tcp_proxy import TcpProxy

# Short timeouts keep the frozen-server tests quick; the budget logic is the same.
CONNECT_S, REPLY_S, BUDGET_S = 0.3, 0.5, 1.5


def fast_client(url: str) -> ValkeyClient:
    """Return a client with short timeouts, as the tests below need."""
    return ValkeyClient(
        url, key_prefix="app:", connect_timeout=CONNECT_S, socket_timeout=REPLY_S, timeout=BUDGET_S
    )


def _raw(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)


OPERATIONS: dict[str, Callable[[ValkeyClient], object]] = {
    "get": lambda kv: kv.get("k"),
    "set": lambda kv: kv.set("k", "v", expire_seconds=10),
    "delete": lambda kv: kv.delete("k"),
    "incr": lambda kv: kv.incr("k"),
    "expire": lambda kv: kv.expire("k", 10),
    "ttl": lambda kv: kv.ttl("k"),
    "exists": lambda kv: kv.exists("k"),
    "get_json": lambda kv: kv.get_json("k"),
    "set_json": lambda kv: kv.set_json("k", {"a": 1}),
    "hit": lambda kv: kv.hit("k", 10),
    "health_check": lambda kv: kv.health_check(),
}


def _unavailable(
    call: Callable[[], object], op: str | None = None
) -> tuple[ValkeyUnavailableError, float]:
    """Run ``call``; check it failed typed (naming ``op`` if given); return the error and how
    long it took."""
    started = time.monotonic()
    with pytest.raises(ValkeyUnavailableError) as info:
        call()
    elapsed = time.monotonic() - started
    assert isinstance(info.value, KeyValueStoreUnavailableError)
    assert isinstance(info.value, BackendUnavailableError)
    assert not isinstance(info.value, RedisError)
    assert isinstance(info.value.__cause__, RedisError)
    if op is not None:
        assert f"Valkey {op}" in str(info.value)
    return info.value, elapsed


@pytest.fixture
def kv(private_valkey: ValkeyDevServer) -> Iterator[ValkeyClient]:
    with fast_client(private_valkey.url) as client:
        yield client


@pytest.fixture
def proxy(private_valkey: ValkeyDevServer) -> Iterator[TcpProxy]:
    with TcpProxy(private_valkey.port) as link:
        yield link


@pytest.fixture
def proxied(proxy: TcpProxy) -> Iterator[ValkeyClient]:
    """A fast client that reaches the private server through ``proxy``."""
    with fast_client(f"redis://127.0.0.1:{proxy.port}/0") as client:
        yield client


# --- a stopped, killed or restarted server ----------------------------------------------------


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_a_stopped_server_gives_a_valkey_error_naming_the_operation(
    private_valkey: ValkeyDevServer, kv: ValkeyClient, op: str
) -> None:
    kv.set("k", "1")
    private_valkey.stop()
    _error, elapsed = _unavailable(lambda: OPERATIONS[op](kv), op)
    assert elapsed < BUDGET_S


def test_the_same_client_works_again_once_the_server_is_back(
    private_valkey: ValkeyDevServer, kv: ValkeyClient
) -> None:
    kv.set("before", "1")
    assert kv.hit("rl", 60) == 1
    private_valkey.stop()
    _unavailable(lambda: kv.get("before"))
    private_valkey.start()
    # No persistence: the restarted server is empty, and the script cache with it.
    assert kv.get("before") is None
    assert kv.hit("rl", 60) == 1
    assert kv.incr("n") == 1
    assert kv.health_check() is True


def test_a_restart_between_calls_is_invisible_to_idempotent_calls(
    private_valkey: ValkeyDevServer, kv: ValkeyClient
) -> None:
    kv.set("k", "v")
    private_valkey.restart()
    # The pooled connection is dead; the retry on a fresh one succeeds.
    assert kv.get("k") is None
    kv.set("k", "w")
    assert kv.get("k") == "w"


def test_a_killed_server_gives_typed_errors_and_the_client_recovers_after_restart(
    private_valkey: ValkeyDevServer,
) -> None:
    with fast_client(private_valkey.url) as kv:
        kv.set("k", "v")
        private_valkey.kill()
        for op, call in (
            ("get", lambda: kv.get("k")),
            ("incr", lambda: kv.incr("n")),
            ("hit", lambda: kv.hit("rl", 60)),
        ):
            _error, elapsed = _unavailable(call, op)
            assert elapsed < BUDGET_S + 0.5
        private_valkey.start()
        assert kv.health_check() is True
        assert kv.incr("n") == 1  # the failed INCR was never counted
        assert kv.hit("rl", 60) == 1  # the script is loaded again on the new server


# --- persistence across a crash and a clean restart -------------------------------------------


def test_writes_acknowledged_before_a_crash_survive_it_with_aof(tmp_path: Path) -> None:
    acknowledged: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    with ValkeyDevServer(persistence="aof", data_dir=tmp_path) as server:
        kv = fast_client(server.url)

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
        with fast_client(server.url) as kv:
            for key, data in sessions.items():
                kv.set_json(key, data, expire_seconds=3600)
            kv.set_json("session:forever", {"pinned": True})
        server.stop()
        server.start()
        with fast_client(server.url) as kv:
            for key, data in sessions.items():
                assert kv.get_json(key) == data
                assert 3500 < kv.ttl(key) <= 3600  # the expiry survived and was not reset
            assert kv.get_json("session:forever") == {"pinned": True}
            assert kv.ttl("session:forever") == -1


# --- a frozen server (SIGSTOP), and INCR and hit never sent twice -----------------------------


def test_a_frozen_server_raises_within_the_budget(
    private_valkey: ValkeyDevServer, kv: ValkeyClient
) -> None:
    kv.set("k", "v")
    private_valkey.pause()
    try:
        error, elapsed = _unavailable(lambda: kv.get("k"))
    finally:
        private_valkey.resume()
    assert "did not answer in time" in str(error)
    assert elapsed < BUDGET_S + 0.5
    assert kv.get("k") == "v"


def test_a_frozen_server_raises_within_ten_seconds_with_the_defaults(
    private_valkey: ValkeyDevServer,
) -> None:
    with ValkeyClient(private_valkey.url) as kv:
        kv.set("k", "v")
        private_valkey.pause()
        try:
            _error, elapsed = _unavailable(lambda: kv.get("k"))
        finally:
            private_valkey.resume()
    assert elapsed < 10


def _counter_after_frozen_call(
    server: ValkeyDevServer, kv: ValkeyClient, call: Callable[[], object]
) -> int:
    """Freeze the server until ``call`` has timed out; return the counter's value once the
    timed-out command has run.

    A retry, if one were made, would be sent while the server is still frozen and run right
    after the first command when it thaws, counting twice: the caller's check (and its next
    call's answer) shows it. Without retries the call fails and the counter moves once.
    """
    with redis.Redis.from_url(server.url, decode_responses=True) as raw:
        before = int(raw.get("app:counter") or 0)
        server.pause()
        try:
            _unavailable(call)
        finally:
            server.resume()
        # The thawed server runs what was in its buffer: wait for it, not for a time.
        wait_until(
            lambda: int(raw.get("app:counter") or 0) > before,
            timeout=30,
            what="the timed-out command",
        )
        return int(raw.get("app:counter") or 0)


def test_hit_is_not_retried_after_a_timeout(
    private_valkey: ValkeyDevServer, kv: ValkeyClient
) -> None:
    assert kv.hit("counter", 60) == 1
    counted = _counter_after_frozen_call(private_valkey, kv, lambda: kv.hit("counter", 60))
    assert counted == 2  # the timed-out hit ran once, on the server, and was not resent
    assert kv.hit("counter", 60) == 3


def test_incr_is_not_retried_after_a_timeout(
    private_valkey: ValkeyDevServer, kv: ValkeyClient
) -> None:
    assert kv.incr("counter") == 1
    counted = _counter_after_frozen_call(private_valkey, kv, lambda: kv.incr("counter"))
    assert counted == 2
    assert kv.incr("counter") == 3


def test_a_ready_client_loses_its_own_retries_so_hit_counts_once(
    private_valkey: ValkeyDevServer,
) -> None:
    # redis.Redis(host=...) retries every command (INCR and EVALSHA included) by default.
    raw = redis.Redis(
        host="127.0.0.1",
        port=private_valkey.port,
        decode_responses=True,
        socket_timeout=REPLY_S,
        socket_connect_timeout=CONNECT_S,
    )
    assert raw.get_retry() is not None
    assert raw.get_retry().get_retries() > 0  # type: ignore[union-attr]  # just checked
    with raw, ValkeyClient(client=raw, key_prefix="app:") as kv:
        assert kv.hit("counter", 60) == 1
        counted = _counter_after_frozen_call(private_valkey, kv, lambda: kv.hit("counter", 60))
        assert counted == 2


# --- a slow link ------------------------------------------------------------------------------


def test_a_slow_link_within_the_reply_timeout_works(proxy: TcpProxy, proxied: ValkeyClient) -> None:
    proxy.delay = 0.1
    started = time.monotonic()
    proxied.set("k", "v")
    assert proxied.get("k") == "v"
    assert proxied.hit("rl", 60) == 1
    assert time.monotonic() - started >= 0.3  # the delay was really there


def test_a_link_slower_than_the_reply_timeout_raises_within_the_budget(
    proxy: TcpProxy, proxied: ValkeyClient
) -> None:
    proxied.set("k", "v")
    proxy.delay = 2 * BUDGET_S
    error, elapsed = _unavailable(lambda: proxied.get("k"), "get")
    assert "did not answer in time" in str(error)
    assert elapsed < BUDGET_S + 0.5
    proxy.heal()
    assert proxied.get("k") == "v"


def test_a_slow_incr_that_times_out_still_counts_once(
    private_valkey: ValkeyDevServer, proxy: TcpProxy, proxied: ValkeyClient
) -> None:
    assert proxied.incr("counter") == 1
    proxy.delay = REPLY_S + 0.3  # the INCR reaches the server, but too late for the caller
    _unavailable(lambda: proxied.incr("counter"), "incr")
    proxy.heal()
    with _raw(private_valkey.port) as raw:
        # The late INCR lands, and nothing else the client sent is still on its way.
        wait_until(
            lambda: raw.get("app:counter") == "2" and proxy.in_flight == 0,
            timeout=30,
            what="the late INCR",
        )
        assert raw.get("app:counter") == "2"  # counted once, never resent
    assert proxied.incr("counter") == 3


# --- a blackholed or cut link -----------------------------------------------------------------


@pytest.mark.parametrize("op", ["get", "set", "exists", "incr", "hit", "health_check"])
def test_a_blackholed_link_raises_within_the_budget_naming_the_operation(
    proxy: TcpProxy, proxied: ValkeyClient, op: str
) -> None:
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: proxied.get("k"),
        "set": lambda: proxied.set("k", "v"),
        "exists": lambda: proxied.exists("k"),
        "incr": lambda: proxied.incr("k"),
        "hit": lambda: proxied.hit("rl", 60),
        "health_check": proxied.health_check,
    }
    proxied.set("k", "1")
    proxy.blackhole()
    _error, elapsed = _unavailable(calls[op], op)
    assert elapsed < BUDGET_S + 0.5


def test_the_client_recovers_when_a_blackholed_link_heals(
    private_valkey: ValkeyDevServer, proxy: TcpProxy, proxied: ValkeyClient
) -> None:
    proxied.set("k", "v")
    proxy.blackhole()
    _unavailable(lambda: proxied.hit("rl", 60), "hit")
    proxy.heal()
    assert proxied.get("k") == "v"
    assert proxied.hit("rl", 60) == 1  # the swallowed hit never reached the server
    with _raw(private_valkey.port) as raw:
        assert raw.ttl("app:rl") > 0


def test_connections_cut_while_pooled_are_replaced_and_incr_counts_once(
    private_valkey: ValkeyDevServer, proxy: TcpProxy, proxied: ValkeyClient
) -> None:
    assert proxied.incr("counter") == 1
    assert proxy.open_connections >= 1
    proxy.cut()  # returns once the client has seen the resets
    # The pool notices the dead connection before sending, so nothing is lost or doubled.
    assert proxied.incr("counter") == 2
    assert proxied.get("counter") == "2"
    with _raw(private_valkey.port) as raw:
        assert raw.get("app:counter") == "2"


# --- a server that cannot be reached at start-up ----------------------------------------------


def test_an_unreachable_port_raises_within_five_seconds() -> None:
    started = time.monotonic()
    with pytest.raises(KeyValueStoreUnavailableError, match="health_check"):
        ValkeyClient(f"redis://127.0.0.1:{free_port()}/0")
    assert time.monotonic() - started < 5


def test_an_unroutable_address_raises_within_five_seconds() -> None:
    started = time.monotonic()
    # TEST-NET-1 (RFC 5737): never routed, so the connect either fails or times out.
    with pytest.raises(KeyValueStoreUnavailableError, match=r"192\.0\.2\.1"):
        ValkeyClient("redis://192.0.2.1:6379/0")
    assert time.monotonic() - started < 5


def test_a_server_that_accepts_but_never_answers_raises_within_ten_seconds() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes handshakes; nobody ever reads
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(KeyValueStoreUnavailableError, match="did not answer in time"):
            ValkeyClient(f"redis://127.0.0.1:{port}/0")
        assert time.monotonic() - started < 10
