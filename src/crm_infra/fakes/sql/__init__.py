"""The in-memory database fake's SQL engine: PostgreSQL SQL checked, translated and run on
SQLite, built from the same ``sql/`` files as the server. :class:`~crm_infra.fakes.
InMemoryUserScopedDB` is its public face; nothing here is imported from outside the fakes."""
