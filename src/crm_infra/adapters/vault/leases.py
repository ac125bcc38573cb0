"""Dynamic secrets and the token's own lease, for :class:`VaultClient`: issue, renew, revoke.

Mixed into the client (it uses the client's one retrying request path and its one error
translation), these make it a :class:`crm_infra.leases.LeaseIssuer`: what the database
clients' short-lived credentials need. Each call takes a ``timeout`` so that a keeper can
bound how long Vault may keep it waiting (never longer than the client's own timeout). No
message names a lease id (it lets whoever holds a token renew or revoke the lease) or shows a
secret value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from crm_infra.errors import SecretAccessDeniedError, SecretNotFoundError
from crm_infra.leases import Grant, Lifetime
from crm_infra.redaction import raise_sanitized
from crm_infra.secret_paths import validate_secret_path

__all__ = ["VaultLeaseMethods"]

_RENEW_PATH = "sys/leases/renew"
_REVOKE_PATH = "sys/leases/revoke"


class VaultLeaseMethods:
    """Lease operations of :class:`~crm_infra.adapters.vault.client.VaultClient`."""

    if TYPE_CHECKING:  # provided by VaultClient
        _client: Any
        _clock: Callable[[], float]
        _timeout: float
        _login_lock: Any
        _token_lifetime: Lifetime | None

        def _with_login(
            self, action: str, path: str | None, request: Callable[[], object]
        ) -> dict[str, Any]: ...

        def _errors(
            self, action: str, path: str | None = None, *, login: bool = False
        ) -> AbstractContextManager[None]: ...

        def _json(self, action: str, path: str | None, answer: object) -> dict[str, Any]: ...

        def _where(self, action: str, path: str | None) -> str: ...

    @property
    def token_lifetime(self) -> Lifetime | None:
        """The AppRole token's lifetime, renewed in place (None for a token given by the
        caller: its lifetime is the caller's business)."""
        return self._token_lifetime

    def issue_lease(self, path: str, *, timeout: float | None = None) -> Grant:
        """Read a dynamic secret, such as ``database/creds/crm-app``; return it with its lease.

        Raises:
            VaultInvalidPathError: the path is malformed; nothing was sent.
            VaultSecretNotFoundError: no such role, or no secrets engine mounted there.
            VaultAccessDeniedError: the token's policy does not allow reading the path.
            VaultAuthError, VaultUnavailableError, VaultError: as for ``get_secret``.
        """
        from crm_infra.adapters.vault.client import VaultInvalidPathError  # noqa: PLC0415

        validate_secret_path(path, mount_point="", error=VaultInvalidPathError)
        action = "reading dynamic credentials"
        with self._lease_errors(action, path, f"read on {path!r}"):
            answer = self._with_login(
                action,
                path,
                lambda: self._client.adapter.get(f"/v1/{path}", timeout=self._bounded(timeout)),
            )
        with self._errors(action, path):
            data = answer["data"]
            if not isinstance(data, dict):
                raise TypeError("data")
            return Grant(
                lease_id=str(answer["lease_id"]),
                duration=float(answer["lease_duration"]),
                renewable=bool(answer["renewable"]),
                data=data,
            )

    def renew_lease(
        self, lease_id: str, increment: float, *, timeout: float | None = None
    ) -> Grant:
        """Renew a lease, asking for ``increment`` seconds (Vault may grant less).

        Raises:
            VaultError: the lease is gone (revoked, expired) or cannot be renewed.
            VaultAccessDeniedError: the policy does not allow ``update`` on sys/leases/renew.
            VaultAuthError, VaultUnavailableError: as for ``get_secret``.
        """
        action = "renewing a lease at"
        body = {"lease_id": lease_id, "increment": max(1, round(increment))}
        with self._lease_errors(action, _RENEW_PATH, f"update on {_RENEW_PATH!r}"):
            answer = self._with_login(
                action,
                _RENEW_PATH,
                lambda: self._client.adapter.put(
                    f"/v1/{_RENEW_PATH}", json=body, timeout=self._bounded(timeout)
                ),
            )
        with self._errors(action, _RENEW_PATH):
            return Grant(
                lease_id=str(answer["lease_id"]),
                duration=float(answer["lease_duration"]),
                renewable=bool(answer["renewable"]),
            )

    def revoke_lease(self, lease_id: str, *, timeout: float | None = None) -> None:
        """Revoke a lease now: Vault runs the role's revocation statements.

        Raises:
            VaultAccessDeniedError: the policy does not allow ``update`` on sys/leases/revoke.
            VaultAuthError, VaultUnavailableError, VaultError: as for ``get_secret``.
        """
        action = "revoking a lease at"
        with self._lease_errors(action, _REVOKE_PATH, f"update on {_REVOKE_PATH!r}"):
            self._with_login(
                action,
                _REVOKE_PATH,
                lambda: self._answer_or_empty(
                    self._client.adapter.put(
                        f"/v1/{_REVOKE_PATH}",
                        json={"lease_id": lease_id},
                        timeout=self._bounded(timeout),
                    )
                ),
            )

    def _renew_token(self, *, timeout: float | None = None) -> Lifetime:
        """Renew the AppRole token (``auth/token/renew-self``, allowed by the default
        policy), asking for its first grant again; return its lifetime, updated in place.

        Raises:
            VaultAuthError: the token is no longer valid (log in again).
            VaultUnavailableError, VaultError: as for ``get_secret``.
        """
        action = "renewing the token"
        with self._login_lock, self._errors(action):
            lifetime = self._token_lifetime
            if lifetime is None:
                raise RuntimeError("no AppRole token to renew")
            started = self._clock()
            answer = self._json(
                action,
                None,
                self._client.adapter.post(
                    "/v1/auth/token/renew-self",
                    json={"increment": max(1, round(lifetime.first_duration))},
                    timeout=self._bounded(timeout),
                ),
            )
            lifetime.renewed(started, float(answer["auth"]["lease_duration"]))
            return lifetime

    def _bounded(self, timeout: float | None) -> float:
        return self._timeout if timeout is None else min(self._timeout, timeout)

    @staticmethod
    def _answer_or_empty(answer: object) -> dict[str, Any]:
        # hvac hands back the raw response for 204 No Content (what a revocation answers).
        return answer if isinstance(answer, dict) else {}

    @contextmanager
    def _lease_errors(self, action: str, path: str, needs: str) -> Iterator[None]:
        """Say what the policy needs, and what a missing path means, for a lease path (the
        client's own messages speak of the KV mount)."""
        from crm_infra.adapters.vault.client import (  # noqa: PLC0415
            VaultAccessDeniedError,
            VaultSecretNotFoundError,
        )

        where = self._where(action, path)
        try:
            yield
        except SecretAccessDeniedError:
            raise_sanitized(
                VaultAccessDeniedError(
                    f"{where} failed: permission denied (the token's policy needs {needs})"
                ),
                None,
            )
        except SecretNotFoundError:
            raise_sanitized(
                VaultSecretNotFoundError(
                    f"{where} failed: nothing there (no such role, or no secrets engine "
                    "mounted at that path)"
                ),
                None,
            )
