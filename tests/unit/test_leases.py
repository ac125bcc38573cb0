"""The lease rules, on a clock of their own: renew at two thirds, replace before a final end,
retry more often as the end nears."""

from __future__ import annotations

import math

from crm_infra.leases import MIN_RETRY, Lifetime, lease_tag, plan, retry_delay


def test_a_renewable_lease_is_renewed_at_two_thirds_of_its_grant() -> None:
    lease = Lifetime(granted_at=100.0, duration=30.0, renewable=True)
    step = plan(lease)
    assert step.action == "renew"
    assert step.at == 120.0


def test_each_renewal_moves_the_next_one_to_two_thirds_of_the_new_grant() -> None:
    lease = Lifetime(granted_at=0.0, duration=30.0, renewable=True)
    lease.renewed(20.0, 30.0)
    assert not lease.final
    assert plan(lease) == plan(Lifetime(granted_at=20.0, duration=30.0, renewable=True))


def test_a_renewal_granting_less_than_asked_makes_the_end_final_and_plans_a_replacement() -> None:
    lease = Lifetime(granted_at=0.0, duration=30.0, renewable=True)
    lease.renewed(50.0, 12.0)  # the maximum is 62 s after the first grant
    assert lease.final
    step = plan(lease)
    assert step.action == "replace"
    assert step.at == 62.0 - 10.0  # a third of the first grant before the end


def test_a_grant_one_second_short_is_vaults_rounding_not_the_maximum() -> None:
    lease = Lifetime(granted_at=0.0, duration=30.0, renewable=True)
    lease.renewed(20.0, 29.0)
    assert not lease.final


def test_a_lease_that_cannot_be_renewed_is_replaced_before_its_end() -> None:
    lease = Lifetime(granted_at=0.0, duration=9.0, renewable=False)
    assert plan(lease).action == "replace"
    assert plan(lease).at == 6.0


def test_short_grants_keep_a_lead_of_at_least_a_second() -> None:
    lease = Lifetime(granted_at=0.0, duration=1.5, renewable=False)
    assert lease.lead == 1.0
    assert plan(lease).at == 0.5


def test_a_lease_is_replaced_before_its_tokens_final_end_and_not_before_a_renewable_one() -> None:
    token = Lifetime(granted_at=0.0, duration=20.0, renewable=True)
    lease = Lifetime(granted_at=0.0, duration=30.0, renewable=True, parent=token)
    assert plan(lease).action == "renew"  # the token is renewed by its own keeper
    assert lease.true_end() == 20.0
    token.renewed(10.0, 5.0)  # the token met its maximum: it ends at 15
    assert lease.final_end() == 15.0
    step = plan(lease)
    assert step.action == "replace"
    assert step.at == 15.0 - 10.0


def test_a_token_that_never_expires_plans_nothing() -> None:
    root = Lifetime(granted_at=0.0, duration=0.0, renewable=False)
    assert math.isinf(root.end)
    assert plan(root).action == "none"


def test_the_end_margin_is_half_the_lead_and_at_most_five_seconds() -> None:
    assert Lifetime(0.0, 9.0, True).end_margin == 1.5
    assert Lifetime(0.0, 3600.0, True).end_margin == 5.0


def test_retries_double_up_to_a_cap() -> None:
    delays = [retry_delay(n, 0.0, None) for n in range(1, 12)]
    assert delays[0] == MIN_RETRY
    assert delays == sorted(delays)
    assert delays[-1] == 30.0


def test_retries_come_at_least_four_times_in_the_time_left() -> None:
    lease = Lifetime(granted_at=0.0, duration=60.0, renewable=True)
    usable_until = lease.true_end() - lease.end_margin
    now = usable_until - 8.0
    assert retry_delay(10, now, lease) == 2.0
    assert retry_delay(10, usable_until - 0.1, lease) == MIN_RETRY


def test_a_lease_tag_is_short_stable_and_not_the_id() -> None:
    lease_id = "database/creds/crm-app/Xzrn7JGWZa550sDPwXX4Bs5V"
    tag = lease_tag(lease_id)
    assert tag == lease_tag(lease_id)
    assert len(tag) == 8
    assert tag not in lease_id
    assert lease_tag(lease_id + "x") != tag


def test_a_lease_bound_by_its_token_is_used_until_the_tokens_own_margin() -> None:
    token = Lifetime(granted_at=0.0, duration=8.0, renewable=True)  # margin 1.33 s
    lease = Lifetime(granted_at=0.0, duration=60.0, renewable=True, parent=token)  # margin 5 s
    assert lease.usable_until() == token.usable_until() == 8.0 - 4.0 / 3.0
    token.renewed(5.0, 8.0)  # renewed by its keeper: the lease may be used longer
    assert lease.usable_until() == 13.0 - 4.0 / 3.0
