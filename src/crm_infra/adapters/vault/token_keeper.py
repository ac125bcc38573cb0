"""Keep an AppRole token alive in the background: renew it, log in again when it cannot be.

A token renewed with ``auth/token/renew-self`` lives at most the role's ``token_max_ttl``;
past it, renewing grants less than asked and then nothing. The keeper renews at two thirds of
each grant and logs in again as soon as a renewal shows the maximum is near (the old token
still lives until its end, and so do the leases it read; their keepers replace them under the
new token). While Vault cannot be reached it retries, more often as the end nears; a token
that died meanwhile is replaced by the client's next request, which logs in again.
The timing rules are :mod:`crm_infra.leases`'; this module only applies them to the token.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from crm_infra.errors import SecretStoreError, SecretStoreUnavailableError
from crm_infra.leases import KeeperThread, Lifetime, plan, retry_delay
from crm_infra.telemetry import count

__all__ = ["TOKEN_EVENTS", "TokenKeeper"]

logger = logging.getLogger("crm_infra.adapters.vault")


TOKEN_EVENTS = "crm.vault.token.events"  # noqa: S105 - a metric name
"""The counter of the AppRole token's renewals, logins and failures, by ``crm.event``."""


def _event(event: str) -> dict[str, str]:
    """Count ``event`` (a renewal, a new login, a failure) and return the fields of its log
    line, for handlers that keep them apart (never the token)."""
    count(TOKEN_EVENTS, 1, {"crm.event": event})
    return {"crm_event": f"vault_token.{event}"}


class _TokenOwner(Protocol):
    @property
    def token_lifetime(self) -> Lifetime | None: ...

    def _renew_token(self, *, timeout: float | None = None) -> Lifetime: ...

    def _login(self) -> None: ...


class TokenKeeper:
    """Renew ``owner``'s AppRole token before it expires; log in again when renewal cannot
    help. :meth:`step` decides and acts once; :meth:`start` runs it in a daemon thread."""

    def __init__(self, owner: _TokenOwner, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._owner = owner
        self._clock = clock
        self._failures = 0
        self._retry_at = -math.inf
        self._thread = KeeperThread("crm-vault-token", self.step, clock=clock)

    def start(self) -> None:
        """Start keeping the token in the background."""
        self._thread.start()

    def close(self) -> None:
        """Stop the background thread."""
        self._thread.close()

    def step(self, now: float) -> float:
        """Renew or replace the token if it is time; return when to look again."""
        lifetime = self._owner.token_lifetime
        if lifetime is None:
            return math.inf
        next_step = plan(lifetime)
        due = max(next_step.at, self._retry_at)
        if next_step.action == "none" or now < due:
            return due
        try:
            if next_step.action == "renew":
                self._renew(lifetime)
            else:
                self._log_in_again("its end is final")
        except SecretStoreUnavailableError as exc:
            return self._failed(now, lifetime, exc)
        except SecretStoreError as exc:
            if next_step.action != "renew":
                return self._failed(now, lifetime, exc)
            # Refused (revoked, expired, not renewable after all): a new login is the way.
            logger.warning(
                "Vault token: renewal refused (%s); logging in again",
                exc,
                extra=_event("renewal_refused"),
            )
            try:
                self._log_in_again("renewal was refused")
            except SecretStoreError as again:
                return self._failed(now, lifetime, again)
        self._failures = 0
        self._retry_at = -math.inf
        current = self._owner.token_lifetime
        return math.inf if current is None else plan(current).at

    def _renew(self, lifetime: Lifetime) -> None:
        renewed = self._owner._renew_token()
        if renewed.final:
            logger.info(
                "Vault token: renewal granted %.0fs, less than asked (token_max_ttl near); "
                "logging in again",
                renewed.duration,
                extra=_event("renewed_to_maximum"),
            )
            self._log_in_again("it met its maximum lifetime")
        else:
            logger.info(
                "Vault token renewed: ttl=%.0fs", renewed.duration, extra=_event("renewed")
            )

    def _log_in_again(self, why: str) -> None:
        self._owner._login()
        current = self._owner.token_lifetime
        ttl = "?" if current is None else f"{current.duration:.0f}"
        logger.info(
            "Vault token: logged in again with AppRole (%s): ttl=%ss",
            why,
            ttl,
            extra=_event("logged_in_again"),
        )

    def _failed(self, now: float, lifetime: Lifetime, exc: SecretStoreError) -> float:
        self._failures += 1
        delay = retry_delay(self._failures, now, lifetime)
        self._retry_at = now + delay
        left = lifetime.true_end() - now
        logger.warning(
            "Vault token: could not renew or replace it (%s); retrying in %.1fs, %.0fs left",
            exc,
            delay,
            max(0.0, left),
            extra=_event("renewal_failed"),
        )
        return self._retry_at
