"""Vault leases and tokens over time: when to renew, when to replace, when they truly end.

Vault grants a dynamic secret (database credentials) or a token for a duration, renewable up
to a maximum; a secret also dies with the token that read it. The rules are written once here,
without I/O, for the Vault client's token and the database clients' credentials alike:

- renew when two thirds of the last grant have passed, asking for the first grant again;
- a renewal that grants less than asked has met the maximum: the end is final, and the lease
  (or token) is replaced a third of its first grant before that end;
- a lease whose token's end is final is replaced before that end too;
- when Vault cannot be reached, retry, more often as the end nears, and keep using what is held
  until it truly ends (a small margin before the end, since Vault revokes at the end itself).

:class:`KeeperThread` runs one keeper's ``step`` in the background; the keepers (the database
credentials, the AppRole token) decide with :func:`plan` and :func:`retry_delay`, so their
tests drive ``step`` with an injected clock and no thread.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import attrs

__all__ = [
    "LEAD_FRACTION",
    "MIN_LEAD",
    "RENEW_FRACTION",
    "Grant",
    "KeeperThread",
    "LeaseIssuer",
    "Lifetime",
    "Plan",
    "lease_tag",
    "plan",
    "retry_delay",
]

logger = logging.getLogger(__name__)

RENEW_FRACTION = 2 / 3
"""Renew once this much of the last grant has passed (what Vault's own agent does)."""
LEAD_FRACTION = 1 / 3
"""Replace a lease whose end is final this much of its first grant before that end."""
MIN_LEAD = 1.0
"""Seconds: the least lead, for grants of a few seconds."""
MAX_END_MARGIN = 5.0
"""Seconds: the most a lease is given up before its end (Vault revokes at the end itself)."""
MIN_RETRY = 0.25
MAX_RETRY = 30.0
# Vault grants whole seconds: a grant one second short of what was asked is not a cap.
_ROUNDING = 1.0


@attrs.define(eq=False)
class Lifetime:
    """What Vault granted last for one lease or token, on the process's monotonic clock.

    Updated in place by its keeper (:meth:`renewed`), so that a secret's ``parent`` (the token
    that read it) follows the token's renewals.

    Attributes:
        granted_at: the clock just before the request that got the grant was sent, so that
            :attr:`end` is never later than Vault's.
        duration: seconds granted; 0 means it never expires (a root token).
        renewable: whether Vault allows renewing it at all.
        final: the end can no longer move (not renewable, or a renewal met the maximum).
        parent: the token a secret dies with, or None.
    """

    granted_at: float
    duration: float
    renewable: bool
    parent: Lifetime | None = None
    first_duration: float = attrs.field(init=False)
    final: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.first_duration = self.duration
        self.final = not self.renewable

    @property
    def end(self) -> float:
        """When this grant ends (infinity for one that never does)."""
        return math.inf if self.duration <= 0 else self.granted_at + self.duration

    @property
    def lead(self) -> float:
        """How long before a final end to replace it."""
        return max(MIN_LEAD, self.first_duration * LEAD_FRACTION)

    @property
    def end_margin(self) -> float:
        """How long before its true end to stop using it."""
        return min(self.lead / 2, MAX_END_MARGIN)

    def true_end(self) -> float:
        """When it really ends: its own end, or its token's if that comes first."""
        own = self.end
        return own if self.parent is None else min(own, self.parent.true_end())

    def usable_until(self) -> float:
        """When to stop using it: a margin before its own end, or before its token's (by the
        token's own margin: a renewable token is renewed well before that)."""
        own = self.end - self.end_margin
        return own if self.parent is None else min(own, self.parent.usable_until())

    def final_end(self) -> float:
        """The earliest end that can no longer move (infinity while every end may)."""
        own = self.end if self.final else math.inf
        return own if self.parent is None else min(own, self.parent.final_end())

    def renewed(self, granted_at: float, duration: float) -> None:
        """Record a renewal; one granting less than the first grant has met the maximum."""
        self.granted_at = granted_at
        self.duration = duration
        if duration + _ROUNDING < self.first_duration:
            self.final = True


@attrs.frozen
class Plan:
    """What to do next about a lease, and when (on the same clock as the lease)."""

    action: Literal["renew", "replace", "none"]
    at: float


def plan(lifetime: Lifetime) -> Plan:
    """Return the next step for ``lifetime``: renew it, replace it, or nothing (never ends)."""
    replace_at = lifetime.final_end() - lifetime.lead
    if lifetime.renewable and not lifetime.final and lifetime.duration > 0:
        renew_at = lifetime.granted_at + RENEW_FRACTION * lifetime.duration
        if renew_at < replace_at:
            return Plan("renew", renew_at)
    if math.isinf(replace_at):
        return Plan("none", math.inf)
    return Plan("replace", replace_at)


def retry_delay(failures: int, now: float, lifetime: Lifetime | None) -> float:
    """Seconds to wait before asking Vault again after ``failures`` failures in a row.

    Doubles from :data:`MIN_RETRY` up to :data:`MAX_RETRY`; while something is still held,
    never more than a quarter of the time it has left, so the attempts thicken as its end
    nears.
    """
    delay = min(MAX_RETRY, MIN_RETRY * 2.0 ** max(0, failures - 1))
    if lifetime is not None:
        left = lifetime.usable_until() - now
        if left > 0:
            delay = min(delay, left / 4)
    return max(MIN_RETRY, delay)


def lease_tag(lease_id: str) -> str:
    """Return a short tag for a lease id, for logs and messages: it tells leases apart and
    gives nothing away (a lease id lets whoever holds a token renew or revoke it)."""
    return hashlib.sha256(lease_id.encode()).hexdigest()[:8]


@attrs.frozen
class Grant:
    """Vault's answer to reading a dynamic secret or renewing its lease."""

    lease_id: str = attrs.field(repr=False)
    duration: float
    renewable: bool
    data: Mapping[str, Any] = attrs.field(repr=False, factory=dict)


class LeaseIssuer(Protocol):
    """What a keeper of dynamic secrets needs from Vault (:class:`VaultClient` offers it)."""

    @property
    def token_lifetime(self) -> Lifetime | None:
        """The current token's lifetime (None when the client does not track it)."""
        ...

    def issue_lease(self, path: str, *, timeout: float | None = None) -> Grant:
        """Read the dynamic secret at ``path`` (``database/creds/<role>``)."""
        ...

    def renew_lease(
        self, lease_id: str, increment: float, *, timeout: float | None = None
    ) -> Grant:
        """Renew a lease, asking for ``increment`` seconds."""
        ...

    def revoke_lease(self, lease_id: str, *, timeout: float | None = None) -> None:
        """Revoke a lease now."""
        ...


class KeeperThread:
    """Call a keeper's ``step(now) -> next_time`` in a daemon thread, at the times it asks.

    :meth:`nudge` wakes it early; :meth:`close` stops it. The thread holds its keeper weakly:
    a keeper that was never closed ends its thread once it is garbage collected.
    """

    # Checked at least this often: the keeper may be gone, or the clock may have jumped.
    _LONGEST_WAIT = 30.0

    def __init__(
        self,
        name: str,
        step: Callable[[float], float],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._step = weakref.WeakMethod(step)
        self._clock = clock
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread (once)."""
        self._thread.start()

    def nudge(self) -> None:
        """Run the step now rather than at the time it asked for."""
        self._wake.set()

    def close(self) -> None:
        """Stop the thread and wait for it (unless called from the thread itself)."""
        self._closed.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._closed.is_set():
            step = self._step()
            if step is None:
                return
            try:
                next_at = step(self._clock())
            except Exception:  # a keeper's bug must not end the keeping; say so loudly
                logger.exception("%s: a step failed; trying again shortly", self._thread.name)
                next_at = self._clock() + MAX_RETRY
            del step
            wait = min(self._LONGEST_WAIT, max(0.0, next_at - self._clock()))
            self._wake.wait(wait)
            self._wake.clear()
