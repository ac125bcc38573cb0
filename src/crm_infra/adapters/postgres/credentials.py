"""Short-lived PostgreSQL credentials from Vault's database secrets engine, kept valid.

:class:`DynamicCredentials` reads ``<mount>/creds/<role>`` and keeps what it got usable for
as long as the process runs, in a background thread (:class:`crm_infra.leases.KeeperThread`):

- the lease is renewed at two thirds of each grant;
- before its end becomes final (the role's ``max_ttl``, or the end of the Vault token that read
  it), new credentials are read, and every pooled connection opened with the old ones is
  retired (the pool is drained: idle connections close at once, busy ones when given back);
- while Vault cannot be reached, the credentials held are used until they truly end; then the
  pool is drained and calls fail with :class:`PostgresCredentialsExpiredError` until Vault
  issues new ones (the keeper keeps asking).

The clients look the credentials up only when their pool opens a connection (the pool's
``kwargs`` is a callable): ``execute`` itself pays nothing. Each step is logged on the logger
``crm_infra.adapters.postgres.credentials`` with the role and a short tag of the lease, never
the lease id, user name or password.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import attrs

from crm_infra.adapters.postgres.errors import (
    PostgresConfigError,
    PostgresCredentialsExpiredError,
    PostgresError,
    PostgresUnavailableError,
)
from crm_infra.errors import (
    InvalidSecretPathError,
    SecretStoreError,
    SecretStoreUnavailableError,
)
from crm_infra.leases import (
    MIN_RETRY,
    Grant,
    KeeperThread,
    LeaseIssuer,
    Lifetime,
    lease_tag,
    plan,
    retry_delay,
)
from crm_infra.redaction import raise_sanitized
from crm_infra.secret_paths import (
    DEFAULT_CREDS_MOUNT,
    DatabaseSecret,
    validate_mount_point,
    validate_secret_path,
)
from crm_infra.telemetry import count

__all__ = [
    "CREDENTIAL_EVENTS",
    "CredentialArgs",
    "DynamicCredentials",
    "LiveSecrets",
    "credentials_from_secret",
]

logger = logging.getLogger(__name__)

CREDENTIAL_EVENTS = "crm.database.credentials.events"
"""The counter of short-lived database credentials' lifecycle (issued, renewed, replaced,
renewal_failed, ended...), by ``crm.event`` and ``crm.database.creds_role``."""

# Revoking at close is a courtesy (the lease ends with its TTL anyway): it may not hold up
# a shutdown for long.
_REVOKE_TIMEOUT = 2.0
# A Vault request of the keeper may take no longer than this when something falls due sooner
# (the end of the credentials held): that deadline is met even while Vault does not answer.
_SHORTEST_REQUEST = 0.5


@attrs.define(eq=False)
class _Held:
    """One set of credentials: its lease, and the connections opened with it."""

    grant: Grant = attrs.field(repr=False)
    lifetime: Lifetime
    user: str = attrs.field(repr=False)
    password: str = attrs.field(repr=False)
    tag: str
    connections: weakref.WeakSet[Any] = attrs.field(factory=weakref.WeakSet, repr=False)

    @property
    def stop_at(self) -> float:
        """When to stop using it: a margin before its true end."""
        return self.lifetime.usable_until()

    def has_open_connections(self) -> bool:
        return any(not conn.closed for conn in list(self.connections))


class _StaleConnectionError(PostgresError):
    """A connection opened with credentials that were replaced meanwhile (discarded)."""


class DynamicCredentials:
    """The login of one pool, read from Vault's database secrets engine and kept valid.

    Give it to :class:`~crm_infra.adapters.PostgresClient` or its asyncio twin
    (``credentials=`` for the application pool, ``admin_credentials=`` for the admin pool)
    with a URL that names host, port and database but no user or password; the client opens
    it, looks it up each time its pool opens a connection, and closes it (give each pool its
    own).

    Args:
        issuer: Vault (a :class:`~crm_infra.adapters.VaultClient`).
        role: the database secrets engine's role (``crm-app``).
        mount: where the database secrets engine is mounted.
        clock: monotonic seconds, the issuer's clock too; injectable for tests.
        revoke_on_close: revoke the leases at :meth:`close` (needs ``update`` on
            ``sys/leases/revoke``; without it they end with their TTL, and that is logged).

    Raises:
        PostgresConfigError: ``role`` or ``mount`` is not a plain Vault path.
    """

    def __init__(
        self,
        issuer: LeaseIssuer,
        role: str,
        *,
        mount: str = DEFAULT_CREDS_MOUNT,
        clock: Callable[[], float] = time.monotonic,
        revoke_on_close: bool = True,
    ) -> None:
        try:
            validate_mount_point(mount)
            validate_secret_path(role)
        except InvalidSecretPathError as exc:
            raise PostgresConfigError(
                f"database credentials from Vault: {exc}", operation="configure"
            ) from None
        if "/" in role:
            raise PostgresConfigError(
                f"database credentials from Vault: the role must be one name, got {role!r}",
                operation="configure",
            )
        self._issuer = issuer
        self._role = role
        self._mount = mount
        self._path = f"{mount}/creds/{role}"
        self._clock = clock
        self._revoke_on_close = revoke_on_close
        self._lock = threading.Lock()  # _current and _retiring, against readers elsewhere
        self._step_lock = threading.RLock()  # one step at a time
        self._current: _Held | None = None
        self._retiring: list[_Held] = []
        self._ended = False
        self._problem = ""  # what Vault said last, for the expired error
        self._failures = 0
        self._retry_at = -math.inf
        self._check_now = False
        self._hooks: list[Callable[[], None]] = []
        self._thread: KeeperThread | None = None
        self._stopped = False

    @property
    def role(self) -> str:
        """The database secrets engine's role."""
        return self._role

    @property
    def path(self) -> str:
        """Where the credentials are read: ``<mount>/creds/<role>``."""
        return self._path

    def __repr__(self) -> str:
        held = self._current
        lease = "none" if held is None else held.tag
        return f"DynamicCredentials(path={self._path!r}, lease={lease})"

    # --- what the clients call ---------------------------------------------------------------

    def open(self) -> None:
        """Read the first credentials and start keeping them (once; later calls do nothing).

        Raises:
            PostgresUnavailableError: Vault cannot be reached.
            PostgresError: Vault refused (the message says why: a policy, no such role...).
        """
        with self._step_lock:
            if self._current is not None:
                return
            if self._stopped:
                raise PostgresError(
                    f"the credentials of {self._path!r} are closed", operation="connect"
                )
            try:
                self._replace(self._clock(), None)
            except SecretStoreError as exc:
                cls = (
                    PostgresUnavailableError
                    if isinstance(exc, SecretStoreUnavailableError)
                    else PostgresError
                )
                raise_sanitized(
                    cls(
                        f"connect failed: no database credentials from Vault at "
                        f"{self._path!r}: {exc}",
                        operation="connect",
                    ),
                    exc,
                )
            self._thread = KeeperThread(f"crm-db-creds-{self._role}", self.step, clock=self._clock)
            self._thread.start()

    def connect_kwargs(self) -> dict[str, str]:
        """Return ``user`` and ``password`` for a new connection.

        Raises:
            PostgresCredentialsExpiredError: the credentials ended and none came to replace
                them.
        """
        held = self._current
        if held is None or self._clock() >= held.stop_at:
            raise self._expired_error("connect")
        return {"user": held.user, "password": held.password}

    def opened(self, conn: Any) -> None:
        """Note a new connection; refuse (close) one opened with credentials replaced while it
        was connecting: the drain of the old ones could have missed it."""
        held = self._current
        if held is None or conn.info.user != held.user:
            conn.close()
            raise _StaleConnectionError(
                f"a connection opened with the replaced credentials of {self._path!r} was "
                "discarded",
                operation="connect",
            )
        held.connections.add(conn)

    def on_replaced(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (from the keeper's thread) whenever the connections opened with the
        credentials held until then must go: after new ones came, or when they ended."""
        self._hooks.append(hook)

    def suspect(self) -> None:
        """Ask Vault about the lease now: connections were closed by the server (a revoked
        lease does that), so the credentials may be gone."""
        self._check_now = True
        if self._thread is not None:
            self._thread.nudge()

    def expired_error(self, operation: str) -> PostgresCredentialsExpiredError | None:
        """Return the error for a call that found no connection because the credentials
        ended, or None while they have not."""
        held = self._current
        if held is not None and self._clock() < held.stop_at:
            return None
        return self._expired_error(operation)

    def passwords(self) -> Iterator[str]:
        """Every password held (for scrubbing messages)."""
        with self._lock:
            held = [h for h in (self._current, *self._retiring) if h is not None]
        for one in held:
            yield one.password

    def stop(self) -> None:
        """Stop keeping the credentials (no more renewals, and no more hooks)."""
        self._stopped = True
        if self._thread is not None:
            self._thread.close()

    def close(self) -> None:
        """Stop, then revoke the leases held (best effort; see ``revoke_on_close``)."""
        self.stop()
        with self._step_lock, self._lock:
            leases = [h for h in (self._current, *self._retiring) if h is not None]
            self._retiring = []
        if not self._revoke_on_close:
            return
        for held in leases:
            try:
                self._issuer.revoke_lease(held.grant.lease_id, timeout=_REVOKE_TIMEOUT)
            except SecretStoreError as exc:
                logger.info(
                    "database credentials not revoked at close (%s): role=%s lease=%s; "
                    "they end with their TTL",
                    exc,
                    self._role,
                    held.tag,
                    extra=self._event("not_revoked", held.tag),
                )
            else:
                logger.info(
                    "database credentials revoked at close: role=%s lease=%s",
                    self._role,
                    held.tag,
                    extra=self._event("revoked", held.tag),
                )

    # --- the keeper --------------------------------------------------------------------------

    def step(self, now: float) -> float:
        """Do what is due at ``now`` (retire, renew, replace); return when to look again."""
        with self._step_lock:
            if self._stopped:
                return math.inf
            self._retire_stragglers(now)
            held = self._current
            if held is not None and not self._ended and now >= held.stop_at:
                self._end(held)
            if now >= self._io_due(held):
                self._act(now, held)
            return self._next_time()

    def _io_due(self, held: _Held | None) -> float:
        if held is None or self._ended:
            return self._retry_at
        if self._check_now:
            return -math.inf
        return max(plan(held.lifetime).at, self._retry_at)

    def _act(self, now: float, held: _Held | None) -> None:
        if held is None or self._ended or plan(held.lifetime).action == "replace":
            self._try_replace(now, held)
        else:
            self._renew(now, held)

    def _next_time(self) -> float:
        held = self._current
        times = [self._io_due(held), *(old.stop_at for old in self._retiring)]
        if held is not None and not self._ended:
            times.append(held.stop_at)
        return min(times)

    def _request_timeout(self, now: float) -> float | None:
        """How long a Vault request may take: not past the next no-I/O deadline."""
        held = self._current
        deadlines = [old.stop_at for old in self._retiring]
        if held is not None and not self._ended:
            deadlines.append(held.stop_at)
        if not deadlines:
            return None
        return max(_SHORTEST_REQUEST, min(deadlines) - now)

    def _renew(self, now: float, held: _Held) -> None:
        self._check_now = False
        started = self._clock()
        try:
            grant = self._issuer.renew_lease(
                held.grant.lease_id,
                held.lifetime.first_duration,
                timeout=self._request_timeout(now),
            )
        except SecretStoreUnavailableError as exc:
            self._failed(now, held, "renew", exc)
            return
        except SecretStoreError as exc:
            # Revoked, expired or refused: only new credentials can help.
            logger.warning(
                "database credentials: renewal refused (%s): role=%s lease=%s; reading new ones",
                exc,
                self._role,
                held.tag,
                extra=self._event("renewal_refused", held.tag),
            )
            self._try_replace(now, held)
            return
        held.lifetime.renewed(started, grant.duration)
        self._failures = 0
        self._retry_at = -math.inf
        if held.lifetime.final:
            logger.info(
                "database credentials renewed up to their maximum: role=%s lease=%s ttl=%.0fs; "
                "new ones will be read %.0fs before the end",
                self._role,
                held.tag,
                grant.duration,
                held.lifetime.lead,
                extra=self._event("renewed_to_maximum", held.tag),
            )
        else:
            logger.info(
                "database credentials renewed: role=%s lease=%s ttl=%.0fs",
                self._role,
                held.tag,
                grant.duration,
                extra=self._event("renewed", held.tag),
            )

    def _try_replace(self, now: float, held: _Held | None) -> None:
        self._check_now = False
        try:
            self._replace(now, held)
        except SecretStoreError as exc:
            self._failed(now, held, "replace", exc)

    def _replace(self, now: float, held: _Held | None) -> None:
        """Read new credentials, make them current, and retire the connections of the old."""
        parent = self._issuer.token_lifetime  # before the request: never later than the truth
        started = self._clock()
        grant = self._issuer.issue_lease(self._path, timeout=self._request_timeout(now))
        user, password = grant.data.get("username"), grant.data.get("password")
        if not isinstance(user, str) or not isinstance(password, str) or not user:
            raise SecretStoreError(
                f"Vault's answer at {self._path!r} holds no username and password: is it a "
                "database secrets engine?"
            )
        new = _Held(
            grant=grant,
            lifetime=Lifetime(started, grant.duration, grant.renewable, parent),
            user=user,
            password=password,
            tag=lease_tag(grant.lease_id),
        )
        with self._lock:
            self._current = new
            if held is not None and not self._ended:
                self._retiring.append(held)
        recovered = self._ended
        self._ended = False
        self._problem = ""
        self._failures = 0
        self._retry_at = -math.inf
        if held is None:
            logger.info(
                "database credentials issued: role=%s lease=%s ttl=%.0fs renewable=%s",
                self._role,
                new.tag,
                grant.duration,
                grant.renewable,
                extra=self._event("issued", new.tag),
            )
            return
        logger.info(
            "database credentials %s: role=%s lease=%s ttl=%.0fs (were lease=%s); retiring "
            "the connections opened with the old ones",
            "issued again after they ended" if recovered else "replaced",
            self._role,
            new.tag,
            grant.duration,
            held.tag,
            extra=self._event("replaced", new.tag),
        )
        if plan(new.lifetime).at <= now:
            # Already due again: the Vault token that read them ends soon too. Asking again
            # at once would only give more of the same; wait for the token keeper.
            self._failures += 1
            self._retry_at = now + retry_delay(self._failures, now, new.lifetime)
        self._fire_hooks()

    def _failed(self, now: float, held: _Held | None, what: str, exc: SecretStoreError) -> None:
        self._failures += 1
        lifetime = None if held is None or self._ended else held.lifetime
        delay = retry_delay(self._failures, now, lifetime)
        if lifetime is None and held is not None:
            # Nothing usable: ask about as often as the credentials would have been renewed.
            delay = min(delay, max(MIN_RETRY, held.lifetime.lead))
        self._retry_at = now + delay
        self._problem = str(exc)
        if lifetime is None:
            logger.warning(
                "database credentials: none usable, could not read new ones (%s): role=%s; "
                "retrying in %.1fs",
                exc,
                self._role,
                delay,
                extra=self._event("no_credentials", None),
            )
            return
        assert held is not None
        logger.warning(
            "database credentials: could not %s them (%s): role=%s lease=%s; keeping them "
            "until %s (%.0fs left), retrying in %.1fs",
            what,
            exc,
            self._role,
            held.tag,
            self._wall(held.stop_at),
            max(0.0, held.stop_at - now),
            delay,
            extra=self._event("renewal_failed", held.tag),
        )

    def _end(self, held: _Held) -> None:
        self._ended = True
        self._failures = 0  # from now on, a new series of attempts to read new ones
        logger.error(
            "database credentials ended without renewal or replacement: role=%s lease=%s "
            "(last problem: %s); retiring their connections; calls fail until Vault issues "
            "new ones",
            self._role,
            held.tag,
            self._problem or "none recorded",
            extra=self._event("ended", held.tag),
        )
        self._fire_hooks()

    def _retire_stragglers(self, now: float) -> None:
        due = [old for old in self._retiring if now >= old.stop_at]
        if not due:
            return
        with self._lock:
            self._retiring = [old for old in self._retiring if old not in due]
        if any(old.has_open_connections() for old in due):
            logger.warning(
                "database credentials: connections opened with replaced credentials were "
                "still open near their end: role=%s; retiring them",
                self._role,
                extra=self._event("stragglers_retired", None),
            )
            self._fire_hooks()

    def _event(self, event: str, lease: str | None) -> dict[str, str | None]:
        """Count ``event`` (issued, renewed, replaced, failed...) by engine role, and return
        the fields of its log line, for handlers that keep them apart: what happened, to
        which engine role, under which lease tag (never the lease id itself)."""
        count(CREDENTIAL_EVENTS, 1, {"crm.event": event, "crm.database.creds_role": self._role})
        return {"crm_event": f"db_credentials.{event}", "crm_role": self._role, "crm_lease": lease}

    def _fire_hooks(self) -> None:
        for hook in list(self._hooks):
            try:
                hook()
            except Exception:  # one pool's failure must not keep the others' connections
                logger.exception("database credentials: retiring connections failed")

    def _expired_error(self, operation: str) -> PostgresCredentialsExpiredError:
        held = self._current
        if held is None:
            what = f"no database credentials from Vault at {self._path!r}"
        else:
            what = (
                f"the database credentials of {self._path!r} (lease {held.tag}) ended at "
                f"{self._wall(held.stop_at)} and could be neither renewed nor replaced"
            )
        problem = f" ({self._problem})" if self._problem else ""
        return PostgresCredentialsExpiredError(
            f"{operation} failed: {what}{problem}; new ones are asked for in the background, "
            "and calls work again once Vault issues them",
            operation=operation,
        )

    def _wall(self, at: float) -> str:
        """A time on the keeper's clock as UTC wall-clock time, for people."""
        wall = datetime.now(UTC) + timedelta(seconds=at - self._clock())
        return wall.strftime("%H:%M:%S UTC")


class LiveSecrets:
    """The passwords a client scrubs from messages: the ones in its URLs, and whatever its
    dynamic credentials hold at the time (iterated again on every use)."""

    def __init__(
        self, fixed: Iterable[str | None], sources: Iterable[DynamicCredentials | None]
    ) -> None:
        self._fixed = tuple(fixed)
        self._sources = tuple(s for s in sources if s is not None)

    def __iter__(self) -> Iterator[str | None]:
        yield from self._fixed
        for source in self._sources:
            with contextlib.suppress(Exception):  # scrubbing must never fail a message
                yield from source.passwords()


class CredentialArgs(TypedDict, total=False):
    """The keyword arguments of a PostgreSQL client that take credentials from Vault."""

    credentials: DynamicCredentials
    admin_credentials: DynamicCredentials


def credentials_from_secret(issuer: LeaseIssuer, secret: DatabaseSecret) -> CredentialArgs:
    """Return the client arguments for the roles ``crm/database`` names (none for a path that
    keeps a URL with its own user and password)::

        secret = secret_paths.database_secret(vault)
        PostgresClient(secret.url, admin_connection_url=secret.admin_url,
                       **credentials_from_secret(vault, secret))

    Raises:
        PostgresConfigError: a role or the mount is not a plain Vault path.
    """
    args = CredentialArgs()
    if secret.creds_role is not None:
        args["credentials"] = DynamicCredentials(
            issuer, secret.creds_role, mount=secret.creds_mount
        )
    if secret.admin_creds_role is not None:
        args["admin_credentials"] = DynamicCredentials(
            issuer, secret.admin_creds_role, mount=secret.creds_mount
        )
    return args
