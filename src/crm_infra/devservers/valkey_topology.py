"""What the multi-server Valkey dev topologies share: lifecycle, admin connections, replication
settings, waiting on conditions, and ``WAIT`` for replicas (see ``valkey_cluster`` and
``valkey_sentinel``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import redis

from crm_infra.devservers.valkey import ValkeyDevServer, ValkeyServerError, config_quote

__all__ = ["DevTopology", "run", "wait_for"]


def run(client: redis.Redis, *args: Any) -> Any:
    """Send one raw command (redis-py leaves ``execute_command`` untyped)."""
    untyped: Any = client
    return untyped.execute_command(*args)


def wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Call ``check`` until it returns True; raise ValkeyServerError after ``timeout`` s.

    Errors from ``check`` (a node still starting, a connection refused) mean "not yet".
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError, ValueError, KeyError) as exc:
            last = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {type(last).__name__}: {last})" if last else ""
            raise ValkeyServerError(f"{what} did not happen within {timeout:g} s{detail}")
        time.sleep(0.02)


class DevTopology:
    """Several ``valkey-server`` processes run as one; a context manager that stops them all
    on exit, when start-up fails half-way, and at interpreter exit should the owner die.

    Subclasses say what to start (:meth:`_launch`), which processes they hold
    (:meth:`_processes`) and how to forget them (:meth:`_forget`).
    """

    def __init__(
        self,
        *,
        password: str | None,
        binary: str | os.PathLike[str] | None,
        startup_timeout: float,
    ) -> None:
        self._password = password
        self._binary = binary
        self._timeout = startup_timeout

    def _launch(self) -> None:
        raise NotImplementedError

    def _processes(self) -> list[ValkeyDevServer]:
        raise NotImplementedError

    def _forget(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start every process and wait until the topology is ready.

        Raises:
            ValkeyServerError: a process did not start, or the topology was not ready in time
                (everything started is stopped again).
        """
        if self._processes():
            return
        atexit.register(self.close)
        try:
            self._launch()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every process and remove their files."""
        atexit.unregister(self.close)
        for process in self._processes():
            process.close()
        self._forget()

    def _auth(self) -> str:
        """The URL's user-info part: ``:password@`` (percent-encoded), or nothing."""
        return f":{quote(self._password, safe='')}@" if self._password else ""

    def _password_of(self, server: ValkeyDevServer) -> str | None:
        return self._password

    @contextlib.contextmanager
    def admin(self, server: ValkeyDevServer, timeout: float = 5.0) -> Iterator[redis.Redis]:
        """Yield a plain connection to one process, for CLUSTER, SENTINEL and INFO."""
        client = redis.Redis(
            host="127.0.0.1",
            port=server.port,
            password=self._password_of(server),
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        try:
            yield client
        finally:
            client.close()

    def _data_lines(self) -> list[str]:
        """Config of every data server: replicas sync at once, and with the password."""
        lines = ["repl-diskless-sync yes", "repl-diskless-sync-delay 0"]  # not after 5 s
        if self._password:
            lines.append(f"masterauth {config_quote(self._password)}")
        return lines

    def _wait_acked(self, primary: ValkeyDevServer, expected: int, marker: str) -> int:
        """Write ``marker`` on ``primary`` and ``WAIT`` on the same connection until
        ``expected`` replicas have it: replication is ordered, so they have every earlier
        write too. Return how many acknowledged.

        Raises:
            ValkeyServerError: fewer acknowledged within the startup timeout.
        """
        with self.admin(primary) as client:
            client.set(marker, "synced")
            acked = int(run(client, "WAIT", expected, int(self._timeout * 1000)))
        if acked < expected:
            raise ValkeyServerError(f"{acked} of {expected} replicas of {primary.port} synced")
        return acked
