"""ValkeyClient on a real cluster and a real Sentinel set: routing, hash tags, ready clients,
refused credentials and unreachable endpoints, each error naming the endpoint that failed.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from crm_infra.adapters import ValkeyClient, ValkeyError
from crm_infra.adapters.valkey.protocol import nothing_ran
from crm_infra.devservers.valkey_cluster import ValkeyClusterDevServer
from crm_infra.devservers.valkey_sentinel import ValkeySentinelDevServer
from crm_infra.errors import KeyValueStoreUnavailableError
from tests.fixtures.common import free_port
from tests.fixtures.valkey import TOPOLOGY_PASSWORD


def test_each_key_lands_on_the_primary_of_its_slot(
    valkey_cluster: ValkeyClusterDevServer, valkey_cluster_url: str
) -> None:
    with ValkeyClient(valkey_cluster_url, key_prefix="crm:") as kv:
        for i in range(30):
            kv.set(f"k{i}", "v")
            assert kv.hit(f"rl{i}", 60) == 1
        for i in range(30):
            for name in (f"crm:k{i}", f"crm:rl{i}"):
                node = valkey_cluster.primary_of_slot(valkey_cluster.slot_of(name))
                with valkey_cluster.admin(node) as client:
                    assert client.exists(name) == 1, name
        assert len({valkey_cluster.slot_of(f"crm:k{i}") for i in range(30)}) > 1


def test_a_hash_tag_keeps_a_users_keys_in_one_slot(
    valkey_cluster: ValkeyClusterDevServer, valkey_cluster_url: str
) -> None:
    with ValkeyClient(valkey_cluster_url, key_prefix="crm:") as kv:
        names = ["session:{user:42}", "rl:login:{user:42}", "cache:{user:42}:profile"]
        for name in names:
            kv.set(name, "v")
        assert len({valkey_cluster.slot_of("crm:" + name) for name in names}) == 1
        # Without a tag, the prefix alone never pins keys together.
        assert valkey_cluster.slot_of("crm:a") != valkey_cluster.slot_of("crm:b")


def test_a_ready_cluster_client_is_accepted_and_left_open(valkey_cluster_url: str) -> None:
    host, port = valkey_cluster_url.split("@", 1)[1].split(",", maxsplit=1)[0].split(":")
    raw = RedisCluster(
        host=host, port=int(port), password=TOPOLOGY_PASSWORD, decode_responses=True
    )
    with ValkeyClient(client=raw, key_prefix="crm:") as kv:
        assert kv.hit("rl", 60) == 1
        assert kv.health_check()
    assert raw.get("crm:rl") == "1"  # the owner's client still works
    raw.close()


def test_a_ready_sentinel_client_is_accepted(
    valkey_sentinel: ValkeySentinelDevServer, valkey_sentinel_url: str
) -> None:
    sentinel = Sentinel([("127.0.0.1", s.port) for s in valkey_sentinel.sentinels])
    raw = sentinel.master_for(
        valkey_sentinel.service, password=TOPOLOGY_PASSWORD, decode_responses=True
    )
    with ValkeyClient(client=raw, key_prefix="crm:") as kv:
        assert kv.hit("rl", 60) == 1
        assert kv.get("rl") == "1"
    raw.close()
    for client in sentinel.sentinels:
        client.close()


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_a_wrong_password_is_refused_at_once_naming_the_endpoint(
    request: pytest.FixtureRequest, topology: str
) -> None:
    url: str = request.getfixturevalue(f"valkey_{topology}_url")
    wrong = url.replace(quote(TOPOLOGY_PASSWORD, safe=""), "wrong-pw-5e1d")
    started = time.monotonic()
    with pytest.raises(ValkeyError, match="refused the credentials") as info:
        ValkeyClient(wrong)
    assert time.monotonic() - started < 1.5  # never retried
    assert "wrong-pw-5e1d" not in str(info.value)
    assert "127.0.0.1:" in str(info.value)
    assert "localhost" not in str(info.value)


def test_unreachable_sentinels_are_named_within_the_budget() -> None:
    ports = [free_port(), free_port()]
    url = f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/crm"
    with ValkeyClient(url, check_connection=False) as kv:
        started = time.monotonic()
        with pytest.raises(KeyValueStoreUnavailableError) as info:
            kv.get("k")
    assert time.monotonic() - started < 5
    text = str(info.value)
    assert f"127.0.0.1:{ports[0]},127.0.0.1:{ports[1]} (Sentinels of service 'crm'" in text
    assert "localhost" not in text
    assert ":6379" not in text


def test_unreachable_cluster_start_nodes_are_named_at_construction() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(KeyValueStoreUnavailableError) as info:
        ValkeyClient(f"redis+cluster://127.0.0.1:{port}")
    assert time.monotonic() - started < 5
    assert f"127.0.0.1:{port} (cluster start nodes)" in str(info.value)
    assert isinstance(info.value.__cause__, redis.RedisError | RedisClusterException)


def test_a_frozen_cluster_primary_raises_within_the_budget_naming_its_node(
    valkey_cluster: ValkeyClusterDevServer, valkey_cluster_url: str
) -> None:
    with ValkeyClient(
        valkey_cluster_url, key_prefix="crm:", connect_timeout=0.3, socket_timeout=0.5,
        timeout=1.5,
    ) as kv:
        kv.set("k", "v")
        node = valkey_cluster.primary_of_slot(valkey_cluster.slot_of("crm:k"))
        node.pause()
        try:
            started = time.monotonic()
            with pytest.raises(KeyValueStoreUnavailableError, match="did not answer") as info:
                kv.get("k")
            elapsed = time.monotonic() - started
        finally:
            node.resume()
        assert elapsed < 1.5 + 0.5
        assert f"127.0.0.1:{node.port} (cluster node of slot" in str(info.value)
        assert kv.get("k") == "v"


def test_redis_py_still_words_a_refused_connection_as_the_retry_rules_expect() -> None:
    # "The connection could not be made" (so hit may be retried) is read from redis-py's
    # message: pin its form against a real refused connection.
    client = redis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    with pytest.raises(redis.ConnectionError) as info:
        client.ping()
    client.close()
    assert nothing_ran(info.value), str(info.value)
