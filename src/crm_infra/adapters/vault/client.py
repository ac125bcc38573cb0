"""The Vault (or OpenBao) adapter of :class:`~crm_infra.ports.SecretStore`, on hvac, KV v2.

Each error class below is a :class:`VaultError` and also its port-level class
(``VaultAuthError`` is a ``SecretStoreAuthError``...), so callers catch either; the tree, and
which class pairs with which, is in :mod:`crm_infra.errors` and ``docs/errors.md``.

No hvac or requests exception leaves this module: :meth:`VaultClient._errors` translates them
all, in one place, and chains only a sanitized copy (requests' exceptions hold the request, and
its headers the token). Messages name the address, the operation and the path, never a token,
a secret id or a secret value.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, ClassVar, NoReturn

import hvac
import hvac.exceptions as hvac_exc
import requests

from crm_infra.adapters.vault import telemetry
from crm_infra.adapters.vault.leases import VaultLeaseMethods
from crm_infra.adapters.vault.token_keeper import TokenKeeper
from crm_infra.errors import (
    ConfigError,
    InvalidSecretError,
    InvalidSecretPathError,
    SecretAccessDeniedError,
    SecretNotFoundError,
    SecretStoreAuthError,
    SecretStoreError,
    SecretStoreUnavailableError,
)
from crm_infra.leases import Lifetime
from crm_infra.redaction import (
    one_line,
    raise_sanitized,
    redact_address,
    sanitized_copy,
    short_error,
)
from crm_infra.secret_cache import SecretCache, is_positive_seconds
from crm_infra.secret_paths import (
    DEFAULT_MOUNT_POINT,
    SecretLayoutMethods,
    validate_mount_point,
    validate_secret_path,
)
from crm_infra.settings import VaultCredentials, vault_credentials
from crm_infra.telemetry import traced

__all__ = [
    "VaultAccessDeniedError",
    "VaultAuthError",
    "VaultClient",
    "VaultConfigError",
    "VaultError",
    "VaultInvalidPathError",
    "VaultInvalidSecretError",
    "VaultSecretNotFoundError",
    "VaultUnavailableError",
]

DEFAULT_TIMEOUT = 5.0
_DETAIL_LIMIT = 200

# hvac's classes for an HTTP error status. Vault answers every error with JSON; one of these
# without JSON came from another server (a web server, a proxy's login page) at VAULT_ADDR.
# 429, 501, 502 and 503 are left out: a proxy in front of a Vault that is down answers them.
_HTTP_ERRORS: dict[type[Exception], str] = {
    hvac_exc.InvalidRequest: "HTTP 400",
    hvac_exc.Unauthorized: "HTTP 401",
    hvac_exc.Forbidden: "HTTP 403",
    hvac_exc.InvalidPath: "HTTP 404",
    hvac_exc.InternalServerError: "HTTP 500",
    hvac_exc.UnexpectedError: "an unexpected HTTP status",
}
# "[Errno 111] Connection refused" inside requests' and urllib3's long wrappers.
_OS_REASON = re.compile(r"\[Errno -?\d+\] ([^'\"()]+)")


class VaultError(SecretStoreError):
    """Any failure of :class:`VaultClient`."""


class VaultConfigError(VaultError, ConfigError):
    """Settings that cannot work (no address, no credentials, a bad timeout...)."""


class VaultInvalidPathError(VaultError, InvalidSecretPathError):
    """A secret path that is malformed or could leave the mount; nothing was sent."""


class VaultSecretNotFoundError(VaultError, SecretNotFoundError):
    """No secret at the path, or its latest version was deleted or destroyed."""


class VaultInvalidSecretError(VaultError, InvalidSecretError):
    """The secret exists but a field is missing or malformed."""


class VaultAccessDeniedError(VaultError, SecretAccessDeniedError):
    """The token is valid but its policy does not allow the operation on the path."""


class VaultAuthError(VaultError, SecretStoreAuthError):
    """The token is invalid, expired or revoked, or the AppRole login was refused."""


class VaultUnavailableError(VaultError, SecretStoreUnavailableError):
    """Vault is unreachable, sealed, or did not answer within the timeout."""


class VaultClient(SecretLayoutMethods, VaultLeaseMethods):
    """Read secrets from a Vault or OpenBao KV v2 mount; fail fast on anything wrong.

    Construction checks the settings, then authenticates (a token lookup, or an AppRole login),
    so a process that cannot read its secrets does not start. Besides the port, it offers
    ``get_database_url()``, ``get_admin_database_url()``, ``get_valkey_url()`` and
    ``get_email_credentials()`` (:class:`~crm_infra.secret_paths.SecretLayoutMethods`).

    Args:
        addr: the server URL; defaults to ``VAULT_ADDR``.
        token: a Vault token; defaults to ``VAULT_TOKEN``. Give either a token or AppRole
            credentials, not both (the rules: :func:`crm_infra.settings.vault_credentials`).
        mount_point: the KV v2 mount (the composition root reads ``VAULT_MOUNT_POINT``).
        timeout: seconds each request may take (connect, and again for the answer).
        cache_ttl: keep successful reads this many seconds in process (None: no cache).
        role_id: AppRole role id; defaults to ``VAULT_ROLE_ID`` when no token is set.
        secret_id: AppRole secret id; defaults to ``VAULT_SECRET_ID``.
        approle_mount_point: where the AppRole auth method is mounted.
        verify: TLS verification: True, False, or a CA bundle path.
        clock: monotonic seconds, for the cache and the AppRole token's expiry; injectable
            so tests need not sleep.

    Raises:
        VaultConfigError: the address or credentials are missing, or a setting is invalid.
        VaultAuthError: the token is invalid, expired or revoked, or the AppRole login failed.
        VaultUnavailableError: Vault is unreachable, sealed or timed out.
    """

    invalid_secret_error = VaultInvalidSecretError
    # AsyncVaultClient's inner client does no I/O in its constructor (the twin authenticates
    # in a worker thread) and goes by the twin's name in messages and its repr.
    _authenticate_on_init: ClassVar[bool] = True
    _shown_name: ClassVar[str] = "VaultClient"

    def __init__(
        self,
        addr: str | None = None,
        token: str | None = None,
        *,
        mount_point: str = DEFAULT_MOUNT_POINT,
        timeout: float = DEFAULT_TIMEOUT,
        cache_ttl: float | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        approle_mount_point: str = "approle",
        verify: bool | str = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._closed = False
        self._addr = self._resolve_addr(addr)
        self._shown_addr = redact_address(self._addr)  # for messages and the repr
        self._mount_point = self._resolve_mount_point(mount_point)
        self._timeout = self._resolve_timeout(timeout)
        credentials = self._resolve_credentials(token, role_id, secret_id)
        self._token = credentials.token
        self._role_id = credentials.role_id
        self._secret_id = credentials.secret_id
        self._approle_mount_point = approle_mount_point
        self._clock = clock
        self._login_lock = threading.Lock()
        self._token_lifetime: Lifetime | None = None
        self._token_keeper: TokenKeeper | None = None
        self._authenticated = False
        self._authenticate_lock = threading.Lock()
        try:
            self._cache = None if cache_ttl is None else SecretCache(cache_ttl, clock=clock)
        except ConfigError as exc:
            raise VaultConfigError(str(exc)) from None
        with self._errors("connecting"):
            # token="" (not None): hvac would otherwise pick up VAULT_TOKEN or ~/.vault-token
            # on its own, behind an AppRole login's back.
            self._client = hvac.Client(
                url=self._addr, token=self._token or "", timeout=self._timeout, verify=verify
            )
        try:
            if self._authenticate_on_init:
                self._authenticate()
        except BaseException:
            self.close()
            raise

    def _authenticate(self) -> None:
        """Log in with AppRole, or check the token; once (later calls return at once)."""
        with self._authenticate_lock:
            if self._authenticated:
                return
            if self._role_id is not None:
                self._login()
            else:
                self._check_token()
            self._authenticated = True

    # --- settings --------------------------------------------------------------------------

    @staticmethod
    def _resolve_addr(addr: str | None) -> str:
        resolved = addr or os.environ.get("VAULT_ADDR", "").strip()
        if not resolved:
            raise VaultConfigError("VAULT_ADDR not set: pass addr=... or set VAULT_ADDR")
        if not resolved.startswith(("http://", "https://")):
            raise VaultConfigError(
                "the Vault address must start with http:// or https:// (check VAULT_ADDR)"
            )
        if "@" in resolved.partition("://")[2].partition("/")[0]:
            # The address shows in reprs and messages; credentials in it would too.
            raise VaultConfigError(
                "the Vault address must not hold a user or password (check VAULT_ADDR); "
                "authenticate with a token or AppRole"
            )
        return resolved.rstrip("/")

    @staticmethod
    def _resolve_mount_point(mount_point: str) -> str:
        try:
            return validate_mount_point(mount_point)
        except InvalidSecretPathError as exc:
            raise VaultConfigError(str(exc)) from None

    @staticmethod
    def _resolve_timeout(timeout: float) -> float:
        if not is_positive_seconds(timeout):
            raise VaultConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        return float(timeout)

    @staticmethod
    def _resolve_credentials(
        token: str | None, role_id: str | None, secret_id: str | None
    ) -> VaultCredentials:
        """Return the credentials: arguments first, then the environment (Settings' rules)."""
        try:
            return vault_credentials(token, role_id, secret_id)
        except ConfigError as exc:
            raise VaultConfigError(str(exc)) from None

    @property
    def addr(self) -> str:
        """The server URL."""
        return self._addr

    @property
    def mount_point(self) -> str:
        """The KV v2 mount secrets are read from."""
        return self._mount_point

    @property
    def auth_method(self) -> str:
        """``"token"`` or ``"approle"``."""
        return "token" if self._role_id is None else "approle"

    # --- the port ----------------------------------------------------------------------------

    @traced(telemetry.GET_SECRET)
    def get_secret(self, path: str) -> dict[str, Any]:
        """Return the latest version of the secret at ``path`` (relative to the mount).

        Served from the cache while fresh when ``cache_ttl`` is set. Each call returns a new
        dict: mutating it changes nothing here.

        Args:
            path: e.g. ``"crm/database"`` (not ``"secret/data/crm/database"``).

        Raises:
            VaultInvalidPathError: the path is malformed; nothing was sent.
            VaultSecretNotFoundError: nothing at the path, or its latest version was deleted.
            VaultInvalidSecretError: the secret has no fields.
            VaultAccessDeniedError: the token's policy does not allow reading the path.
            VaultAuthError: the token is invalid, expired or revoked.
            VaultUnavailableError: Vault is unreachable, sealed or timed out.
        """
        found, since = self._lookup(path)
        if found is not None:
            telemetry.CACHED.set(True)  # for the span, when one is recorded
            return found
        return self._keep(path, self._read(path), since)

    @traced(telemetry.HEALTH_CHECK)
    def health_check(self) -> bool:
        """Return True when Vault answers, is unsealed and the credentials are valid.

        Never answered from the cache.

        Raises:
            VaultAuthError: the token is invalid, expired or revoked.
            VaultUnavailableError: Vault is unreachable, sealed or timed out.
        """
        if self._closed:
            self._raise_closed()
        return self._check_token()

    def invalidate(self, path: str | None = None) -> None:
        """Drop the cached read of ``path``, or all cached reads; a no-op without a cache.

        Raises:
            VaultInvalidPathError: ``path`` is not a valid secret path.
        """
        if path is not None:
            validate_secret_path(path, mount_point=self._mount_point, error=VaultInvalidPathError)
        if self._cache is not None:
            self._cache.invalidate(path)

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP session and drop cached secrets; later calls raise VaultError."""
        if self._closed:
            return
        self._closed = True
        keeper = getattr(self, "_token_keeper", None)
        if keeper is not None:
            keeper.close()
        if self._cache is not None:
            self._cache.invalidate()
        client = getattr(self, "_client", None)
        if client is not None:
            client.adapter.close()

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        # No token, role id or secret id: reprs end up in logs and tracebacks.
        cache = "None" if self._cache is None else f"{self._cache.ttl:g}"
        return (
            f"{self._shown_name}(addr={self._shown_addr!r}, mount_point={self._mount_point!r}, "
            f"auth={self.auth_method!r}, cache_ttl={cache}"
            f"{', closed' if self._closed else ''})"
        )

    # --- requests ----------------------------------------------------------------------------

    def _raise_closed(self) -> NoReturn:
        raise VaultError(f"this {self._shown_name} for {self._shown_addr} is closed")

    def _lookup(self, path: str) -> tuple[dict[str, Any] | None, int]:
        """Do what :meth:`get_secret` does before any I/O: refuse a closed client, serve a fresh
        cached copy, else check the path. Return the copy (or None: read it with :meth:`_read`)
        and the cache generation to hand to :meth:`_keep` with what was read."""
        if self._closed:
            self._raise_closed()
        since = 0
        if self._cache is not None:
            since = self._cache.generation
            found = self._cache.lookup(path)
            if found is not None:
                return found, since
        validate_secret_path(path, mount_point=self._mount_point, error=VaultInvalidPathError)
        return None, since

    def _keep(self, path: str, data: dict[str, Any], since: int) -> dict[str, Any]:
        """Do what :meth:`get_secret` does after the read: cache it, unless the cache was
        invalidated meanwhile, and return the caller's copy."""
        if self._cache is None:
            return data  # hvac parsed it from JSON for this call: nobody else holds it
        return self._cache.keep(path, data, since=since)

    def _read(self, path: str) -> dict[str, Any]:
        """Read the secret at ``path`` from Vault (the path was checked by :meth:`_lookup`)."""
        response = self._with_login(
            "reading secret",
            path,
            lambda: self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self._mount_point, raise_on_deleted_version=True
            ),
        )
        return self._secret_from(path, response)

    def _secret_from(self, path: str, response: dict[str, Any]) -> dict[str, Any]:
        body = response.get("data")
        if not isinstance(body, dict):
            raise self._unexpected("reading secret", path, "no 'data' object")
        data = body.get("data")
        if data is None:
            raise self._not_found(path, body)
        if not isinstance(data, dict):
            raise self._unexpected("reading secret", path, "'data' is not an object")
        if not data:
            raise VaultInvalidSecretError(f"secret {path!r} has no fields")
        return data

    def _not_found(self, path: str, body: object) -> VaultSecretNotFoundError:
        """Build the not-found error, saying when the latest version was deleted or destroyed."""
        metadata = body.get("metadata") if isinstance(body, dict) else None
        reason = ""
        if isinstance(metadata, dict):
            version = metadata.get("version")
            which = f"latest version ({version})" if isinstance(version, int) else "latest version"
            if metadata.get("destroyed"):
                reason = f": its {which} was destroyed"
            elif metadata.get("deletion_time"):
                reason = f": its {which} was deleted"
        return VaultSecretNotFoundError(
            f"secret not found at path {path!r} (mount {self._mount_point!r}){reason}"
        )

    def _check_token(self) -> bool:
        self._with_login("checking the token", None, self._client.auth.token.lookup_self)
        return True

    def _with_login(
        self, action: str, path: str | None, request: Callable[[], object]
    ) -> dict[str, Any]:
        """Return Vault's JSON answer to ``request()``, logged in: the one place a request is
        retried.

        An AppRole token is kept alive in the background (:class:`TokenKeeper`); one about
        to end anyway (the keeper could not reach Vault) is replaced by a login first, and one
        that was revoked or expired early fails the request with :class:`VaultAuthError`, and
        then the client logs in again, once, and retries. A token given by the caller is never
        retried.

        Threads (and the asyncio twin's workers) share the token: when another one logged in
        while this request was out, a 403 may be the old token's, so the request is retried
        with the new token, and only one of them logs in.
        """
        sent: str | None = None
        try:
            with self._errors(action, path):
                self._ensure_fresh_login()
                sent = self._client.token
                return self._json(action, path, request())
        except VaultAuthError:
            if self._role_id is None:
                raise
        except VaultAccessDeniedError:
            if self._role_id is None or self._client.token == sent:
                raise
        # Outside the handlers: the retry's own error is chained to nothing.
        self._login(stale=sent)
        with self._errors(action, path):
            return self._json(action, path, request())

    def _json(self, action: str, path: str | None, answer: object) -> dict[str, Any]:
        """Return ``answer`` when it is a JSON object; hvac hands back a 2xx that is not JSON
        as a raw response, which no Vault server sends."""
        if isinstance(answer, dict):
            return answer
        raise self._not_vault_error(action, path, "an answer that is not JSON")

    def _ensure_fresh_login(self) -> None:
        lifetime = self._token_lifetime
        if lifetime is not None and self._clock() >= lifetime.usable_until():
            self._login(stale=self._client.token)

    def _login(self, *, stale: str | None = None) -> None:
        """Log in with AppRole; keep the new token alive in the background.

        Args:
            stale: the token found wanting; when another thread has replaced it meanwhile,
                there is nothing to do.
        """
        with self._login_lock, self._errors("logging in with AppRole", login=True):
            if stale is not None and self._client.token != stale:
                return
            started = self._clock()
            response = self._json(
                "logging in with AppRole",
                None,
                self._client.auth.approle.login(
                    role_id=self._role_id,
                    secret_id=self._secret_id,
                    mount_point=self._approle_mount_point,
                    use_token=False,  # taken below, once the answer is known to be Vault's
                ),
            )
            auth = response["auth"]
            self._client.token = auth["client_token"]
            lease = auth["lease_duration"]
            self._token_lifetime = (
                Lifetime(started, float(lease), bool(auth.get("renewable")))
                if isinstance(lease, int) and lease > 0
                else None
            )
            if self._token_keeper is None and not self._closed:
                self._token_keeper = TokenKeeper(self, clock=self._clock)
                self._token_keeper.start()

    def _token_is_valid(self) -> bool | None:
        """Return whether the token is still valid (lookup-self); None when that is unknown."""
        try:
            self._client.auth.token.lookup_self()
        except (hvac_exc.Forbidden, hvac_exc.Unauthorized):
            return False
        except (hvac_exc.VaultError, requests.RequestException):
            return None
        return True

    # --- the one place vendor exceptions are translated ---------------------------------------

    def _credentials(self) -> tuple[str | None, ...]:
        """Every credential this client holds (the live AppRole token included)."""
        client = getattr(self, "_client", None)
        live = client.token if client is not None else None
        token = live if isinstance(live, str) else None
        return (self._token, self._secret_id, self._role_id, token)

    @staticmethod
    def _said(exc: BaseException) -> str:
        """Return what Vault (or the HTTP layer) said in ``exc``, on one line."""
        errors = getattr(exc, "errors", None)
        if isinstance(errors, list) and errors:
            return "; ".join(one_line(str(e)) for e in errors)
        if isinstance(exc, hvac_exc.VaultError):
            return one_line(str(exc.args[0]) if exc.args and exc.args[0] is not None else "")
        return one_line(str(exc))

    def _detail(self, exc: BaseException) -> str:
        """Return a short description of ``exc`` with any credential masked."""
        return short_error(exc, self._credentials(), message=self._said(exc), limit=_DETAIL_LIMIT)

    @contextmanager
    def _errors(
        self, action: str, path: str | None = None, *, login: bool = False
    ) -> Iterator[None]:
        """Translate every hvac and requests exception raised inside into a VaultError.

        Args:
            action: what was being done, for the message ("reading secret").
            path: the secret path involved, if any. A 403 on a path is told apart: a token
                that still passes lookup-self lacks permission; one that does not is invalid.
            login: the block is an AppRole login, where a refusal means bad credentials.
        """
        try:
            yield
        except VaultError:
            raise
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise_sanitized(self._translate(exc, action, path, login=login), self._copy(exc))
        except (KeyError, TypeError, ValueError) as exc:
            # An answer of an unexpected shape.
            raise_sanitized(self._unexpected(action, path, type(exc).__name__), self._copy(exc))

    def _copy(self, exc: Exception) -> Exception:
        """Return a copy of hvac's or requests' exception that is safe to chain.

        requests' exceptions hold the request, whose headers hold the token; hvac's hold the
        answer's body. The copy keeps the class, the message (credentials masked), and for hvac
        the method and URL of the request.
        """
        keep: dict[str, object] = {}
        if isinstance(exc, hvac_exc.VaultError):
            url = redact_address(exc.url) if isinstance(exc.url, str) else None
            keep = {"method": exc.method, "url": url}
        return sanitized_copy(exc, self._credentials(), message=self._said(exc), **keep)

    def _where(self, action: str, path: str | None) -> str:
        where = f"Vault at {self._shown_addr}: {action}"
        return where + (f" {path!r}" if path is not None else "")

    def _unexpected(self, action: str, path: str | None, what: str) -> VaultError:
        return VaultError(
            f"{self._where(action, path)} failed: unexpected answer ({what}); check VAULT_ADDR"
        )

    def _not_vault_error(self, action: str, path: str | None, got: str) -> VaultError:
        what = action + (f" {path!r}" if path is not None else "")
        return VaultError(
            f"the server at {self._shown_addr} is not a Vault or OpenBao server: {what} got "
            f"{got} (check VAULT_ADDR)"
        )

    def _translate(  # noqa: PLR0911 (one return per kind of failure reads best)
        self, exc: Exception, action: str, path: str | None, *, login: bool
    ) -> VaultError:
        """Return the VaultError for one hvac or requests exception (used by :meth:`_errors`)."""
        where = self._where(action, path)
        not_vault = self._not_vault(exc)
        if not_vault is not None:
            return self._not_vault_error(action, path, not_vault)
        if isinstance(exc, hvac_exc.InvalidPath):
            if login:
                return VaultAuthError(
                    f"{where} failed: no AppRole auth method at {self._approle_mount_point!r}"
                )
            return self._not_found(path or "", (exc.json or {}).get("data"))
        if isinstance(exc, hvac_exc.Forbidden | hvac_exc.Unauthorized | hvac_exc.InvalidRequest):
            if login:
                return VaultAuthError(
                    f"{where} failed: the role id or secret id was refused ({self._detail(exc)})"
                )
            if isinstance(exc, hvac_exc.InvalidRequest):
                return VaultError(f"{where} failed: {self._detail(exc)}")
            # Vault answers 403 both for a dead token and for a missing permission.
            if path is None or self._token_is_valid() is False:
                return VaultAuthError(f"{where} failed: the token is invalid, expired or revoked")
            return VaultAccessDeniedError(
                f"{where} failed: permission denied (the token's policy does not allow"
                f" reading it under mount {self._mount_point!r})"
            )
        if isinstance(
            exc,
            hvac_exc.VaultDown
            | hvac_exc.VaultNotInitialized
            | hvac_exc.BadGateway
            | hvac_exc.RateLimitExceeded,
        ):
            return VaultUnavailableError(
                f"{where} failed: Vault is sealed or unavailable ({self._detail(exc)})"
            )
        if isinstance(exc, requests.Timeout):
            return VaultUnavailableError(f"{where} failed: no answer within {self._timeout:g} s")
        if isinstance(exc, requests.ConnectionError):
            found = _OS_REASON.search(str(exc))
            reason = found.group(1).strip() if found else type(exc).__name__
            return VaultUnavailableError(f"{where} failed: cannot connect ({reason})")
        return VaultError(f"{where} failed: {self._detail(exc)}")

    @staticmethod
    def _not_vault(exc: Exception) -> str | None:
        """Return what the server answered when the answer cannot be Vault's, else None."""
        if isinstance(exc, requests.JSONDecodeError):
            return "an answer that is not JSON"
        status = _HTTP_ERRORS.get(type(exc))
        if status is not None and getattr(exc, "json", None) is None:
            return f"{status} without Vault's JSON error body"
        return None
