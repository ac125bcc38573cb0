"""The secrets layout, path validation and typed accessors, written once over :class:`SecretStore`.

Layout (KV v2, paths relative to the mount, ``secret`` by default)::

    crm/database   url (postgresql:// or postgres://), admin_url (same schemes);
                   optionally creds_role, admin_creds_role, creds_mount (short-lived
                   credentials from Vault's database secrets engine: the URLs then name
                   no user or password)
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
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

import attrs

from crm_infra.errors import InvalidSecretError, InvalidSecretPathError
from crm_infra.ports import AsyncSecretStore, SecretStore
from crm_infra.redaction import raise_sanitized

__all__ = [
    "DATABASE_ADMIN_CREDS_ROLE_FIELD",
    "DATABASE_ADMIN_URL_FIELD",
    "DATABASE_CREDS_MOUNT_FIELD",
    "DATABASE_CREDS_ROLE_FIELD",
    "DATABASE_PATH",
    "DATABASE_URL_FIELD",
    "DEFAULT_CREDS_MOUNT",
    "DEFAULT_MOUNT_POINT",
    "EMAIL_API_KEY_FIELD",
    "EMAIL_FROM_ADDRESS_FIELD",
    "EMAIL_PATH",
    "MAX_PATH_LENGTH",
    "PATH_PREFIX",
    "POSTGRES_SCHEMES",
    "VALKEY_PATH",
    "VALKEY_SCHEMES",
    "VALKEY_URL_FIELD",
    "AsyncSecretLayoutMethods",
    "DatabaseSecret",
    "EmailCredentials",
    "SecretLayoutMethods",
    "admin_database_url",
    "copy_secret_data",
    "database_secret",
    "database_url",
    "email_credentials",
    "is_flat",
    "layout",
    "normalise_secret_data",
    "read_policy",
    "validate_mount_point",
    "validate_secret_path",
    "valkey_url",
]

DEFAULT_MOUNT_POINT = "secret"

PATH_PREFIX = "crm/"
"""Every path of the layout starts with it (a policy on ``<mount>/data/crm/*`` covers them)."""
DATABASE_PATH = "crm/database"
DATABASE_URL_FIELD = "url"
DATABASE_ADMIN_URL_FIELD = "admin_url"
DATABASE_CREDS_ROLE_FIELD = "creds_role"
DATABASE_ADMIN_CREDS_ROLE_FIELD = "admin_creds_role"
DATABASE_CREDS_MOUNT_FIELD = "creds_mount"
DEFAULT_CREDS_MOUNT = "database"
"""Where Vault's database secrets engine is mounted unless ``creds_mount`` says otherwise."""
VALKEY_PATH = "crm/valkey"
VALKEY_URL_FIELD = "url"
EMAIL_PATH = "crm/email"
EMAIL_API_KEY_FIELD = "api_key"
EMAIL_FROM_ADDRESS_FIELD = "from_address"

POSTGRES_SCHEMES = ("postgresql", "postgres")
"""What libpq and psycopg accept as a connection URI."""

VALKEY_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
"""One server (what redis-py's ``from_url`` accepts: not ``valkey://``), a Sentinel-managed
primary, or a cluster (docs/keyvalue.md, "Topologies")."""

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


def validate_mount_point(
    mount_point: object, *, error: type[InvalidSecretPathError] = InvalidSecretPathError
) -> str:
    """Return ``mount_point`` unchanged when it can name a KV mount; raise otherwise.

    A mount point is part of every request URL, so it follows the rules of a path
    (:func:`validate_secret_path`): ``secret`` and ``team/kv`` are fine, ``/secret`` and
    ``../sys`` are not.

    Raises:
        InvalidSecretPathError: (or ``error``) the mount point is not acceptable.
    """
    try:
        return validate_secret_path(mount_point, mount_point="", error=error)
    except InvalidSecretPathError as exc:
        raise error(f"invalid KV mount point: {exc}") from None


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


_Error = type[InvalidSecretError]
T = TypeVar("T")


def _field(secret: Mapping[str, Any], path: str, field: str, error: _Error) -> str:
    if field not in secret:
        raise error(f"secret {path!r} has no field {field!r}")
    value = secret[field]
    if not isinstance(value, str):
        raise error(
            f"field {field!r} of secret {path!r} must be a string, got {type(value).__name__}"
        )
    if not value.strip():
        raise error(f"field {field!r} of secret {path!r} is empty")
    return value


@attrs.frozen
class _UrlField:
    """Check a URL field of a secret: present, a non-empty string, one of ``schemes``."""

    path: str
    field: str
    schemes: tuple[str, ...]

    def __call__(self, secret: Mapping[str, Any], error: _Error) -> str:
        value = _field(secret, self.path, self.field, error)
        scheme, sep, _ = value.partition("://")
        if not sep or scheme.lower() not in self.schemes:
            expected = " or ".join(f"{s}://" for s in self.schemes)
            # The value itself (or even its scheme part) is never shown: it may be a password.
            raise error(
                f"field {self.field!r} of secret {self.path!r} must be a URL starting with "
                f"{expected}"
            )
        return value


def _email_credentials_of(secret: Mapping[str, Any], error: _Error) -> EmailCredentials:
    api_key = _field(secret, EMAIL_PATH, EMAIL_API_KEY_FIELD, error)
    from_address = _field(secret, EMAIL_PATH, EMAIL_FROM_ADDRESS_FIELD, error)
    if "@" not in from_address:
        raise error(
            f"field {EMAIL_FROM_ADDRESS_FIELD!r} of secret {EMAIL_PATH!r} is not an email address"
        )
    return EmailCredentials(from_address=from_address, api_key=api_key)


@attrs.frozen
class _Accessor(Generic[T]):
    """One typed value of the layout: the secret it lives in, and how to check and take it.

    Written once; :meth:`read` serves the sync stores and :meth:`read_async` their asyncio
    twins, which differ only in how they wait for ``get_secret``.
    """

    path: str
    take: Callable[[Mapping[str, Any], _Error], T]

    def read(self, store: SecretStore, error: _Error) -> T:
        return self.take(store.get_secret(self.path), error)

    async def read_async(self, store: AsyncSecretStore, error: _Error) -> T:
        return self.take(await store.get_secret(self.path), error)


_DATABASE_URL = _Accessor(
    DATABASE_PATH, _UrlField(DATABASE_PATH, DATABASE_URL_FIELD, POSTGRES_SCHEMES)
)
_ADMIN_DATABASE_URL = _Accessor(
    DATABASE_PATH, _UrlField(DATABASE_PATH, DATABASE_ADMIN_URL_FIELD, POSTGRES_SCHEMES)
)
_VALKEY_URL = _Accessor(VALKEY_PATH, _UrlField(VALKEY_PATH, VALKEY_URL_FIELD, VALKEY_SCHEMES))
_EMAIL_CREDENTIALS = _Accessor(EMAIL_PATH, _email_credentials_of)


def _url_field(
    secret: Mapping[str, Any], path: str, field: str, schemes: tuple[str, ...], error: _Error
) -> str:
    return _UrlField(path, field, schemes)(secret, error)


def database_url(store: SecretStore, *, error: _Error = InvalidSecretError) -> str:
    """Return the application's PostgreSQL URL (``crm/database`` field ``url``).

    Args:
        store: where to read it.
        error: the class to raise for a bad field; adapters pass their own subclass.

    Raises:
        SecretStoreError: any error of ``store.get_secret``.
        InvalidSecretError: the field is missing, empty, not a string or not a PostgreSQL URL.
    """
    return _DATABASE_URL.read(store, error)


def admin_database_url(store: SecretStore, *, error: _Error = InvalidSecretError) -> str:
    """Return the admin (BYPASSRLS) PostgreSQL URL (``crm/database`` field ``admin_url``).

    Args and Raises: as :func:`database_url`.
    """
    return _ADMIN_DATABASE_URL.read(store, error)


@attrs.frozen
class DatabaseSecret:
    """``crm/database`` read whole: the two URLs, and where short-lived credentials come from.

    A role that is None means that path's URL holds its own user and password; one that is
    set means its URL names host, port and database only, and the login is read from
    ``<creds_mount>/creds/<role>`` (Vault's database secrets engine). The URLs stay out of
    the repr.
    """

    url: str = attrs.field(repr=False)
    admin_url: str = attrs.field(repr=False)
    creds_role: str | None = None
    admin_creds_role: str | None = None
    creds_mount: str = DEFAULT_CREDS_MOUNT


def database_secret(store: SecretStore, *, error: _Error = InvalidSecretError) -> DatabaseSecret:
    """Return ``crm/database`` whole: ``url``, ``admin_url``, and the optional ``creds_role``,
    ``admin_creds_role`` and ``creds_mount`` (default ``database``).

    Raises:
        SecretStoreError: any error of ``store.get_secret``.
        InvalidSecretError: a URL field is missing or not a PostgreSQL URL; a role or mount
            field is present but not a plain name; a URL names a user or password although
            its path takes credentials from Vault.
    """
    secret = store.get_secret(DATABASE_PATH)
    url = _url_field(secret, DATABASE_PATH, DATABASE_URL_FIELD, POSTGRES_SCHEMES, error)
    admin_url = _url_field(
        secret, DATABASE_PATH, DATABASE_ADMIN_URL_FIELD, POSTGRES_SCHEMES, error
    )
    roles = {}
    for field in (DATABASE_CREDS_ROLE_FIELD, DATABASE_ADMIN_CREDS_ROLE_FIELD):
        roles[field] = _name_field(secret, field, error) if field in secret else None
    mount = DEFAULT_CREDS_MOUNT
    if DATABASE_CREDS_MOUNT_FIELD in secret:
        mount = _field(secret, DATABASE_PATH, DATABASE_CREDS_MOUNT_FIELD, error)
        try:
            validate_mount_point(mount)
        except InvalidSecretPathError:
            raise error(
                f"field {DATABASE_CREDS_MOUNT_FIELD!r} of secret {DATABASE_PATH!r} is not a "
                "Vault mount path"
            ) from None
    for field, role in (
        (DATABASE_URL_FIELD, roles[DATABASE_CREDS_ROLE_FIELD]),
        (DATABASE_ADMIN_URL_FIELD, roles[DATABASE_ADMIN_CREDS_ROLE_FIELD]),
    ):
        if role is not None and _has_login(secret[field]):
            raise error(
                f"field {field!r} of secret {DATABASE_PATH!r} must name no user or password: "
                f"its credentials come from Vault (role {role!r})"
            )
    return DatabaseSecret(
        url=url,
        admin_url=admin_url,
        creds_role=roles[DATABASE_CREDS_ROLE_FIELD],
        admin_creds_role=roles[DATABASE_ADMIN_CREDS_ROLE_FIELD],
        creds_mount=mount,
    )


def _name_field(secret: Mapping[str, Any], field: str, error: _Error) -> str:
    value = _field(secret, DATABASE_PATH, field, error)
    if not _SEGMENT.fullmatch(value) or value in {".", ".."}:
        raise error(
            f"field {field!r} of secret {DATABASE_PATH!r} must be one name (letters, digits "
            "and '_ . @ + = , -')"
        )
    return value


def _has_login(url: str) -> bool:
    """Whether a PostgreSQL URL names a user or a password (in its netloc or its query)."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return True
    query = parse_qs(parts.query)
    return "user" in query or "password" in query


def valkey_url(store: SecretStore, *, error: _Error = InvalidSecretError) -> str:
    """Return the Valkey URL (``crm/valkey`` field ``url``; redis://, rediss:// or unix://).

    Args and Raises: as :func:`database_url` (another scheme is an ``InvalidSecretError``).
    """
    return _VALKEY_URL.read(store, error)


def email_credentials(
    store: SecretStore, *, error: _Error = InvalidSecretError
) -> EmailCredentials:
    """Return the email service credentials (``crm/email``: ``api_key``, ``from_address``).

    Args:
        store: where to read them.
        error: the class to raise for a bad field; adapters pass their own subclass.

    Raises:
        SecretStoreError: any error of ``store.get_secret``.
        InvalidSecretError: a field is missing, empty or not a string, or ``from_address``
            has no ``@``.
    """
    return _EMAIL_CREDENTIALS.read(store, error)


class _LayoutStore(SecretStore, Protocol):
    @property
    def invalid_secret_error(self) -> _Error: ...


class _AsyncLayoutStore(AsyncSecretStore, Protocol):
    @property
    def invalid_secret_error(self) -> _Error: ...


class SecretLayoutMethods:
    """The accessors above as methods of a secret store: ``store.get_database_url()``...

    Mixed into :class:`~crm_infra.adapters.VaultClient` and
    :class:`~crm_infra.fakes.InMemorySecretStore`, which read through their own
    ``get_secret``. A bad field raises the class's ``invalid_secret_error``.
    """

    invalid_secret_error: ClassVar[_Error] = InvalidSecretError
    """The class raised for a field that is missing or malformed."""

    def get_database_url(self: _LayoutStore) -> str:
        """Return the application's PostgreSQL URL (see :func:`database_url`)."""
        return _DATABASE_URL.read(self, self.invalid_secret_error)

    def get_admin_database_url(self: _LayoutStore) -> str:
        """Return the admin PostgreSQL URL (see :func:`admin_database_url`)."""
        return _ADMIN_DATABASE_URL.read(self, self.invalid_secret_error)

    def get_valkey_url(self: _LayoutStore) -> str:
        """Return the Valkey URL (see :func:`valkey_url`)."""
        return _VALKEY_URL.read(self, self.invalid_secret_error)

    def get_email_credentials(self: _LayoutStore) -> EmailCredentials:
        """Return the email service credentials (see :func:`email_credentials`)."""
        return _EMAIL_CREDENTIALS.read(self, self.invalid_secret_error)


class AsyncSecretLayoutMethods:
    """:class:`SecretLayoutMethods` for asyncio stores: ``await store.get_database_url()``...

    Mixed into :class:`~crm_infra.adapters.AsyncVaultClient` and
    :class:`~crm_infra.fakes.AsyncInMemorySecretStore`; the same checks and errors, read
    through the store's own ``async def get_secret``.
    """

    invalid_secret_error: ClassVar[_Error] = InvalidSecretError
    """The class raised for a field that is missing or malformed."""

    async def get_database_url(self: _AsyncLayoutStore) -> str:
        """Return the application's PostgreSQL URL (see :func:`database_url`)."""
        return await _DATABASE_URL.read_async(self, self.invalid_secret_error)

    async def get_admin_database_url(self: _AsyncLayoutStore) -> str:
        """Return the admin PostgreSQL URL (see :func:`admin_database_url`)."""
        return await _ADMIN_DATABASE_URL.read_async(self, self.invalid_secret_error)

    async def get_valkey_url(self: _AsyncLayoutStore) -> str:
        """Return the Valkey URL (see :func:`valkey_url`)."""
        return await _VALKEY_URL.read_async(self, self.invalid_secret_error)

    async def get_email_credentials(self: _AsyncLayoutStore) -> EmailCredentials:
        """Return the email service credentials (see :func:`email_credentials`)."""
        return await _EMAIL_CREDENTIALS.read_async(self, self.invalid_secret_error)


# --- writing the layout ------------------------------------------------------------------------


def layout(
    *,
    database_url: str,
    admin_database_url: str,
    valkey_url: str,
    email_api_key: str,
    email_from_address: str,
) -> dict[str, dict[str, str]]:
    """Return secrets in the layout, path to fields: what to write into Vault, or to hand to
    the in-memory store.

    Example::

        for path, fields in secret_paths.layout(database_url=..., ...).items():
            vault.secrets.kv.v2.create_or_update_secret(path=path, secret=fields)
    """
    return {
        DATABASE_PATH: {
            DATABASE_URL_FIELD: database_url,
            DATABASE_ADMIN_URL_FIELD: admin_database_url,
        },
        VALKEY_PATH: {VALKEY_URL_FIELD: valkey_url},
        EMAIL_PATH: {
            EMAIL_API_KEY_FIELD: email_api_key,
            EMAIL_FROM_ADDRESS_FIELD: email_from_address,
        },
    }


def read_policy(mount_point: str = DEFAULT_MOUNT_POINT) -> str:
    """Return a Vault policy (HCL) that may read every path of the layout, and nothing else.

    Args:
        mount_point: the KV v2 mount that holds the layout (reads go to ``<mount>/data/``).
    """
    return (
        "# crm-infra application: read its own secrets, nothing else (KV v2 reads go to data/).\n"
        f'path "{mount_point}/data/{PATH_PREFIX}*" {{\n'
        '  capabilities = ["read"]\n'
        "}\n"
    )
