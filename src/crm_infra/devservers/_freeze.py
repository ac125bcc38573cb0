"""Freezing a server process for fault tests, and knowing when it is really frozen.

``kill(pid, SIGSTOP)`` returns before the target stops: a thread running on another core
stops only at its next entry into the kernel, and in that time a server can still answer a
request. :func:`freeze` waits until every thread of the process is stopped.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

__all__ = ["freeze", "thaw"]


def _all_stopped(pid: int) -> bool:
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():  # not Linux: the signal is all there is
        return True
    for stat in tasks.glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the thread ended
        # The state follows the command name, which is in parentheses and may hold spaces.
        state = text[text.rindex(")") + 2]
        if state not in "TtZX":  # stopped, or a zombie/dead task that runs nothing either
            return False
    return True


def freeze(pid: int, timeout: float = 5.0) -> None:
    """Send SIGSTOP to ``pid`` and return once all its threads are stopped.

    Raises:
        ProcessLookupError: no such process.
        TimeoutError: it did not stop within ``timeout`` seconds.
    """
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while not _all_stopped(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} did not stop within {timeout:g} s of SIGSTOP")
        time.sleep(0.001)


def thaw(pid: int) -> None:
    """Send SIGCONT to ``pid`` (a process :func:`freeze` stopped)."""
    os.kill(pid, signal.SIGCONT)
