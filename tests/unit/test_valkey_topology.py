"""Sentinel and cluster URLs, the retry rules and endpoint names; no server needed."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.sentinel import MasterNotFoundError

from crm_infra.adapters import ValkeyClient
from crm_infra.adapters.valkey import redact_url
from crm_infra.adapters.valkey.protocol import nothing_ran, retryable
from crm_infra.adapters.valkey.topology import SentinelEndpoint, Topology, parse_url
from crm_infra.errors import ConfigError

PASSWORD = "m4rker-pw-1f0e"


def parse(url: str) -> Topology | None:
    return parse_url(url, redact_url(url))


def test_one_server_schemes_are_left_to_redis_py() -> None:
    for url in ("redis://h:1/0", "rediss://h:1/0", "unix:///tmp/v.sock"):
        assert parse(url) is None


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    topology = parse(f"redis+sentinel://:{PASSWORD}@10.0.0.1:26379,10.0.0.2:26380/crm/2")
    assert topology == Topology(
        "sentinel",
        (("10.0.0.1", 26379), ("10.0.0.2", 26380)),
        service="crm",
        db=2,
        password=PASSWORD,
    )
    assert PASSWORD not in repr(topology)


def test_a_sentinel_url_may_carry_a_user_and_the_sentinels_own_password() -> None:
    topology = parse("redis+sentinel://app:p%2Fw@[::1]:26379/crm?sentinel_password=s%40x")
    assert topology is not None
    assert (topology.username, topology.password, topology.sentinel_password) == (
        "app", "p/w", "s@x"
    )
    assert topology.nodes == (("::1", 26379),)
    assert topology.nodes_text == "[::1]:26379"


def test_a_cluster_url_lists_start_nodes_and_has_database_zero_only() -> None:
    topology = parse(f"redis+cluster://:{PASSWORD}@h1:7000,h2:7001")
    assert topology is not None
    assert topology.kind == "cluster"
    assert topology.nodes == (("h1", 7000), ("h2", 7001))
    assert parse("redis+cluster://h1:7000/0") is not None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://h:26379", "service"),
        ("redis+sentinel://h:26379/", "service"),
        ("redis+sentinel://h:26379/crm/x", "database"),
        ("redis+sentinel://h:26379/crm/1/2", "database"),
        ("redis+sentinel://h/crm", "host:port"),
        ("redis+sentinel://h:0/crm", "host:port"),
        ("redis+sentinel://h:1,,h:2/crm", "host:port"),
        ("redis+sentinel://h:1/crm?ssl=true", "unknown option 'ssl'"),
        ("redis+cluster://h:1/3", "database 0"),
        ("redis+cluster://h:1?sentinel_password=x", "unknown option"),
        ("redis+cluster://:1", "host:port"),
    ],
)
def test_a_malformed_topology_url_is_a_config_error(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        ValkeyClient(url, check_connection=False)


def test_a_malformed_url_error_never_shows_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        ValkeyClient(f"redis+sentinel://:{PASSWORD}@h:1", check_connection=False)
    assert PASSWORD not in str(info.value)
    assert "***" in str(info.value)


def test_a_sentinel_client_is_built_without_io_and_its_repr_hides_the_password() -> None:
    url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:1,127.0.0.1:2/crm"
    with ValkeyClient(url, check_connection=False) as kv:
        assert PASSWORD not in repr(kv)
        assert "redis+sentinel://:***@127.0.0.1:1,127.0.0.1:2/crm" in repr(kv)


# --- what may be retried --------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        NoScriptError("NOSCRIPT No matching script"),
        ReadOnlyError("READONLY You can't write against a read only replica."),
        ClusterDownError("CLUSTERDOWN The cluster is down"),
        TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        MasterNotFoundError("No master found for 'crm'"),
        redis.ConnectionError("Error 111 connecting to 127.0.0.1:7000. Connection refused."),
        redis.TimeoutError("Timeout connecting to server"),
        redis.ConnectionError("The previous master is now a slave"),
    ],
)
def test_failures_that_prove_nothing_ran_allow_a_retry_of_hit(exc: Exception) -> None:
    assert nothing_ran(exc)
    assert retryable(exc, idempotent=False)


@pytest.mark.parametrize(
    "exc",
    [
        redis.TimeoutError("Timeout reading from 127.0.0.1:7000"),
        redis.ConnectionError("Connection closed by server."),
        redis.ConnectionError("Error while reading from 127.0.0.1:7000 : (104, 'reset')"),
    ],
)
def test_failures_after_sending_are_retried_only_for_idempotent_commands(exc: Exception) -> None:
    assert not nothing_ran(exc)
    assert not retryable(exc, idempotent=False)
    assert retryable(exc, idempotent=True)


def test_refused_credentials_and_plain_errors_are_never_retried() -> None:
    assert not retryable(AuthenticationError("invalid password"), idempotent=True)
    assert not retryable(ResponseError("WRONGTYPE"), idempotent=True)


# --- naming the endpoint ----------------------------------------------------------------------


class _Pool:
    master_address: tuple[str, int] | None = None


def test_a_sentinel_failure_names_the_last_primary_never_a_default() -> None:
    pool = _Pool()
    endpoint = SentinelEndpoint(pool, "crm", "10.0.0.1:26379,10.0.0.2:26379")
    unknown = endpoint(redis.ConnectionError("Error 111 connecting to localhost:6379."), "k")
    assert unknown == "10.0.0.1:26379,10.0.0.2:26379 (Sentinels of service 'crm'; no primary known)"
    pool.master_address = ("10.0.0.7", 6380)
    assert endpoint(redis.TimeoutError("t"), "k") == (
        "10.0.0.7:6380 (primary of Sentinel service 'crm')"
    )
    assert "10.0.0.7" not in endpoint(MasterNotFoundError("No master found for 'crm'"), "k")
