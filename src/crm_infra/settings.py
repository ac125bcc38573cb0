"""Settings for the composition root, read from the environment and validated all at once.

=========================  ==========  ==================================================
Variable                   Default     Meaning
=========================  ==========  ==================================================
``CRM_BACKEND``            ``memory``  ``memory`` (in-memory fakes) or ``real``
``VAULT_ADDR``             (none)      Vault/OpenBao address; required when ``real``
``VAULT_TOKEN``            (none)      a Vault token, or instead:
``VAULT_ROLE_ID``          (none)      AppRole role id (with ``VAULT_SECRET_ID``)
``VAULT_SECRET_ID``        (none)      AppRole secret id (with ``VAULT_ROLE_ID``)
``VAULT_MOUNT_POINT``      ``secret``  the KV v2 mount that holds ``crm/...``
``CRM_KEY_PREFIX``         (empty)     prefix applied to every key-value key
``CRM_DB_POOL_SIZE``       ``10``      connections in the user-facing database pool
``CRM_VAULT_TIMEOUT``      ``5``       seconds per Vault request
``CRM_DB_TIMEOUT``         ``5``       seconds to connect to PostgreSQL
``CRM_KV_TIMEOUT``         ``5``       seconds one Valkey call may take, retries included
``CRM_HEALTH_TIMEOUT``     ``5``       seconds each component's health check may take
=========================  ==========  ==================================================

An empty variable counts as unset. Every problem is collected and reported in one
:class:`~crm_infra.errors.ConfigError`; no value of a token or secret id is ever echoed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Literal, TypeVar, cast
from urllib.parse import urlsplit

import attrs

from crm_infra.errors import ConfigError, InvalidSecretPathError
from crm_infra.redaction import redact_address
from crm_infra.secret_paths import DEFAULT_MOUNT_POINT, validate_mount_point

__all__ = [
    "Backend",
    "Settings",
    "VaultCredentials",
    "vault_credential_problems",
    "vault_credentials",
]

Backend = Literal["memory", "real"]

_BACKENDS: tuple[Backend, ...] = ("memory", "real")
_T = TypeVar("_T")


def _problems(settings: Settings | SimpleNamespace) -> list[str]:
    """Return every reason these settings cannot work (empty when they can)."""
    problems: list[str] = []
    if settings.backend not in _BACKENDS:
        problems.append(f"CRM_BACKEND must be 'memory' or 'real', got {settings.backend[:40]!r}")
    if settings.db_pool_size < 1:
        problems.append(f"CRM_DB_POOL_SIZE must be at least 1, got {settings.db_pool_size}")
    for env_name, value in (
        ("CRM_VAULT_TIMEOUT", settings.vault_timeout),
        ("CRM_DB_TIMEOUT", settings.db_timeout),
        ("CRM_KV_TIMEOUT", settings.kv_timeout),
        ("CRM_HEALTH_TIMEOUT", settings.health_timeout),
    ):
        if not (math.isfinite(value) and value > 0):
            problems.append(f"{env_name} must be a positive number of seconds, got {value}")
    try:
        validate_mount_point(settings.vault_mount_point)
    except InvalidSecretPathError as exc:
        problems.append(f"VAULT_MOUNT_POINT: {exc}")
    if settings.backend == "real":
        problems.extend(_vault_problems(settings))
    return problems


def _vault_problems(settings: Settings | SimpleNamespace) -> list[str]:
    problems: list[str] = []
    if not settings.vault_addr:
        problems.append("VAULT_ADDR is required when CRM_BACKEND=real")
    else:
        # The address is not echoed: it could carry credentials in its user-info part.
        parts = urlsplit(settings.vault_addr)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            problems.append("VAULT_ADDR must be an http:// or https:// URL with a host")
    problems.extend(
        vault_credential_problems(
            settings.vault_token, settings.vault_role_id, settings.vault_secret_id
        )
    )
    return problems


# --- Vault credentials: the rules, for Settings and VaultClient alike ---------------------------


@attrs.frozen
class VaultCredentials:
    """How to log in to Vault: a token, or an AppRole role id and secret id (never shown)."""

    token: str | None = attrs.field(default=None, repr=False)
    role_id: str | None = attrs.field(default=None, repr=False)
    secret_id: str | None = attrs.field(default=None, repr=False)

    @property
    def uses_approle(self) -> bool:
        """Return True for an AppRole login, False for a token."""
        return self.role_id is not None


_NO_CREDENTIALS = (
    "VAULT_TOKEN not set: Vault needs credentials, a token (VAULT_TOKEN) or an AppRole login "
    "(VAULT_ROLE_ID and VAULT_SECRET_ID)"
)


def vault_credential_problems(
    token: str | None, role_id: str | None, secret_id: str | None
) -> list[str]:
    """Return what keeps these credentials from logging in to Vault (empty when nothing does).

    The rules: a token, or an AppRole pair (role id and secret id); never both, never half a
    pair, never neither. Empty strings count as unset.
    """
    has_token, has_role, has_secret_id = bool(token), bool(role_id), bool(secret_id)
    if has_role != has_secret_id:
        missing = "VAULT_SECRET_ID" if has_role else "VAULT_ROLE_ID"
        return [f"AppRole login needs both VAULT_ROLE_ID and VAULT_SECRET_ID; {missing} is missing"]
    if has_token and has_role:
        return ["set either VAULT_TOKEN or VAULT_ROLE_ID+VAULT_SECRET_ID, not both"]
    if not has_token and not has_role:
        return [_NO_CREDENTIALS]
    return []


def vault_credentials(
    token: str | None = None,
    role_id: str | None = None,
    secret_id: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> VaultCredentials:
    """Return the Vault credentials from the arguments, else from the environment.

    Arguments win as a whole: given any credential argument, the environment only completes an
    AppRole pair of which one half was given (``role_id=`` with ``VAULT_SECRET_ID``, say); a
    ``token=`` argument ignores AppRole variables, and AppRole arguments ignore ``VAULT_TOKEN``.
    With no credential argument, ``VAULT_TOKEN``, ``VAULT_ROLE_ID`` and ``VAULT_SECRET_ID`` are
    read. Either way :func:`vault_credential_problems` decides.

    Args:
        token, role_id, secret_id: the credentials given by the caller, if any.
        environ: the variables to read (default: :data:`os.environ`); empty values count as
            unset.

    Raises:
        ConfigError: the credentials cannot log in (the message never shows a value).
    """
    env = os.environ if environ is None else environ

    def from_env(name: str) -> str | None:
        return env.get(name, "").strip() or None

    token, role_id, secret_id = token or None, role_id or None, secret_id or None
    if token is None and role_id is None and secret_id is None:
        token = from_env("VAULT_TOKEN")
        role_id, secret_id = from_env("VAULT_ROLE_ID"), from_env("VAULT_SECRET_ID")
    elif token is None:
        role_id = role_id or from_env("VAULT_ROLE_ID")
        secret_id = secret_id or from_env("VAULT_SECRET_ID")
    problems = vault_credential_problems(token, role_id, secret_id)
    if problems:
        raise ConfigError("invalid Vault credentials: " + "; ".join(problems))
    return VaultCredentials(token, role_id, secret_id)


@attrs.frozen
class Settings:
    """Everything the composition root needs to choose and build the infrastructure.

    Construct it with :meth:`from_env`, or directly (tests do); either way it is validated at
    once and raises one :class:`~crm_infra.errors.ConfigError` listing every problem. The
    token and AppRole credentials are kept out of the repr.
    """

    backend: Backend = "memory"
    # Shown with its user-info masked: an address may carry a password.
    vault_addr: str | None = attrs.field(default=None, repr=lambda a: repr(redact_address(a)))
    vault_token: str | None = attrs.field(default=None, repr=False)
    vault_role_id: str | None = attrs.field(default=None, repr=False)
    vault_secret_id: str | None = attrs.field(default=None, repr=False)
    vault_mount_point: str = DEFAULT_MOUNT_POINT
    key_prefix: str = ""
    db_pool_size: int = 10
    vault_timeout: float = 5.0
    db_timeout: float = 5.0
    kv_timeout: float = 5.0
    health_timeout: float = 5.0

    def __attrs_post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ConfigError(_summarise(problems))

    @property
    def uses_approle(self) -> bool:
        """Return True when Vault is reached with AppRole rather than a token."""
        return self.vault_role_id is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: :data:`os.environ`).

        Args:
            environ: the variables to read; empty values count as unset.

        Returns:
            The validated settings.

        Raises:
            ConfigError: one error listing every problem found (never a secret value).
        """
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, parse: Callable[[str], _T], default: _T, kind: str) -> _T:
            raw = text(name)
            if raw is None:
                return default
            try:
                return parse(raw)
            except ValueError:
                problems.append(f"{name} must be {kind}, got {raw[:40]!r}")
                return default

        backend = (text("CRM_BACKEND") or "memory").lower()
        values = {
            "backend": cast(Backend, backend),
            "vault_addr": text("VAULT_ADDR"),
            "vault_token": text("VAULT_TOKEN"),
            "vault_role_id": text("VAULT_ROLE_ID"),
            "vault_secret_id": text("VAULT_SECRET_ID"),
            "vault_mount_point": text("VAULT_MOUNT_POINT") or DEFAULT_MOUNT_POINT,
            # The prefix is taken as given: trailing spaces or colons may be intended.
            "key_prefix": env.get("CRM_KEY_PREFIX", ""),
            "db_pool_size": number("CRM_DB_POOL_SIZE", int, 10, "an integer"),
            "vault_timeout": number("CRM_VAULT_TIMEOUT", float, 5.0, "a number of seconds"),
            "db_timeout": number("CRM_DB_TIMEOUT", float, 5.0, "a number of seconds"),
            "kv_timeout": number("CRM_KV_TIMEOUT", float, 5.0, "a number of seconds"),
            "health_timeout": number("CRM_HEALTH_TIMEOUT", float, 5.0, "a number of seconds"),
        }
        # Check the parsed values before constructing, so that parse and semantic problems
        # end up in one error.
        problems.extend(_problems(SimpleNamespace(**values)))
        if problems:
            raise ConfigError(_summarise(problems))
        return cls(**values)  # type: ignore[arg-type]  # each value is typed for its key above


def _summarise(problems: list[str]) -> str:
    count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
    return f"invalid settings ({count}): " + "; ".join(problems)
