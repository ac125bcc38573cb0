"""Valkey (redis-py): the client and its errors.
"""

from crm_infra.adapters.valkey.client import (
    ValkeyClient,
    ValkeyDataError,
    ValkeyError,
    ValkeyInputError,
    ValkeyUnavailableError,
    redact_url,
)

__all__ = [
    "ValkeyClient",
    "ValkeyDataError",
    "ValkeyError",
    "ValkeyInputError",
    "ValkeyUnavailableError",
    "redact_url",
]
