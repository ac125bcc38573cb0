"""The in-memory default imports no driver it does not use: not psycopg, psycopg_pool, hvac
or requests, on either root (checked in a fresh interpreter, whose sys.modules nothing else
has filled)."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import sys
from uuid import uuid4
from crm_infra import Settings, build_infrastructure, user_context
with build_infrastructure(Settings.from_env({})) as infra:
    assert infra.health().ok
    with user_context(uuid4()):
        infra.db.execute("SELECT name FROM contacts")
    infra.kv.hit("demo", 60)
    infra.secrets.get_secret("crm/valkey")
loaded = sorted({m.split(".")[0] for m in sys.modules})
print(" ".join(loaded))
"""


def test_memory_mode_imports_no_driver_of_the_real_backends() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = set(done.stdout.split())
    assert "crm_infra" in loaded  # the script ran what it should
    assert not loaded & {"psycopg", "psycopg_pool", "psycopg_binary", "hvac", "requests"}


_ASYNC_SCRIPT = """
import asyncio, sys
from uuid import uuid4
from crm_infra import Settings, build_async_infrastructure, user_context

async def main():
    async with await build_async_infrastructure(Settings.from_env({})) as infra:
        assert (await infra.health()).ok
        with user_context(uuid4()):
            await infra.db.execute("SELECT name FROM contacts")
        await infra.kv.hit("demo", 60)

asyncio.run(main())
print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_async_memory_mode_imports_no_driver_of_the_real_backends_either() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _ASYNC_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    loaded = set(done.stdout.split())
    assert "crm_infra" in loaded
    assert not loaded & {"psycopg", "psycopg_pool", "psycopg_binary", "hvac", "requests"}


def test_the_adapters_package_still_offers_every_client() -> None:
    from crm_infra import adapters

    assert adapters.PostgresClient.__name__ == "PostgresClient"
    assert adapters.VaultClient.__name__ == "VaultClient"
    assert set(adapters.__all__) <= set(dir(adapters))
