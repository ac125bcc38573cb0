"""ValkeyClient against a real server that stops, restarts, freezes or cannot be reached.

Every failure must arrive as a ValkeyError (also the port's KeyValueStoreUnavailableError) that
names the operation, within the time budget, never as a raw redis exception or a hang; and
INCR / hit must never be sent twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.exceptions import RedisError

from crm_infra.adapters import ValkeyClient, ValkeyError
from crm_infra.devservers.valkey import ValkeyDevServer
from crm_infra.errors import BackendUnavailableError, KeyValueStoreUnavailableError
from tests.fixtures.common import free_port, wait_until

# Short timeouts keep the frozen-server tests quick; the budget logic is the same.
CONNECT_S, REPLY_S, BUDGET_S = 0.3, 0.5, 1.5


def fast_client(url: str) -> ValkeyClient:
    """Return a client with short timeouts, as the tests below need."""
    return ValkeyClient(
        url, key_prefix="app:", connect_timeout=CONNECT_S, socket_timeout=REPLY_S, timeout=BUDGET_S
    )

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


@pytest.fixture
def kv(private_valkey: ValkeyDevServer) -> Iterator[ValkeyClient]:
    with fast_client(private_valkey.url) as client:
        yield client


def _unavailable(call: Callable[[], object]) -> tuple[ValkeyError, float]:
    started = time.monotonic()
    with pytest.raises(ValkeyError) as info:
        call()
    elapsed = time.monotonic() - started
    assert isinstance(info.value, KeyValueStoreUnavailableError)
    assert isinstance(info.value, BackendUnavailableError)
    assert not isinstance(info.value, RedisError)
    assert isinstance(info.value.__cause__, RedisError)
    return info.value, elapsed


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_a_stopped_server_gives_a_valkey_error_naming_the_operation(
    private_valkey: ValkeyDevServer, kv: ValkeyClient, op: str
) -> None:
    kv.set("k", "1")
    private_valkey.stop()
    error, elapsed = _unavailable(lambda: OPERATIONS[op](kv))
    assert f"Valkey {op}" in str(error)
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
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes handshakes; nobody ever reads
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(KeyValueStoreUnavailableError, match="did not answer in time"):
            ValkeyClient(f"redis://127.0.0.1:{port}/0")
        assert time.monotonic() - started < 10
