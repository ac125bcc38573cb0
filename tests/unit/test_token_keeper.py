"""The AppRole token's keeper, step by step on an injected clock: renew at two thirds, log in
again at the maximum, retry while Vault is unreachable."""

from __future__ import annotations

import pytest

from crm_infra.adapters.vault.token_keeper import TokenKeeper
from crm_infra.errors import SecretStoreAuthError, SecretStoreUnavailableError
from crm_infra.leases import Lifetime
from tests.fixtures.clock import ManualClock


class FakeOwner:
    """A Vault client's token: ``ttl`` seconds, renewable up to ``max_ttl`` after login."""

    def __init__(self, clock: ManualClock, *, ttl: float = 30.0, max_ttl: float = 100.0) -> None:
        self.clock = clock
        self.ttl = ttl
        self.max_ttl = max_ttl
        self.logins = 0
        self.renewals = 0
        self.down = False
        self.revoked = False
        self.token_lifetime: Lifetime | None = None
        self._login()

    def _login(self) -> None:
        if self.down:
            raise SecretStoreUnavailableError("Vault at http://vault: cannot connect")
        self.logins += 1
        self.revoked = False
        self.logged_in_at = self.clock()
        self.token_lifetime = Lifetime(self.clock(), self.ttl, True)

    def _renew_token(self, *, timeout: float | None = None) -> Lifetime:
        if self.down:
            raise SecretStoreUnavailableError("Vault at http://vault: cannot connect")
        if self.revoked:
            raise SecretStoreAuthError("Vault at http://vault: the token is invalid")
        self.renewals += 1
        lifetime = self.token_lifetime
        assert lifetime is not None
        left = self.logged_in_at + self.max_ttl - self.clock()
        lifetime.renewed(self.clock(), min(self.ttl, left))
        return lifetime


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(0.0)


def _keeper(owner: FakeOwner, clock: ManualClock) -> TokenKeeper:
    return TokenKeeper(owner, clock=clock)


def test_the_token_is_renewed_at_two_thirds_of_each_grant(clock: ManualClock) -> None:
    owner = FakeOwner(clock)
    keeper = _keeper(owner, clock)
    assert keeper.step(0.0) == 20.0
    clock.now = 20.0
    assert keeper.step(20.0) == 40.0
    assert owner.renewals == 1
    assert owner.logins == 1


def test_at_its_maximum_the_token_is_replaced_by_a_new_login(clock: ManualClock) -> None:
    owner = FakeOwner(clock)
    keeper = _keeper(owner, clock)
    while owner.logins == 1 and clock() < 200.0:
        clock.now = keeper.step(clock())
    # Renewed at 20, 40, 60; at 80 the renewal granted 20 s of the 30 asked: the maximum
    # (100) is near, so the keeper logged in again, while the first token still lived.
    assert owner.renewals == 4
    assert owner.logins == 2
    assert owner.logged_in_at == 80.0


def test_while_vault_is_unreachable_the_keeper_retries_and_does_not_log_in(
    clock: ManualClock,
) -> None:
    owner = FakeOwner(clock)
    keeper = _keeper(owner, clock)
    owner.down = True
    clock.now = 20.0
    wake = keeper.step(20.0)
    assert 20.0 < wake < 30.0
    assert owner.logins == 1
    owner.down = False
    clock.now = wake
    keeper.step(wake)
    assert owner.renewals == 1


def test_a_refused_renewal_is_followed_by_a_new_login(clock: ManualClock) -> None:
    owner = FakeOwner(clock)
    keeper = _keeper(owner, clock)
    owner.revoked = True
    clock.now = 20.0
    keeper.step(20.0)
    assert owner.logins == 2
