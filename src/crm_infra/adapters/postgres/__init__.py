"""PostgreSQL behind row-level security: the client, its protocol code and its errors.

The public face is :class:`PostgresClient`, its asyncio twin, :class:`DynamicCredentials`
(short-lived credentials from Vault) and the ``Postgres*`` errors; the modules beside it hold
the protocol pieces it is built from (the pipeline, the statement cache, the transaction
handles, the client deadline, the start-up role check).
"""

from crm_infra.adapters.postgres.async_client import AsyncPostgresClient
from crm_infra.adapters.postgres.client import (
    PostgresClient,
    PostgresConfigError,
    PostgresError,
    PostgresInputError,
    PostgresIntegrityError,
    PostgresNoRowsError,
    PostgresParamsError,
    PostgresRowSecurityError,
    PostgresTimeoutError,
    PostgresTransactionUsageError,
    PostgresUnavailableError,
    PostgresUnsafeQueryError,
    PostgresUnsafeRoleError,
)
from crm_infra.adapters.postgres.credentials import DynamicCredentials
from crm_infra.adapters.postgres.errors import PostgresCredentialsExpiredError

__all__ = [
    "AsyncPostgresClient",
    "DynamicCredentials",
    "PostgresClient",
    "PostgresConfigError",
    "PostgresCredentialsExpiredError",
    "PostgresError",
    "PostgresInputError",
    "PostgresIntegrityError",
    "PostgresNoRowsError",
    "PostgresParamsError",
    "PostgresRowSecurityError",
    "PostgresTimeoutError",
    "PostgresTransactionUsageError",
    "PostgresUnavailableError",
    "PostgresUnsafeQueryError",
    "PostgresUnsafeRoleError",
]
