"""start_valkey, what ``crm-infra dev --valkey ...`` runs: each topology starts, serves the
adapter through the URL it returns, and stops with its exit stack."""

from __future__ import annotations

import contextlib
import socket

import pytest

from crm_infra.adapters import ValkeyClient
from crm_infra.devservers.valkey_stack import VALKEY_TOPOLOGIES, ValkeyTopology, start_valkey


def _ports(url: str) -> list[int]:
    hosts = url.split("@", 1)[-1].split("://", 1)[-1].split("/", 1)[0]
    return [int(part.rsplit(":", 1)[1]) for part in hosts.split(",")]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("topology", VALKEY_TOPOLOGIES)
def test_each_topology_starts_serves_and_stops_with_its_stack(topology: ValkeyTopology) -> None:
    with contextlib.ExitStack() as stack:
        url = start_valkey(stack, topology, password="dev-pw")
        with ValkeyClient(url, key_prefix="crm:") as kv:
            assert kv.hit("rl", 60) == 1
        ports = _ports(url)
    assert ports
    assert not any(_listening(port) for port in ports)


def test_an_unknown_topology_is_refused() -> None:
    with contextlib.ExitStack() as stack, pytest.raises(ValueError, match="sentinel"):
        start_valkey(stack, "ring", password=None)  # type: ignore[arg-type]  # the mistake
