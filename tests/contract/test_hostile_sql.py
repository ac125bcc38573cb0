"""The hostile corpus on every DB backend: the same outcome, and A never reaches B's rows.

Every entry of ``tests/battery/hostile_sql.py`` runs as user A against the rows of user B on
each backend of ``conftest.DB_BACKENDS`` (the in-memory fakes and PostgreSQL, sync and async),
in every mode of :data:`tests.battery.hostile_run.MODES`. Both backends are held to the entry's one
expected outcome, so they agree: refused with ``UnsafeQueryError`` on both, an error on both,
or the same rows on both (the fake may refuse SQL it cannot run with
``UnsupportedQueryError``, never answer differently). On each, A is shown nothing of B's,
no row of B's changes or appears, and B's next call sees exactly B's rows as B.

The backends are built once per module, not per test as the ``db`` fixture does (emptying the
tables before each of some two thousand tests would cost more than the tests), and each is a
client of its own with ONE pooled connection, so that what a hostile call might leave on a
connection cannot reach the session's shared client or any other test. Every test compares
against the seeded rows and puts them back when anything changed. The session-level checks of
a pooled connection (settings, locks, listens, prepared statements) are in
``tests/integration/test_hostile_sql.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from crm_infra import DatabaseError, UnsafeQueryError
from crm_infra.adapters import AsyncPostgresClient, PostgresClient
from crm_infra.adapters.postgres.base import PostgresBase
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.fakes import InMemoryUserScopedDB
from tests.battery.hostile_run import (
    MODES,
    WHO,
    Backend,
    changed,
    clear_rows,
    leak_problems,
    outcome_problems,
    reset_rows,
    run,
    snapshot,
    state_problems,
)
from tests.battery.hostile_sql import CORPUS, SEED, USER_A, USER_B, Hostile, by_category
from tests.contract.conftest import (
    DB_BACKENDS,
    REAL_BACKENDS,
    async_memory_db,
    async_postgres_db,
    backend_params,
)
from tests.fixtures.pgbouncer import PgBouncer

_BY_ID = {entry.id: entry for entry in CORPUS}
_B_ROWS = sorted(
    (table, row["id"])
    for table in ("contacts", "addresses", "tickets")
    for row in SEED[table]
    if row["user_id"] == USER_B
)
_EVERY_ROW = (
    "SELECT 'contacts' AS t, id FROM contacts UNION ALL "
    "SELECT 'addresses' AS t, id FROM addresses UNION ALL "
    "SELECT 'tickets' AS t, id FROM tickets"
)


class Side:
    """One backend, seeded, with what B's next call must see."""

    def __init__(self, name: str, build: Callable[[], Backend]) -> None:
        self.name = name
        self.fake = name not in REAL_BACKENDS
        self._build = build
        self.db = build()
        reset_rows(self.db)
        self.seeded = snapshot(self.db)

    def check(self, entry: Hostile, mode: str) -> list[str]:
        """Run ``entry`` as A in ``mode``; return every way it went wrong, and put back
        whatever it changed."""
        result = run(self.db, entry, mode)
        after = snapshot(self.db)
        problems = [
            *outcome_problems(entry, result, fake=self.fake),
            *leak_problems(entry, result),
            *state_problems(entry, self.seeded, after),
            *self._next_call_problems(),
        ]
        if problems and not self.fake:
            # Whatever the call left on the connection goes with the client (the fake has
            # no session to leave anything in): the next test starts clean.
            self.db.close()
            self.db = self._build()
        if problems or changed(self.seeded, after):
            reset_rows(self.db)
            assert snapshot(self.db) == self.seeded
        return problems

    def _next_call_problems(self) -> list[str]:
        try:
            me = self.db.execute_scalar(WHO, user_id=USER_B)
            rows = self.db.execute(_EVERY_ROW, user_id=USER_B)
        except DatabaseError as exc:
            return [f"B's next call failed: {exc}"]
        problems = []
        if me != str(USER_B):
            problems.append(f"B's next call ran as {me!r}")
        seen = sorted((row["t"], row["id"]) for row in rows)
        if seen != _B_ROWS:
            problems.append(f"B's next call saw the rows {seen!r}, not B's {_B_ROWS!r}")
        return problems


Client = TypeVar("Client", bound=PostgresBase)


def _client(app_url: str, admin_url: str, *, twin: bool) -> Callable[[], Backend]:
    """Build a client with ONE pooled connection (see the module docstring); ``twin``: the
    asyncio one, behind the sync facade."""

    def make(cls: type[Client]) -> Client:
        return cls(
            app_url, 1, min_pool_size=1, admin_connection_url=admin_url, statement_timeout=5.0
        )

    def build() -> Backend:
        if twin:
            return async_postgres_db(lambda: make(AsyncPostgresClient))
        return make(PostgresClient)

    return build


def _postgres(twin: bool) -> Callable[[pytest.FixtureRequest], Callable[[], Backend]]:
    def builder(request: pytest.FixtureRequest) -> Callable[[], Backend]:
        database: BootstrappedDatabase = request.getfixturevalue("pg_database")
        return _client(database.app_url, database.admin_url, twin=twin)

    return builder


def _through_pgbouncer(twin: bool) -> Callable[[pytest.FixtureRequest], Callable[[], Backend]]:
    def builder(request: pytest.FixtureRequest) -> Callable[[], Backend]:
        bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
        return _client(bouncer.app_url, bouncer.admin_url, twin=twin)

    return builder


# One builder per backend of conftest.DB_BACKENDS, at module scope (see the module docstring).
_BUILDERS: dict[str, Callable[[pytest.FixtureRequest], Callable[[], Backend]]] = {
    "memory": lambda _request: InMemoryUserScopedDB,
    "postgres": _postgres(twin=False),
    "pgbouncer": _through_pgbouncer(twin=False),
    "memory-async": lambda _request: async_memory_db,
    "postgres-async": _postgres(twin=True),
    "pgbouncer-async": _through_pgbouncer(twin=True),
}


@pytest.fixture(
    scope="module",
    params=backend_params(list(DB_BACKENDS)),
)
def side(request: pytest.FixtureRequest) -> Iterator[Side]:
    """One backend of ``conftest.DB_BACKENDS``, seeded once for the module."""
    name: str = request.param
    assert name in _BUILDERS, f"add a module-scoped builder for the new backend {name!r}"
    built = Side(name, _BUILDERS[name](request))
    try:
        yield built
    finally:
        clear_rows(built.db)  # the database is the session's: leave no rows of this module
        built.db.close()


def test_the_corpus_covers_every_category_of_issue_11() -> None:
    """At least 150 hostile texts, in every category the issue names, each id once."""
    counts = by_category()
    assert sum(counts.values()) >= 150
    assert set(counts) == {
        "identity", "repro", "dynamic", "txn", "session", "other", "multi", "catalog",
        "shadow", "rls", "write", "inject",
    }
    assert len(_BY_ID) == len(CORPUS)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("entry", CORPUS, ids=[e.id for e in CORPUS])
def test_hostile_sql_gets_the_same_answer_and_never_reaches_another_user(
    side: Side, entry: Hostile, mode: str
) -> None:
    """A's hostile call comes to what it must on every backend, shows and changes nothing of
    B's, and B's next call sees exactly B's rows."""
    problems = side.check(entry, mode)
    assert not problems, "\n".join(problems)


# --- the reproductions of issue 11 that concern every backend ----------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_cte_named_like_an_internal_table_reaches_no_other_users_rows(
    side: Side, mode: str
) -> None:
    """``SELECT ... FROM _t_contacts WHERE EXISTS (WITH _t_contacts AS ...)``: an error, and
    none of B's rows (the fake once returned every user's rows for it)."""
    problems = side.check(_BY_ID["repro:cte-shadow-exists"], mode)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("mode", MODES)
def test_an_insert_select_through_a_shadowing_cte_copies_no_other_users_rows(
    side: Side, mode: str
) -> None:
    """The same shadowing in an INSERT ... SELECT copies nothing of B's into A's rows."""
    problems = side.check(_BY_ID["repro:cte-shadow-insert-select"], mode)
    assert not problems, "\n".join(problems)


def test_commit_begin_inside_a_transaction_is_refused_and_commits_nothing(side: Side) -> None:
    """``tx.execute("COMMIT; BEGIN")`` is refused, and what came before it is rolled back
    with the block instead of committed."""
    with pytest.raises(UnsafeQueryError), side.db.transaction(USER_A) as tx:  # noqa: PT012 - the block is what is tested
        tx.execute("INSERT INTO contacts (name) VALUES ('before the commit')")
        tx.execute("COMMIT; BEGIN")
    rows = side.db.execute(
        "SELECT name FROM contacts WHERE name = 'before the commit'", user_id=USER_A
    )
    assert rows == []
    assert snapshot(side.db) == side.seeded
