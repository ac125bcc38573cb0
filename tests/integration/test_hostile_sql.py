"""Hostile user-scoped SQL on the real server: it never crosses users and leaves nothing behind.

Every entry of the corpus (``tests/battery/hostile_sql.py``) runs as user A, who has rows,
against the rows of user B, in every mode of :data:`tests.battery.hostile_run.MODES` (alone
with ``execute``, first in a ``transaction()``, later in one). Each test checks that the call
came to what the entry must come to (refused before any I/O, an error, or A's rows only), that
A was shown nothing of B's, that no row of B's changed and none appeared for B, and then that
the pooled connection is exactly as a fresh one would be:

- the client has ONE pooled connection, so the next call provably gets the same one (its
  backend pid is the same, unless the hostile call lost the connection);
- between calls, the session holds no user, no LISTEN, no advisory lock, no prepared
  statement but the client's own (each named by the hash of its text and parameter types), no
  temporary table, no cursor, no seeded random generator, and the same settings as a fresh
  connection (all of ``pg_settings``);
- B's next call runs as B, with the client's statement timeout, and sees exactly B's rows;
- a second client of the same login role (the bystander, acting for B) keeps its connection.

The module has its own database (what acts on other sessions can only reach this module's
connections) and seeds it once; a test that changed any row puts the seeded rows back, and a
test that left the connection in any other state than a fresh one replaces the client, so
every entry starts from the same place. The named tests at the end are the reproductions of
issue 11, one by one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import sql

from crm_infra import (
    DatabaseError,
    DatabaseUnavailableError,
    TransactionUsageError,
    UnsafeQueryError,
)
from crm_infra.adapters import PostgresClient
from crm_infra.adapters.postgres.pipeline import statement_name
from crm_infra.bootstrap import BootstrappedDatabase, create_database, drop_database
from crm_infra.migrations import apply_migrations
from tests.battery.hostile_run import (
    MODES,
    Result,
    Snapshot,
    changed,
    leak_problems,
    outcome_problems,
    reset_rows,
    run,
    snapshot,
    state_problems,
)
from tests.battery.hostile_sql import (
    B_CONTACT,
    B_CONTACT_2,
    BYSTANDER,
    CORPUS,
    USER_A,
    USER_B,
    Hostile,
)

pytestmark = pytest.mark.real

STATEMENT_TIMEOUT = 5.0
_SEED_VALUE = 0.25  # what the corpus's setseed entries seed the random generator with
_B_NAME = "bsecret-name-1"  # sent by B as a parameter: never shown to A by any catalog

# Read on the pooled connection between calls, outside any transaction: what the session holds.
_SESSION = """
SELECT pg_backend_pid() AS pid,
       current_setting('app.current_user_id', true) AS user_setting,
       ARRAY(SELECT pg_listening_channels()) AS channels,
       (SELECT count(*) FROM pg_locks
         WHERE pid = pg_backend_pid() AND locktype = 'advisory') AS advisory_locks,
       (SELECT coalesce(json_agg(json_build_object(
                  'name', name, 'statement', statement, 'from_sql', from_sql,
                  'types', parameter_types::oid[])), '[]')
          FROM pg_prepared_statements) AS prepared,
       (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) AS temp_tables,
       ARRAY(SELECT name FROM pg_cursors WHERE name <> '') AS cursors,
       (SELECT json_object_agg(name, coalesce(setting, '') || ' (' || source || ')')
          FROM pg_settings) AS settings,
       random() AS random,
       (SELECT count(*) FROM pg_prepared_xacts) AS prepared_xacts,
       (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects
"""

# B's next call through the client, with one of B's values as a parameter.
_B_CALL = """
SELECT pg_backend_pid() AS pid,
       current_setting('app.current_user_id', true) AS me,
       current_setting('statement_timeout') AS timeout,
       (SELECT json_agg(c ORDER BY c.id) FROM contacts c) AS contacts,
       (SELECT json_agg(a ORDER BY a.id) FROM addresses a) AS addresses,
       (SELECT json_agg(t ORDER BY t.id) FROM tickets t) AS tickets,
       (SELECT count(*) FROM contacts WHERE name = %s) AS named
"""


@attrs.frozen
class Session:
    """What one pooled connection's session holds between calls, and what B's next call saw."""

    state: dict[str, Any]
    b_call: dict[str, Any] | None  # None: it failed (the caller reports how)


def _read_session(client: PostgresClient) -> dict[str, Any]:
    conn = client.pool.getconn()
    try:
        row = conn.execute(_SESSION).fetchone()
    finally:
        client.pool.putconn(conn)
    assert row is not None
    return dict(row)


def _b_call(client: PostgresClient) -> dict[str, Any]:
    """Make B's next call, with one of B's values as a parameter."""
    return client.execute(_B_CALL, (_B_NAME,), user_id=USER_B)[0]


def _observe(client: PostgresClient) -> Session:
    """Read the session between calls, then make B's next call (on the same connection)."""
    return Session(_read_session(client), _b_call(client))


def _content_addressed(prepared: dict[str, Any]) -> bool:
    """Return True when a prepared statement's name is the client's name for its text: the
    hash of the text and its parameter types (a type the client left to the server shows as
    the type the server chose)."""
    name, text = prepared["name"], prepared["statement"]
    types = [(oid, 0) for oid in prepared["types"] or ()]
    return any(
        statement_name(text, combo).decode() == name for combo in itertools.product(*types)
    )


def _session_problems(
    fresh: Session, now: Session, pid_before: int, result: Result, seeded_random: float
) -> list[str]:
    """How the session after A's call differs from a fresh connection's (after one call)."""
    problems = []
    state, b_call = now.state, now.b_call
    lost = isinstance(result.error, DatabaseUnavailableError)
    if state["pid"] != pid_before and not lost:
        problems.append(
            f"the next call got another connection (pid {pid_before} -> {state['pid']}): "
            "the pooled connection did not survive the call"
        )
    if b_call is not None and b_call["pid"] != state["pid"]:
        problems.append("B's next call did not get the only pooled connection")
    for key in ("user_setting", "channels", "advisory_locks", "temp_tables", "cursors",
                "prepared_xacts", "large_objects"):
        if state[key] != fresh.state[key]:
            problems.append(f"the session's {key} is {state[key]!r}, not {fresh.state[key]!r}")
    for prepared in state["prepared"]:
        if prepared["from_sql"] or not _content_addressed(prepared):
            problems.append(f"a prepared statement the client did not make: {prepared!r}")
        elif _B_NAME in prepared["statement"]:
            problems.append(f"a prepared statement shows B's values: {prepared!r}")
    if state["settings"] != fresh.state["settings"]:
        diff = {
            name: (fresh.state["settings"].get(name), value)
            for name, value in state["settings"].items()
            if fresh.state["settings"].get(name) != value
        }
        diff.update(
            {n: (v, None) for n, v in fresh.state["settings"].items() if n not in state["settings"]}
        )
        problems.append(f"the session's settings changed (fresh, now): {diff!r}")
    if state["random"] == seeded_random:
        problems.append("the session's random generator was left seeded")
    if b_call is not None and fresh.b_call is not None:
        expected_b = {k: v for k, v in fresh.b_call.items() if k != "pid"}
        got_b = {k: v for k, v in b_call.items() if k != "pid"}
        if got_b != expected_b:
            problems.append(f"B's next call saw {got_b!r}, not {expected_b!r}")
    return problems


class World:
    """This module's database, its clients, and what a fresh connection looks like."""

    def __init__(self, database: BootstrappedDatabase) -> None:
        self.database = database
        self.client = self._client()
        reset_rows(self.client)
        # Statistics on B's rows exist, so that the catalog entries could show them.
        self.client.execute_admin("ANALYZE contacts, addresses, tickets")
        self.seeded = snapshot(self.client)
        with self.client.admin_transaction() as tx:
            tx.execute("SELECT setseed(%s)", (_SEED_VALUE,))
            self.seeded_random: float = tx.execute_scalar("SELECT random() AS r")
        with self._client() as fresh:
            fresh.execute(_B_CALL, (_B_NAME,), user_id=USER_B)
            self.fresh = _observe(fresh)
        # What every later connection is compared with: B's call runs as B, with the
        # client's timeout, sees B's rows; between calls the session holds no user.
        assert self.fresh.state["user_setting"] in ("", None)
        assert self.fresh.b_call is not None
        assert (self.fresh.b_call["me"], self.fresh.b_call["timeout"]) == (str(USER_B), "5s")
        assert self.fresh.b_call["named"] == 1
        b_contacts = [c["id"] for c in self.fresh.b_call["contacts"]]
        assert b_contacts == [str(B_CONTACT), str(B_CONTACT_2)]
        self.pid = 0
        self._start_over()
        self.bystander = self._client(application_name=BYSTANDER)
        self.bystander_pid = self._bystander_pid()

    def _client(self, **extra: Any) -> PostgresClient:
        return PostgresClient(
            self.database.app_url,
            1,
            min_pool_size=1,
            admin_connection_url=self.database.admin_url,
            statement_timeout=STATEMENT_TIMEOUT,
            **extra,
        )

    def _start_over(self) -> None:
        """Check that the client's connection is as a fresh one, after one call of B's."""
        self.client.execute(_B_CALL, (_B_NAME,), user_id=USER_B)
        now = _observe(self.client)
        setup = Result("setup", [], None)
        problems = _session_problems(self.fresh, now, now.state["pid"], setup, self.seeded_random)
        assert not problems, problems
        self.pid = now.state["pid"]

    def _bystander_pid(self) -> int:
        row = self.bystander.execute(
            "SELECT pg_backend_pid() AS pid, count(*) AS n FROM contacts WHERE name = %s",
            (_B_NAME,),
            user_id=USER_B,
        )[0]
        assert row["n"] == 1
        pid: int = row["pid"]
        return pid

    def check(self, entry: Hostile, mode: str) -> list[str]:
        """Run ``entry`` as A in ``mode``; return every way it went wrong, and put back
        whatever it changed."""
        return self.aftermath(entry, run(self.client, entry, mode))

    def aftermath(self, entry: Hostile, result: Result) -> list[str]:
        """Return every way the call that sent ``entry`` went wrong: its outcome, what it
        showed A, the rows it changed, and what it left on the connection or did to the
        bystander. Then put back whatever it changed."""
        after = snapshot(self.client)
        problems = [
            *outcome_problems(entry, result),
            *leak_problems(entry, result),
            *state_problems(entry, self.seeded, after),
        ]
        try:
            state = _read_session(self.client)
        except psycopg.Error as exc:
            problems.append(f"the pooled connection could not be read between calls: {exc}")
        else:
            try:
                b_call: dict[str, Any] | None = _b_call(self.client)
            except DatabaseError as exc:
                problems.append(f"B's next call failed: {exc}")
                b_call = None
            now = Session(state, b_call)
            problems += _session_problems(self.fresh, now, self.pid, result, self.seeded_random)
            self.pid = state["pid"]
        bystander_ok = True
        try:
            if self._bystander_pid() != self.bystander_pid:
                bystander_ok = False
                problems.append("the bystander's connection was replaced: it was ended")
        except DatabaseError as exc:
            bystander_ok = False
            problems.append(f"the bystander's next call failed: {exc}")
        self._recover(after, problems, bystander_ok=bystander_ok)
        return problems

    def _recover(self, after: Snapshot, problems: list[str], *, bystander_ok: bool) -> None:
        if changed(self.seeded, after):
            reset_rows(self.client)
            assert snapshot(self.client) == self.seeded
        if problems:
            self._clean_database()
            self.client.close()
            self.client = self._client()
            self._start_over()
        if not bystander_ok:
            self.bystander.close()
            self.bystander = self._client(application_name=BYSTANDER)
            self.bystander_pid = self._bystander_pid()

    def _clean_database(self) -> None:
        """Remove what outlives a session (large objects, prepared transactions): only a
        superuser may, whoever made them."""
        with psycopg.connect(
            self.database.superuser_url, dbname=self.database.database, autocommit=True
        ) as conn:
            conn.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
            for (gid,) in conn.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
            ).fetchall():
                conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))

    def close(self) -> None:
        self.client.close()
        self.bystander.close()


@pytest.fixture(scope="module")
def hostile_database(pg_superuser_url: str) -> Iterator[BootstrappedDatabase]:
    """A database of this module's own: what acts on other sessions reaches only its own."""
    created = create_database(pg_superuser_url, prefix="crm_hostile")
    try:
        with PostgresClient(
            created.app_url, 1, admin_connection_url=created.admin_url, min_pool_size=0
        ) as migrator:
            apply_migrations(migrator)
        yield created
    finally:
        drop_database(created)


@pytest.fixture(scope="module")
def world(hostile_database: BootstrappedDatabase) -> Iterator[World]:
    world = World(hostile_database)
    try:
        yield world
    finally:
        world.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("entry", CORPUS, ids=[e.id for e in CORPUS])
def test_hostile_sql_never_crosses_users_nor_outlives_the_call(
    world: World, entry: Hostile, mode: str
) -> None:
    """A's hostile call comes to what it must, shows and changes nothing of B's, and the
    next call on the same pooled connection, as B, behaves as on a fresh connection."""
    problems = world.check(entry, mode)
    assert not problems, "\n".join(problems)


# --- the reproductions of issue 11, one by one ---------------------------------------------

_BY_ID = {entry.id: entry for entry in CORPUS}


@pytest.mark.parametrize("mode", MODES)
def test_a_do_block_cannot_replace_the_statement_that_sets_the_user(
    world: World, mode: str
) -> None:
    """``DO ... DEALLOCATE _crm_set_user; PREPARE _crm_set_user ...`` with B's id is refused,
    and the next calls on that connection read and insert as their own user."""
    problems = world.check(_BY_ID["repro:do-deallocate-prepare-set-user"], mode)
    assert not problems, "\n".join(problems)
    try:
        inserted = world.client.execute(
            "INSERT INTO contacts (name) VALUES ('after the attack') RETURNING user_id",
            user_id=USER_A,
        )
        names = world.client.execute("SELECT name FROM contacts ORDER BY name", user_id=USER_A)
    finally:
        reset_rows(world.client)
    assert inserted == [{"user_id": USER_A}]
    assert [r["name"] for r in names] == ["Al", "Ann", "after the attack"]


@pytest.mark.parametrize("mode", MODES)
def test_a_do_block_leaves_no_listen_and_no_session_lock(world: World, mode: str) -> None:
    """``DO`` with ``LISTEN`` and ``pg_advisory_lock``: refused; the next user's connection
    listens to nothing and holds no lock."""
    problems = world.check(_BY_ID["repro:do-listen-and-session-lock"], mode)
    assert not problems, "\n".join(problems)
    state = _read_session(world.client)
    assert (state["channels"], state["advisory_locks"]) == ([], 0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["execute-set-user-then-select", "execute-set-user"])
def test_executing_the_set_user_statement_by_name_is_refused(
    world: World, name: str, mode: str
) -> None:
    """``EXECUTE _crm_set_user('<B>'); SELECT ...``, also inside ``transaction()``."""
    problems = world.check(_BY_ID[f"repro:{name}"], mode)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("mode", MODES)
def test_set_local_of_a_unicode_escaped_setting_name_is_refused(world: World, mode: str) -> None:
    """``SET LOCAL U&"app.current_user_id" = ...``."""
    problems = world.check(_BY_ID["repro:set-local-uescape-name"], mode)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("mode", MODES)
def test_a_unicode_escaped_set_config_is_refused(world: World, mode: str) -> None:
    """``SELECT U&"\\0073et_config"(...)``."""
    problems = world.check(_BY_ID["repro:uescape-set-config"], mode)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["do-dynamic-set-config", "do-dynamic-execute-format"])
def test_dynamic_sql_in_a_do_body_is_refused(world: World, name: str, mode: str) -> None:
    """A ``DO`` body that sets the user, directly or through ``EXECUTE format(...)``."""
    problems = world.check(_BY_ID[f"repro:{name}"], mode)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "name",
    [
        "query-to-xml",
        "query-to-xmlschema",
        "query-to-xml-and-xmlschema",
        "ts-stat",
        "ts-rewrite-query-text",
        "cursor-to-xml",
    ],
)
def test_built_in_functions_that_run_sql_text_are_refused(
    world: World, name: str, mode: str
) -> None:
    """Built-in functions that run SQL given as text: no check of the statement sees it."""
    problems = world.check(_BY_ID[f"repro:{name}"], mode)
    assert not problems, "\n".join(problems)


def test_commit_begin_inside_a_transaction_commits_nothing_before_it(world: World) -> None:
    """``tx.execute("COMMIT; BEGIN")`` is refused: the block does not go on in a new
    transaction without a user, and what came before it is rolled back, not committed."""
    entry = _BY_ID["repro:commit-begin"]
    with pytest.raises(UnsafeQueryError) as caught, world.client.transaction(USER_A) as tx:  # noqa: PT012 - the block is what is tested
        tx.execute("INSERT INTO contacts (name) VALUES ('before the commit')")
        tx.execute(entry.sql)
    assert isinstance(caught.value, DatabaseError)
    problems = world.aftermath(entry, Result("transaction", None, caught.value))
    assert not problems, "\n".join(problems)
    rows = world.client.execute(
        "SELECT name FROM contacts WHERE name = 'before the commit'", user_id=USER_A
    )
    assert rows == []


def test_a_statement_after_a_refused_commit_does_not_run_outside_the_transaction(
    world: World,
) -> None:
    """After the refusal the block is aborted: a later statement is refused too, rather than
    run in a new transaction without a user."""
    with pytest.raises(TransactionUsageError), world.client.transaction(USER_A) as tx:  # noqa: PT012 - the block is what is tested
        tx.execute("INSERT INTO contacts (name) VALUES ('before the commit')")
        with pytest.raises(UnsafeQueryError):
            tx.execute("COMMIT; BEGIN")
        tx.execute("INSERT INTO contacts (user_id, name) VALUES (%s, 'planted')", (USER_B,))
    assert snapshot(world.client) == world.seeded


@pytest.mark.parametrize("mode", MODES)
def test_catalog_views_show_other_users_sql_but_never_their_values(
    world: World, mode: str
) -> None:
    """``pg_prepared_statements`` and ``pg_stat_activity`` are readable by every session of
    the login role; they show B's statements (as templates) and none of B's values, which
    B sent as parameters just before, on the same connection and on the bystander's."""
    shown = []
    for name in ("catalog-prepared-statements", "catalog-stat-activity"):
        entry = _BY_ID[f"repro:{name}"]
        result = run(world.client, entry, mode)
        assert result.rows is not None, result.shown()
        shown.append(repr(result.rows))
        problems = world.aftermath(entry, result)
        assert not problems, "\n".join(problems)
    prepared, activity = shown
    assert "FROM contacts WHERE name = $1" in prepared  # B's probe, on this connection
    assert "count(*) AS n FROM contacts WHERE name = $1" in activity  # the bystander's
    assert _B_NAME not in prepared + activity
