"""crm-infra: typed infrastructure ports for a CRM backend.

Domain code imports from here: the ports, the errors and the user context. Real adapters live
in :mod:`crm_infra.adapters`, in-memory fakes in :mod:`crm_infra.fakes`; only the composition
root (:func:`build_infrastructure`, configured by :class:`Settings`) chooses between them.
"""

from crm_infra.composition import Infrastructure, StartupError, build_infrastructure
from crm_infra.errors import (
    BackendUnavailableError,
    ConfigError,
    DatabaseError,
    DatabaseInputError,
    DatabaseUnavailableError,
    InfraError,
    IntegrityError,
    InvalidSecretError,
    InvalidSecretPathError,
    InvalidUserIdError,
    KeyValueStoreDataError,
    KeyValueStoreError,
    KeyValueStoreInputError,
    KeyValueStoreUnavailableError,
    MigrationError,
    MissingUserContextError,
    NoRowsError,
    QueryTimeoutError,
    RowSecurityError,
    SecretAccessDeniedError,
    SecretNotFoundError,
    SecretStoreAuthError,
    SecretStoreError,
    SecretStoreUnavailableError,
    TransactionUsageError,
    UnsafeQueryError,
    UnsafeRoleError,
    UnsupportedQueryError,
)
from crm_infra.health import ComponentHealth, HealthReport
from crm_infra.ports import (
    AdminDB,
    JSONValue,
    KeyValueStore,
    Params,
    Row,
    SecretStore,
    Transaction,
    UserScopedDB,
)
from crm_infra.settings import Settings
from crm_infra.user_context import UserId, get_current_user_id, user_context

__version__ = "0.1.0"

__all__ = [
    "AdminDB",
    "BackendUnavailableError",
    "ComponentHealth",
    "ConfigError",
    "DatabaseError",
    "DatabaseInputError",
    "DatabaseUnavailableError",
    "HealthReport",
    "InfraError",
    "Infrastructure",
    "IntegrityError",
    "InvalidSecretError",
    "InvalidSecretPathError",
    "InvalidUserIdError",
    "JSONValue",
    "KeyValueStore",
    "KeyValueStoreDataError",
    "KeyValueStoreError",
    "KeyValueStoreInputError",
    "KeyValueStoreUnavailableError",
    "MigrationError",
    "MissingUserContextError",
    "NoRowsError",
    "Params",
    "QueryTimeoutError",
    "Row",
    "RowSecurityError",
    "SecretAccessDeniedError",
    "SecretNotFoundError",
    "SecretStore",
    "SecretStoreAuthError",
    "SecretStoreError",
    "SecretStoreUnavailableError",
    "Settings",
    "StartupError",
    "Transaction",
    "TransactionUsageError",
    "UnsafeQueryError",
    "UnsafeRoleError",
    "UnsupportedQueryError",
    "UserId",
    "UserScopedDB",
    "__version__",
    "build_infrastructure",
    "get_current_user_id",
    "user_context",
]
