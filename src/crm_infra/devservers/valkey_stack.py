"""Start the Valkey topology a local stack asks for, and hand back the URL clients use.

``crm-infra dev --valkey single|cluster|sentinel`` calls :func:`start_valkey`; the URL it
returns goes into Vault as ``crm/valkey`` ``url``, so the application picks the topology from
its secret exactly as in production.
"""

from __future__ import annotations

import contextlib
from typing import Final, Literal, get_args

from crm_infra.devservers.valkey import ValkeyDevServer
from crm_infra.devservers.valkey_cluster import ValkeyClusterDevServer
from crm_infra.devservers.valkey_sentinel import ValkeySentinelDevServer

__all__ = ["VALKEY_TOPOLOGIES", "ValkeyTopology", "start_valkey"]

ValkeyTopology = Literal["single", "cluster", "sentinel"]
VALKEY_TOPOLOGIES: Final[tuple[str, ...]] = get_args(ValkeyTopology)


def start_valkey(
    stack: contextlib.ExitStack, topology: ValkeyTopology = "single", *, password: str | None
) -> str:
    """Start ``topology`` on free 127.0.0.1 ports and return its URL (it holds the password).

    - ``single``: one ``valkey-server`` (``redis://``);
    - ``cluster``: 3 primaries with one replica each (``redis+cluster://``);
    - ``sentinel``: a primary, one replica and 3 Sentinels, service ``crm``
      (``redis+sentinel://``).

    Every server is stopped when ``stack`` closes (also on Ctrl-C, and at interpreter exit).

    Raises:
        ValueError: an unknown topology.
        ValkeyServerError: the binary is missing, or the topology did not start in time (what
            had started is stopped again).
    """
    if topology == "single":
        return stack.enter_context(ValkeyDevServer(password=password)).url
    if topology == "cluster":
        return stack.enter_context(ValkeyClusterDevServer(password=password)).url
    if topology == "sentinel":
        return stack.enter_context(ValkeySentinelDevServer(password=password)).url
    raise ValueError(
        f"unknown Valkey topology {topology!r}; choose one of {', '.join(VALKEY_TOPOLOGIES)}"
    )
