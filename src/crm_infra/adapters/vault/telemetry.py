"""What the Vault clients' spans say: the operation, the mount and the secret's path (a name
of the layout, such as ``crm/database``), never a field, a value, a token or an id.

A path that is not a plain layout name (one the client is about to refuse, say) is shown as
``(invalid)``: whatever the caller passed is not repeated.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from crm_infra.telemetry import Call, CallSpec
from crm_infra.telemetry.calls import Attributes

__all__ = ["GET_SECRET", "HEALTH_CHECK", "SECRET_STORE"]

SECRET_STORE = "SecretStore"  # noqa: S105 - the port's name, not a password
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+){0,15}")
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
            plain = isinstance(path, str) and _PLAIN_PATH.fullmatch(path) is not None
            attributes["crm.secret.path"] = str(path) if plain else "(invalid)"
        return Call(self._operation, attributes, self._metric)


GET_SECRET = _Operation("get_secret", path=True)
HEALTH_CHECK = _Operation("health_check", path=False)
