"""Health checks run concurrently, each under its own timeout, and report short, safe errors."""

from __future__ import annotations

import threading
import time

import pytest

from crm_infra import ComponentHealth, HealthReport, SecretStoreUnavailableError
from crm_infra.health import redact, redact_address, run_checks, short_error


def healthy() -> bool:
    return True


def test_all_healthy_is_ok() -> None:
    report = run_checks({"secrets": healthy, "database": healthy}, timeout=1)
    assert report.ok
    assert list(report.components) == ["secrets", "database"]
    assert all(c.ok and c.error is None and c.latency_ms >= 0 for c in report.components.values())


def test_a_raising_check_is_reported_with_its_class_and_message() -> None:
    def down() -> bool:
        raise SecretStoreUnavailableError("Vault at http://127.0.0.1:1 is unreachable")

    report = run_checks({"secrets": down, "keyvalue": healthy}, timeout=1)
    assert not report.ok
    assert report.components["secrets"].error == (
        "SecretStoreUnavailableError: Vault at http://127.0.0.1:1 is unreachable"
    )
    assert report.components["keyvalue"].ok


def test_a_check_answering_false_is_unhealthy() -> None:
    report = run_checks({"database": lambda: False}, timeout=1)
    assert report.components["database"] == ComponentHealth(
        False, report.components["database"].latency_ms, "health check answered False"
    )


def test_a_hanging_check_neither_hangs_the_report_nor_hides_the_others() -> None:
    release = threading.Event()

    def hangs() -> bool:
        release.wait(30)
        return True

    def slowish() -> bool:
        time.sleep(0.2)
        return True

    start = time.monotonic()
    try:
        report = run_checks(
            {"secrets": healthy, "database": hangs, "keyvalue": slowish}, timeout=0.5
        )
    finally:
        release.set()
    elapsed = time.monotonic() - start
    assert elapsed < 2, "the report must not wait for the hanging check"
    assert report.components["secrets"].ok
    assert report.components["keyvalue"].ok, "a slow-but-in-time check counts as healthy"
    database = report.components["database"]
    assert not database.ok
    assert database.error == "no answer within 0.5 s"
    assert database.latency_ms >= 500


def test_checks_run_concurrently() -> None:
    def slow() -> bool:
        time.sleep(0.3)
        return True

    start = time.monotonic()
    report = run_checks({"a": slow, "b": slow, "c": slow}, timeout=5)
    assert report.ok
    assert time.monotonic() - start < 0.8


def test_report_to_dict_has_the_documented_shape() -> None:
    report = HealthReport(
        {
            "secrets": ComponentHealth(True, 1.5),
            "database": ComponentHealth(False, 5000.0, "no answer within 5 s"),
            "keyvalue": ComponentHealth(True, 0.3),
        }
    )
    assert report.to_dict() == {
        "ok": False,
        "components": {
            "secrets": {"ok": True, "latency_ms": 1.5, "error": None},
            "database": {"ok": False, "latency_ms": 5000.0, "error": "no answer within 5 s"},
            "keyvalue": {"ok": True, "latency_ms": 0.3, "error": None},
        },
    }


def test_report_components_cannot_be_changed() -> None:
    report = HealthReport({"secrets": ComponentHealth(True, 1.0)})
    with pytest.raises(TypeError):
        report.components["secrets"] = ComponentHealth(False, 1.0)  # type: ignore[index]  # read-only


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cannot connect to postgresql://crm_app:MARKER-pw@db:5432/crm",
            "cannot connect to postgresql://crm_app:***@db:5432/crm",
        ),
        (
            "host=db user=crm password=MARKER-pw dbname=crm",
            "host=db user=crm password=*** dbname=crm",
        ),
        ("redis://:MARKER-pw@127.0.0.1:6379/0 refused", "redis://:***@127.0.0.1:6379/0 refused"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_redact_masks_passwords(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_short_error_is_one_short_line_without_secrets() -> None:
    exc = RuntimeError("line one\nline two postgresql://u:MARKER-pw@h/db " + "x" * 1000)
    line = short_error(exc)
    assert "\n" not in line
    assert "MARKER-pw" not in line
    assert line.startswith("RuntimeError: line one line two")
    assert len(line) <= 300


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("http://user:MARKER-pw@127.0.0.1:8200", "http://***@127.0.0.1:8200"),
        ("https://MARKER-bare-token@vault.example/v1?x=a@b", "https://***@vault.example/v1?x=a@b"),
        ("http://127.0.0.1:8200", "http://127.0.0.1:8200"),
        (None, None),
    ],
)
def test_redact_address_removes_the_whole_user_info(address: str | None, shown: str | None) -> None:
    assert redact_address(address) == shown
