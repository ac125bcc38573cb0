"""The secrets layout, path validation and typed accessors, written once over :class:`SecretStore`.

Layout (KV v2, paths relative to the mount, ``secret`` by default)::

    crm/database   url (postgresql:// or postgres://), admin_url (same schemes)
    crm/valkey     url (redis://, rediss:// or unix://)
    crm/email      api_key, from_address

Every store (the Vault adapter, the in-memory fake, a cache around either) validates paths with
:func:`validate_secret_path` before doing anything else, so a path that could leave the mount
never reaches a server. The accessors check that a field exists, is a non-empty string and has
the right scheme, and name the path and field when it does not; they never show the value.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import attrs

from crm_infra.errors import InvalidSecretError, InvalidSecretPathError
from crm_infra.ports import SecretStore
from crm_infra.redaction import raise_sanitized

__all__ = [
    "DATABASE_ADMIN_URL_FIELD",
    "DATABASE_PATH",
    "DATABASE_URL_FIELD",
    "DEFAULT_MOUNT_POINT",
    "EMAIL_API_KEY_FIELD",
    "EMAIL_FROM_ADDRESS_FIELD",
    "EMAIL_PATH",
    "MAX_PATH_LENGTH",
    "POSTGRES_SCHEMES",
    "VALKEY_PATH",
    "VALKEY_SCHEMES",
    "VALKEY_URL_FIELD",
    "EmailCredentials",
    "admin_database_url",
    "copy_secret_data",
    "database_url",
    "email_credentials",
    "is_flat",
    "normalise_secret_data",
    "validate_secret_path",
    "valkey_url",
]

DEFAULT_MOUNT_POINT = "secret"

DATABASE_PATH = "crm/database"
DATABASE_URL_FIELD = "url"
DATABASE_ADMIN_URL_FIELD = "admin_url"
VALKEY_PATH = "crm/valkey"
VALKEY_URL_FIELD = "url"
EMAIL_PATH = "crm/email"
EMAIL_API_KEY_FIELD = "api_key"
EMAIL_FROM_ADDRESS_FIELD = "from_address"

POSTGRES_SCHEMES = ("postgresql", "postgres")
"""What libpq and psycopg accept as a connection URI."""

VALKEY_SCHEMES = ("redis", "rediss", "unix")
"""What redis-py's ``from_url`` accepts; it refuses ``valkey://``, so that is refused here too."""

MAX_PATH_LENGTH = 512

# One segment: ASCII letters, digits and a few punctuation marks. Everything else ('%', '?',
# '#', '\\', whitespace, control and format characters, non-ASCII) is refused: each of them can
# change what URL hvac builds or what the server resolves it to.
_SEGMENT = re.compile(r"[A-Za-z0-9_.@+=,-]+")


def _shown(path: str) -> str:
    """Return ``path`` quoted for a message, control characters escaped, long ones cut."""
    text = repr(path)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_secret_path(
    path: object,
    *,
    mount_point: str = DEFAULT_MOUNT_POINT,
    error: type[InvalidSecretPathError] = InvalidSecretPathError,
) -> str:
    """Return ``path`` unchanged when it is a safe KV path relative to the mount; raise otherwise.

    A path is one or more ``/``-separated segments of ASCII letters, digits and ``_ . @ + = , -``;
    ``.`` and ``..`` segments, empty segments (a leading, trailing or doubled ``/``) and paths
    longer than :data:`MAX_PATH_LENGTH` are refused. A path that starts with
    ``<mount_point>/data/`` or ``<mount_point>/metadata/`` (or ``secret/data/``, the default
    mount's, whatever the mount) is refused with a hint: paths are
    relative to the mount (``crm/database``, not ``secret/data/crm/database``), and taking the
    API form as-is would silently read a different secret.

    Args:
        path: the path to check.
        mount_point: the KV v2 mount the path is relative to (for the prefix hint).
        error: the class to raise; adapters pass their own subclass.

    Returns:
        The path, unchanged.

    Raises:
        InvalidSecretPathError: (or ``error``) the path is not acceptable; the message says why.
    """
    if not isinstance(path, str):
        raise error(f"secret path must be a str, got {type(path).__name__}")
    if not path:
        raise error("secret path is empty")
    if len(path) > MAX_PATH_LENGTH:
        raise error(f"secret path is longer than {MAX_PATH_LENGTH} characters: {_shown(path)}")
    if any(unicodedata.category(ch).startswith("C") for ch in path):
        raise error(f"secret path contains a control or format character: {_shown(path)}")
    if path.startswith("/"):
        raise error(
            f"secret path must be relative to the mount, without a leading '/': {_shown(path)}"
        )
    segments = path.split("/")
    api_prefixed = segments[0] in {mount_point, DEFAULT_MOUNT_POINT} and len(segments) > 2
    if api_prefixed and segments[1] in {"data", "metadata"}:
        raise error(
            f"secret path {_shown(path)} includes the API prefix"
            f" '{segments[0]}/{segments[1]}/';"
            f" give it relative to the mount, e.g. {'/'.join(segments[2:])!r}"
        )
    for segment in segments:
        if not segment:
            raise error(f"secret path has an empty segment (a stray '/'): {_shown(path)}")
        if segment in {".", ".."}:
            raise error(f"secret path has a {segment!r} segment: {_shown(path)}")
        if not _SEGMENT.fullmatch(segment):
            raise error(
                f"secret path {_shown(path)} has a character outside letters, digits"
                " and '_ . @ + = , -'"
            )
    return path


# --- secret data -----------------------------------------------------------------------------

_SCALARS = (str, int, float, bool, type(None))


def is_flat(data: Mapping[str, Any]) -> bool:
    """Return True when every value is a scalar (str, int, float, bool or None)."""
    return all(isinstance(value, _SCALARS) for value in data.values())


def copy_secret_data(data: Mapping[str, Any], *, flat: bool | None = None) -> dict[str, Any]:
    """Return a copy of ``data`` that shares nothing mutable with it.

    Args:
        data: secret fields.
        flat: the result of :func:`is_flat` when the caller already knows it (saves a scan);
            a flat mapping needs only a shallow copy, which is what makes cached reads cheap.
    """
    if flat is None:
        flat = is_flat(data)
    return dict(data) if flat else copy.deepcopy(dict(data))


def normalise_secret_data(path: str, data: object) -> dict[str, Any]:
    """Return ``data`` as Vault would store and return it: a JSON round trip of a str-keyed mapping.

    Raises:
        InvalidSecretError: ``data`` is not a mapping with str keys and JSON values.
    """
    if not isinstance(data, Mapping):
        raise InvalidSecretError(
            f"secret data for {_shown(path)} must be a mapping, got {type(data).__name__}"
        )
    for key in data:
        if not isinstance(key, str):
            raise InvalidSecretError(
                f"secret data for {_shown(path)} has a {type(key).__name__} key; keys must be str"
            )
    try:
        result: dict[str, Any] = json.loads(json.dumps(dict(data), allow_nan=False))
    except (TypeError, ValueError) as exc:
        # Not chained: the error may quote the value.
        raise_sanitized(
            InvalidSecretError(
                f"secret data for {_shown(path)} holds a value JSON cannot: {type(exc).__name__}"
            ),
            None,
        )
    return result


# --- typed accessors -------------------------------------------------------------------------


@attrs.frozen
class EmailCredentials:
    """The email service credentials at ``crm/email``; the API key is left out of the repr."""

    from_address: str
    api_key: str = attrs.field(repr=False)


def _field(secret: Mapping[str, Any], path: str, field: str) -> str:
    if field not in secret:
        raise InvalidSecretError(f"secret {path!r} has no field {field!r}")
    value = secret[field]
    if not isinstance(value, str):
        raise InvalidSecretError(
            f"field {field!r} of secret {path!r} must be a string, got {type(value).__name__}"
        )
    if not value.strip():
        raise InvalidSecretError(f"field {field!r} of secret {path!r} is empty")
    return value


def _url_field(secret: Mapping[str, Any], path: str, field: str, schemes: tuple[str, ...]) -> str:
    value = _field(secret, path, field)
    scheme, sep, _ = value.partition("://")
    if not sep or scheme.lower() not in schemes:
        expected = " or ".join(f"{s}://" for s in schemes)
        # The value itself (or even its scheme part) is never shown: it may be a password.
        raise InvalidSecretError(
            f"field {field!r} of secret {path!r} must be a URL starting with {expected}"
        )
    return value


def database_url(store: SecretStore) -> str:
    """Return the application's PostgreSQL URL (``crm/database`` field ``url``).

    Raises:
        SecretStoreError: any error of ``store.get_secret``.
        InvalidSecretError: the field is missing, empty, not a string or not a PostgreSQL URL.
    """
    secret = store.get_secret(DATABASE_PATH)
    return _url_field(secret, DATABASE_PATH, DATABASE_URL_FIELD, POSTGRES_SCHEMES)


def admin_database_url(store: SecretStore) -> str:
    """Return the admin (BYPASSRLS) PostgreSQL URL (``crm/database`` field ``admin_url``).

    Raises:
        SecretStoreError: any error of ``store.get_secret``.
        InvalidSecretError: the field is missing, empty, not a string or not a PostgreSQL URL.
    """
    secret = store.get_secret(DATABASE_PATH)
    return _url_field(secret, DATABASE_PATH, DATABASE_ADMIN_URL_FIELD, POSTGRES_SCHEMES)


def valkey_url(store: SecretStore) -> str:
    """Return the Valkey URL (``crm/valkey`` field ``url``; redis://, rediss:// or unix://).

    Raises:
        SecretStoreError: any error of ``store.get_secret``.
        InvalidSecretError: the field is missing, empty, not a string or has another scheme.
    """
    secret = store.get_secret(VALKEY_PATH)
    return _url_field(secret, VALKEY_PATH, VALKEY_URL_FIELD, VALKEY_SCHEMES)


def email_credentials(store: SecretStore) -> EmailCredentials:
    """Return the email service credentials (``crm/email``: ``api_key``, ``from_address``).

    Raises:
        SecretStoreError: any error of ``store.get_secret``.
        InvalidSecretError: a field is missing, empty or not a string, or ``from_address``
            has no ``@``.
    """
    secret = store.get_secret(EMAIL_PATH)
    api_key = _field(secret, EMAIL_PATH, EMAIL_API_KEY_FIELD)
    from_address = _field(secret, EMAIL_PATH, EMAIL_FROM_ADDRESS_FIELD)
    if "@" not in from_address:
        raise InvalidSecretError(
            f"field {EMAIL_FROM_ADDRESS_FIELD!r} of secret {EMAIL_PATH!r} is not an email address"
        )
    return EmailCredentials(from_address=from_address, api_key=api_key)
