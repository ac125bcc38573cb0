"""In-memory fakes of every port, for fast unit tests here and in downstream projects.

Each fake is proven faithful by the same contract suite that runs against the real adapter.
"""

from crm_infra.fakes.async_database import AsyncInMemoryUserScopedDB
from crm_infra.fakes.database import InMemoryUserScopedDB
from crm_infra.fakes.keyvalue import AsyncInMemoryKeyValueStore, InMemoryKeyValueStore
from crm_infra.fakes.secrets import AsyncInMemorySecretStore, InMemorySecretStore

__all__ = [
    "AsyncInMemoryKeyValueStore",
    "AsyncInMemorySecretStore",
    "AsyncInMemoryUserScopedDB",
    "InMemoryKeyValueStore",
    "InMemorySecretStore",
    "InMemoryUserScopedDB",
]
