"""``crm-infra dev`` never leaks the database it provisioned when a stop signal arrives early."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from crm_infra import devstack
from crm_infra.devservers import openbao, valkey


class _Server:
    addr = "http://127.0.0.1:1"
    token = "root"
    port = 1
    url = "redis://127.0.0.1:1/0"

    def __init__(self, **_: object) -> None:
        pass

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *_: object) -> None:
        pass


@contextmanager
def _fake_openbao(**_: object) -> Iterator[_Server]:
    yield _Server()


def test_a_signal_as_provisioning_returns_still_drops_the_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made = devstack.Provisioned(
        database=cast(Any, None),
        database_name="crm_dev_x",
        app_role="app",
        admin_role="admin",
        applied=(),
        app_token="app-token",
    )
    dropped: list[devstack.Provisioned] = []

    def provision(**_: object) -> devstack.Provisioned:
        # SIGTERM lands after the database exists and before run_dev has registered its cleanup.
        os.kill(os.getpid(), signal.SIGTERM)
        return made

    monkeypatch.setattr(openbao, "openbao_dev_server", _fake_openbao)
    monkeypatch.setattr(valkey, "ValkeyDevServer", _Server)
    monkeypatch.setattr(devstack, "provision", provision)
    monkeypatch.setattr(devstack, "_cleanup_database", lambda m, out: dropped.append(m))
    env_file = tmp_path / "dev.env"
    out = io.StringIO()
    handler_before = signal.getsignal(signal.SIGTERM)

    assert devstack.run_dev(env_file=str(env_file), database_url=None, out=out) == 0
    assert dropped == [made]
    assert not env_file.exists()
    assert "SIGTERM: stopping" in out.getvalue()
    assert signal.getsignal(signal.SIGTERM) is handler_before
