"""freeze() returns only once the process is stopped, and thaw() lets it run again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from crm_infra.devservers._freeze import freeze, thaw


def _state(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


def test_freeze_waits_for_every_thread_and_thaw_resumes() -> None:
    # A busy process with several threads: the one most likely to outrun SIGSTOP.
    code = (
        "import threading\n"
        "for _ in range(4):\n"
        "    threading.Thread(target=lambda: [0 for _ in iter(int, 1)], daemon=True).start()\n"
        "threading.Event().wait()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while len(list(Path(f"/proc/{process.pid}/task").iterdir())) < 5:
            assert time.monotonic() < deadline, "the threads never started"
            time.sleep(0.01)
        freeze(process.pid)
        tasks = list(Path(f"/proc/{process.pid}/task").iterdir())
        assert all(_state(int(t.name)) in "Tt" for t in tasks)
        thaw(process.pid)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_freezing_a_missing_process_says_so() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    with pytest.raises(ProcessLookupError):
        freeze(process.pid)
