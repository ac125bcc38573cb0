"""``silenced()``: every OpenTelemetry instrumentation suppressed in the block when OpenTelemetry
is loaded (the API's key and the plain one older instrumentations read), the context as it was
after it; and when OpenTelemetry is not loaded, nothing happens and nothing is imported
(checked in fresh interpreters, whose sys.modules nothing else has filled)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from opentelemetry import context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from crm_infra.telemetry.silence import silenced
from tests.fixtures.telemetry import WITHOUT_OPENTELEMETRY

_SILENCED = """
import sys
from crm_infra.telemetry.silence import silenced
with silenced():
    ran = True
assert ran
try:
    with silenced():
        raise KeyError("inside")
except KeyError:
    pass
print(" ".join(sorted(m for m in sys.modules if m.startswith("opentelemetry"))) or "-")
"""


def _loaded(script: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [m for m in done.stdout.split() if m != "-"]


def test_without_the_extra_it_runs_the_block_and_imports_nothing() -> None:
    assert _loaded(WITHOUT_OPENTELEMETRY + _SILENCED) == []


def test_with_the_extra_installed_but_not_loaded_it_imports_nothing() -> None:
    assert _loaded(_SILENCED) == []


def test_the_check_itself_sees_an_import() -> None:
    assert "opentelemetry.context" in _loaded("import opentelemetry.context\n" + _SILENCED)


def test_instrumentation_is_suppressed_in_the_block_and_restored_after() -> None:
    assert is_instrumentation_enabled()
    with silenced():
        assert not is_instrumentation_enabled()
        assert context.get_value(_SUPPRESS_INSTRUMENTATION_KEY) is True
        assert context.get_value("suppress_instrumentation") is True
        with silenced():
            assert not is_instrumentation_enabled()
        assert not is_instrumentation_enabled()
    assert is_instrumentation_enabled()
    assert context.get_value(_SUPPRESS_INSTRUMENTATION_KEY) is None
    assert context.get_value("suppress_instrumentation") is None


def test_an_exception_leaves_the_context_restored() -> None:
    with pytest.raises(KeyError), silenced():
        raise KeyError("inside")
    assert is_instrumentation_enabled()


def test_it_works_in_asyncio_tasks() -> None:
    async def inside() -> bool:
        with silenced():
            await asyncio.sleep(0)
            return is_instrumentation_enabled()

    async def both() -> tuple[bool, bool]:
        quiet = await asyncio.create_task(inside())
        return quiet, is_instrumentation_enabled()

    assert asyncio.run(both()) == (False, True)
