"""The database credentials' keeper, driven step by step on an injected clock against a fake
Vault: renewal, replacement before the maximum, an unreachable Vault, revocation, recovery."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from crm_infra import BackendUnavailableError, DatabaseCredentialsExpiredError
from crm_infra.adapters.postgres import (
    DynamicCredentials,
    PostgresConfigError,
    PostgresCredentialsExpiredError,
    PostgresError,
    PostgresUnavailableError,
)
from crm_infra.adapters.postgres.credentials import LiveSecrets, credentials_from_secret
from crm_infra.errors import SecretAccessDeniedError, SecretStoreError, SecretStoreUnavailableError
from crm_infra.leases import Grant, Lifetime
from crm_infra.secret_paths import DatabaseSecret
from tests.fixtures.clock import ManualClock


class FakeVault:
    """A database secrets engine: leases of ``ttl`` seconds, renewable up to ``max_ttl``."""

    def __init__(self, clock: ManualClock, *, ttl: float = 30.0, max_ttl: float = 90.0) -> None:
        self.clock = clock
        self.ttl = ttl
        self.max_ttl = max_ttl
        self.down = False
        self.refuse: SecretStoreError | None = None
        self.token_lifetime: Lifetime | None = None
        self.issued: list[str] = []
        self.renewals = 0
        self.revoked: list[str] = []
        self._max_end: dict[str, float] = {}

    def _call(self) -> None:
        if self.down:
            raise SecretStoreUnavailableError("Vault at http://vault: cannot connect")
        if self.refuse is not None:
            raise self.refuse

    def issue_lease(self, path: str, *, timeout: float | None = None) -> Grant:
        self._call()
        n = len(self.issued) + 1
        lease_id = f"{path}/LEASE-ID-{n}"
        self.issued.append(lease_id)
        self._max_end[lease_id] = self.clock() + self.max_ttl
        data = {"username": f"v-app-USER-{n}", "password": f"PASSWORD-{n}"}
        return Grant(lease_id=lease_id, duration=self.ttl, renewable=True, data=data)

    def renew_lease(
        self, lease_id: str, increment: float, *, timeout: float | None = None
    ) -> Grant:
        self._call()
        if lease_id in self.revoked or lease_id not in self._max_end:
            raise SecretStoreError("Vault at http://vault: renewing failed: lease not found")
        self.renewals += 1
        granted = min(increment, self._max_end[lease_id] - self.clock())
        return Grant(lease_id=lease_id, duration=granted, renewable=True)

    def revoke_lease(self, lease_id: str, *, timeout: float | None = None) -> None:
        self._call()
        self.revoked.append(lease_id)


class FakeConnection:
    def __init__(self, user: str) -> None:
        self.info = type("Info", (), {"user": user})()
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def vault(clock: ManualClock) -> FakeVault:
    return FakeVault(clock)


@pytest.fixture
def creds(vault: FakeVault, clock: ManualClock) -> DynamicCredentials:
    made = DynamicCredentials(vault, "crm-app", clock=clock)
    made.step(clock())  # nothing is due before open: no thread is involved in these tests
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("crm_infra.adapters.postgres.credentials.KeeperThread.start", _no_thread)
        made.open()
    return made


def _no_thread(self: object) -> None:
    """The tests call step() themselves."""


def _retired(creds: DynamicCredentials) -> list[int]:
    calls: list[int] = []
    creds.on_replaced(lambda: calls.append(1))
    return calls


def _run_until(creds: DynamicCredentials, clock: ManualClock, until: float) -> None:
    """Step the keeper at every time it asks for, up to ``until``."""
    while True:
        wake = creds.step(clock())
        if wake > until:
            clock.now = until
            creds.step(until)
            return
        clock.now = max(clock.now, wake)


def test_open_reads_credentials_that_new_connections_use(creds: DynamicCredentials) -> None:
    assert creds.connect_kwargs() == {"user": "v-app-USER-1", "password": "PASSWORD-1"}
    assert creds.path == "database/creds/crm-app"


def test_nothing_is_asked_of_vault_before_two_thirds_of_the_lease(
    creds: DynamicCredentials, vault: FakeVault, clock: ManualClock
) -> None:
    wake = creds.step(clock())
    assert wake == 1020.0
    clock.now = 1019.9
    creds.step(clock())
    assert vault.renewals == 0
    clock.now = 1020.0
    creds.step(clock())
    assert vault.renewals == 1
    assert creds.connect_kwargs()["user"] == "v-app-USER-1"


def test_before_the_maximum_new_credentials_replace_the_old_and_their_connections_go(
    creds: DynamicCredentials, vault: FakeVault, clock: ManualClock
) -> None:
    retired = _retired(creds)
    _run_until(creds, clock, 1000.0 + 90.0)  # the first lease's maximum
    assert len(vault.issued) == 2
    assert creds.connect_kwargs()["user"] == "v-app-USER-2"
    assert retired == [1]
    # The switch came a third of the first grant (10 s) before the old lease's end, at the
    # latest: the old connections were drained while the old lease still lived.
    assert vault.renewals >= 3


def test_a_minute_of_rotations_never_leaves_new_connections_without_credentials(
    creds: DynamicCredentials, vault: FakeVault, clock: ManualClock
) -> None:
    for _ in range(600):
        clock.now += 1.0
        creds.step(clock())
        assert creds.expired_error("execute") is None
        creds.connect_kwargs()
    assert len(vault.issued) >= 6


def test_with_vault_unreachable_the_credentials_serve_until_their_end_then_fail_typed(
    creds: DynamicCredentials, vault: FakeVault, clock: ManualClock
) -> None:
    retired = _retired(creds)
    vault.down = True
    # The lease ends at 1030; it is given up a margin before (half the lead, 5 s at most).
    stop_at = 1030.0 - 5.0
    attempts = 0
    while clock.now < stop_at - 0.01:
        clock.now = min(creds.step(clock()), stop_at - 0.01)
        attempts += 1
        assert creds.connect_kwargs()["user"] == "v-app-USER-1"
        assert creds.expired_error("execute") is None
    assert retired == []
    assert attempts >= 5  # retried, more often as the end neared
    clock.now = stop_at
    creds.step(clock())
    assert retired == [1]  # the pool is drained at the end
    with pytest.raises(PostgresCredentialsExpiredError) as caught:
        creds.connect_kwargs()
    error = caught.value
    assert isinstance(error, DatabaseCredentialsExpiredError)
    assert isinstance(error, BackendUnavailableError)
    assert "database/creds/crm-app" in str(error)
    assert "cannot connect" in str(error)
    assert "PASSWORD" not in str(error)
    assert "LEASE-ID" not in str(error)
    assert isinstance(creds.expired_error("execute"), PostgresCredentialsExpiredError)


def test_once_vault_answers_again_new_credentials_end_the_failures(
    creds: DynamicCredentials, vault: FakeVault, clock: ManualClock
) -> None:
    vault.down = True
    _run_until(creds, clock, 1040.0)
    assert creds.expired_error("execute") is not None
    vault.down = False
    _run_until(creds, clock, 1080.0)
    assert creds.expired_error("execute") is None
    assert creds.connect_kwargs()["user"] == "v-app-USER-2"


def test_a_revoked_lease_found_at_renewal_is_replaced_at_once(
    creds: DynamicCredentials, vault: FakeVault, clock: ManualClock
) -> None:
    retired = _retired(creds)
    vault.revoked.append(vault.issued[0])
    clock.now = 1020.0
    creds.step(clock())
    assert creds.connect_kwargs()["user"] == "v-app-USER-2"
    assert retired == [1]


def test_connections_closed_by_the_server_have_the_lease_checked_at_once(
    creds: DynamicCredentials, vault: FakeVault, clock: ManualClock
) -> None:
    vault.revoked.append(vault.issued[0])  # revoked by an operator: its sessions were ended
    creds.suspect()
    clock.now = 1001.0  # long before the renewal would have found it
    creds.step(clock())
    assert creds.connect_kwargs()["user"] == "v-app-USER-2"


def test_a_connection_opened_with_replaced_credentials_is_discarded(
    creds: DynamicCredentials, vault: FakeVault, clock: ManualClock
) -> None:
    current = FakeConnection("v-app-USER-1")
    creds.opened(current)
    vault.revoked.append(vault.issued[0])
    creds.suspect()
    creds.step(clock())
    late = FakeConnection("v-app-USER-1")  # was connecting while the credentials changed
    with pytest.raises(PostgresError, match="replaced credentials"):
        creds.opened(late)
    assert late.closed


def test_a_connection_the_drain_missed_is_retired_again_before_its_credentials_end(
    creds: DynamicCredentials, vault: FakeVault, clock: ManualClock
) -> None:
    straggler = FakeConnection("v-app-USER-1")
    creds.opened(straggler)
    retired = _retired(creds)
    vault.revoked.append(vault.issued[0])
    creds.suspect()
    creds.step(clock())
    assert retired == [1]
    _run_until(creds, clock, 1030.0)  # the old lease's end
    assert retired == [1, 1]
    straggler.close()


def test_a_lease_is_replaced_before_the_vault_token_that_read_it_ends(
    vault: FakeVault, clock: ManualClock
) -> None:
    token = Lifetime(granted_at=clock(), duration=20.0, renewable=True)
    vault.token_lifetime = token
    creds = DynamicCredentials(vault, "crm-app", clock=clock)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("crm_infra.adapters.postgres.credentials.KeeperThread.start", _no_thread)
        creds.open()
    token.renewed(clock() + 10.0, 5.0)  # its maximum: it ends at 1015, and its leases with it
    vault.token_lifetime = Lifetime(granted_at=clock() + 10.0, duration=20.0, renewable=True)
    _run_until(creds, clock, 1015.0 - 5.0)
    assert creds.connect_kwargs()["user"] == "v-app-USER-2"


def test_close_revokes_the_leases_and_a_refusal_is_only_logged(
    creds: DynamicCredentials, vault: FakeVault, caplog: pytest.LogCaptureFixture
) -> None:
    vault.refuse = SecretAccessDeniedError("Vault at http://vault: revoking: permission denied")
    with caplog.at_level(logging.INFO, "crm_infra.adapters.postgres.credentials"):
        creds.close()
    assert "not revoked at close" in caplog.text
    vault.refuse = None
    creds.close()
    assert vault.revoked == [vault.issued[0]]


def test_no_log_line_names_a_lease_id_user_or_password(
    vault: FakeVault, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        creds = DynamicCredentials(vault, "crm-app", clock=clock)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("crm_infra.adapters.postgres.credentials.KeeperThread.start", _no_thread)
            creds.open()
        _run_until(creds, clock, 1100.0)  # renewals and a replacement
        vault.down = True
        _run_until(creds, clock, 1200.0)  # failures, the end
        vault.down = False
        _run_until(creds, clock, 1210.0)  # recovery
        creds.close()
    messages = [record.getMessage() for record in caplog.records]
    events = {
        getattr(record, "crm_event", None)
        for record in caplog.records
        if record.name == "crm_infra.adapters.postgres.credentials"
    }
    assert {
        "db_credentials.issued",
        "db_credentials.renewed",
        "db_credentials.replaced",
        "db_credentials.renewal_failed",
        "db_credentials.ended",
        "db_credentials.revoked",
    } <= events
    assert None not in events  # every line carries its fields
    assert any("renewed" in m for m in messages)
    assert any("replaced" in m for m in messages)
    assert any("ended" in m for m in messages)
    assert any("issued again" in m for m in messages)
    for message in messages:
        for secret in ("LEASE-ID", "USER-", "PASSWORD"):
            assert secret not in message, message
    assert "LEASE-ID" not in repr(creds)


def test_open_says_why_vault_gave_no_credentials(vault: FakeVault, clock: ManualClock) -> None:
    vault.down = True
    with pytest.raises(PostgresUnavailableError, match="no database credentials from Vault"):
        DynamicCredentials(vault, "crm-app", clock=clock).open()
    vault.down = False
    vault.refuse = SecretAccessDeniedError("Vault at http://vault: permission denied")
    with pytest.raises(PostgresError, match="permission denied") as caught:
        DynamicCredentials(vault, "crm-app", clock=clock).open()
    assert not isinstance(caught.value, BackendUnavailableError)


@pytest.mark.parametrize(("role", "mount"), [("a/b", "database"), ("..", "database"),
                                             ("crm-app", "/db"), ("", "database")])
def test_a_role_or_mount_that_is_not_a_plain_path_is_refused(
    vault: FakeVault, role: str, mount: str
) -> None:
    with pytest.raises(PostgresConfigError):
        DynamicCredentials(vault, role, mount=mount)


def test_the_secret_names_which_paths_take_credentials_from_vault(vault: FakeVault) -> None:
    secret = DatabaseSecret(
        url="postgresql://db:5432/crm",
        admin_url="postgresql://admin:pw@db:5432/crm",
        creds_role="crm-app",
        creds_mount="db-engine",
    )
    args = credentials_from_secret(vault, secret)
    assert set(args) == {"credentials"}
    assert args["credentials"].path == "db-engine/creds/crm-app"


def test_messages_are_scrubbed_of_the_passwords_held_now(
    creds: DynamicCredentials, vault: FakeVault, clock: ManualClock
) -> None:
    secrets: Any = LiveSecrets(("static-pw", None), (creds, None))
    assert list(secrets) == ["static-pw", None, "PASSWORD-1"]
    vault.revoked.append(vault.issued[0])
    creds.suspect()
    creds.step(clock())
    assert "PASSWORD-2" in list(secrets)
