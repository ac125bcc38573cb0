"""What the Vault clients' spans say: the operation, the mount and the secret's path (a name
of the layout, such as ``crm/database``), never a field, a value, a token or an id.

Each segment of the path is shown when it reads as a name (:func:`~crm_infra.telemetry.calls.
is_name`: lowercase letters, ``_`` and ``-``), else as ``*``: ``crm/tenants/3f2a...`` shows as
``crm/tenants/*``. A path the client refuses (:func:`~crm_infra.secret_paths.
validate_secret_path`: ``..``, a bad character, the API's ``secret/data/`` prefix) is shown as
``(invalid)``: whatever the caller passed is not repeated.

``crm.secret.cached`` (on a successful ``get_secret``'s span and duration point) says whether
the client's cache served the read, without a request: the clients set :data:`CACHED` in the
caller's context when it did, and the span's start clears it.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from crm_infra.errors import InvalidSecretPathError
from crm_infra.secret_paths import DEFAULT_MOUNT_POINT, validate_secret_path
from crm_infra.telemetry import Call, CallSpec
from crm_infra.telemetry.calls import Attributes, is_name

__all__ = ["CACHED", "GET_SECRET", "HEALTH_CHECK", "SECRET_STORE", "shown_path"]

SECRET_STORE = "SecretStore"  # noqa: S105 - the port's name, not a password
CACHED: ContextVar[bool] = ContextVar("crm_infra_vault_cached", default=False)
"""Set by a client whose cache served ``get_secret`` (see the module docstring)."""
_server: weakref.WeakKeyDictionary[Any, Attributes] = weakref.WeakKeyDictionary()


def _server_of(owner: Any) -> Attributes:
    known = _server.get(owner)
    if known is None:
        parts = urlsplit(owner.addr)
        found: dict[str, str | int] = {"crm.vault.mount": owner.mount_point}
        if parts.hostname:
            found["server.address"] = parts.hostname
        try:
            port = parts.port
        except ValueError:
            port = None
        found["server.port"] = port or (443 if parts.scheme == "https" else 80)
        known = found
        _server[owner] = known
    return known


def shown_path(path: object, mount_point: str = DEFAULT_MOUNT_POINT) -> str:
    """The secret path as a span shows it (see the module docstring)."""
    try:
        valid = validate_secret_path(path, mount_point=mount_point)
    except InvalidSecretPathError:
        return "(invalid)"
    return "/".join(s if is_name(s) else "*" for s in valid.split("/"))


_CACHED_YES: Attributes = {"crm.secret.cached": True}
_CACHED_NO: Attributes = {"crm.secret.cached": False}


class _Operation(CallSpec):
    def __init__(self, operation: str, *, path: bool) -> None:
        self._operation = operation
        self._path = path
        self._metric: Attributes = {"crm.port": SECRET_STORE, "crm.operation": operation}

    def describe(self, owner: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Call:
        attributes: dict[str, str | int | bool | float] = {
            **self._metric,
            **_server_of(owner),
        }
        if self._path:
            path = args[0] if args else kwargs.get("path")
            attributes["crm.secret.path"] = shown_path(path, owner.mount_point)
            CACHED.set(False)
        return Call(self._operation, attributes, self._metric)

    def outcome(self, call: Call, result: Any) -> Attributes:
        return self.measured(call, result)

    def measured(self, call: Call, result: Any) -> Attributes:
        if not self._path:
            return {}
        return _CACHED_YES if CACHED.get() else _CACHED_NO


GET_SECRET = _Operation("get_secret", path=True)
HEALTH_CHECK = _Operation("health_check", path=False)
