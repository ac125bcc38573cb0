"""An in-memory :class:`UserScopedDB` and :class:`AdminDB` with PostgreSQL's row-level security.

:class:`InMemoryUserScopedDB` builds its tables from the same ``sql/`` files as PostgreSQL and runs
PostgreSQL SQL (translated by sqlglot) on an in-memory SQLite database. Tables that the schema
puts under row-level security behave as they do for the application role: other users' rows
are invisible, writes that would give a row to another user raise :class:`RowSecurityError`, no
user means no rows, and the admin path sees and writes everything. SQL the fake cannot run
faithfully raises :class:`UnsupportedQueryError` naming the construct; it never answers
differently from PostgreSQL. The contract suite (``tests/contract``) runs the same tests on
both backends to prove it.

User-scoped SQL goes through the same guard as ``PostgresClient`` (PostgreSQL's own grammar,
:mod:`crm_infra._sql_guard`): exactly one data statement, nothing that acts on the session,
refused with :class:`UnsafeQueryError` before anything runs; the fake also refuses, the same
way, any name of its own (the base tables behind its views...), which PostgreSQL has not.

Example::

    db = InMemoryUserScopedDB()
    db.execute_admin("INSERT INTO users (id, email) VALUES (%s, %s)", (alice, "a@example.com"))
    db.execute("INSERT INTO contacts (name) VALUES (%s)", ("Bob",), user_id=alice)
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from crm_infra._sql_guard import Refusal, user_sql_verdict
from crm_infra._sql_params import (
    ParamsShapeError,
    bind_order,
    split_placeholders,
    verbatim,
)
from crm_infra._sql_text import shown, untextable_reason
from crm_infra.errors import (
    DatabaseError,
    DatabaseInputError,
    IntegrityError,
    NoRowsError,
    RowSecurityError,
    TransactionUsageError,
    UnsafeQueryError,
    UnsupportedQueryError,
)
from crm_infra.fakes.sql.checks import InternalNames, RefusedSql, UserSqlChecker
from crm_infra.fakes.sql.ddl import (
    RLS_ERROR_PREFIX,
    TYPE_CHECK_PREFIX,
    internal_objects,
    schema_ddl,
)
from crm_infra.fakes.sql.functions import FAKE_FUNCTIONS, SessionState, register_functions
from crm_infra.fakes.sql.paths import ParamWidths, user_widths
from crm_infra.fakes.sql.schema import Schema, load_schema, split_statements
from crm_infra.fakes.sql.sqlite import quote
from crm_infra.fakes.sql.translate import Translation, Translator
from crm_infra.fakes.sql.types import encode_param, exact_results, uuid_text
from crm_infra.ports import Params, Row, Transaction
from crm_infra.schema_files import migration_files
from crm_infra.user_context import UserId, resolve_user_id

__all__ = ["InMemoryUserScopedDB"]

_MAX_CACHED_TRANSLATIONS = 10_000
# The fake's own savepoints (quoted, under its internal _crm_ prefix, as every name it makes).
_SEVERAL = quote("_crm_several")
_SCRIPT = quote("_crm_script")
_ABORTED = (
    "current transaction is aborted, commands ignored until end of transaction block "
    "(an earlier statement in this transaction failed)"
)


@attrs.frozen
class _Compiled:
    """A schema parsed once, shared by every fake built from the same files and role."""

    schema: Schema
    ddl: tuple[str, ...]
    translators: dict[bool, Translator]
    checker: UserSqlChecker
    # (admin, with params, SQL text), and with the parameters' integer widths appended (see
    # _sql_paths) for a translation that depends on them; a user-scoped text only once the
    # guard has passed it
    translations: dict[tuple[bool, bool, str] | tuple[bool, bool, str, ParamWidths], Translation]


_compiled: dict[tuple[tuple[tuple[str, int, int], ...], str], _Compiled] = {}
_compiled_lock = threading.Lock()


def _compile(sql_dir: Path | None, app_role: str) -> _Compiled:
    files = migration_files(sql_dir)
    # Keyed by content stamps, so an edited schema file is parsed again.
    stamps = tuple((str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    key = (stamps, app_role)
    with _compiled_lock:
        found = _compiled.get(key)
        if found is None:
            schema = load_schema(files)
            internal = _internal_names(schema)
            found = _Compiled(
                schema=schema,
                ddl=tuple(schema_ddl(schema)),
                translators={
                    False: Translator(
                        schema, admin=False, app_role=app_role, internal=internal
                    ),
                    True: Translator(schema, admin=True, internal=internal),
                },
                checker=UserSqlChecker(internal),
                translations={},
            )
            _compiled[key] = found
        return found


def _internal_names(schema: Schema) -> InternalNames:
    """Return every name the fake makes in SQLite that PostgreSQL has not."""
    names = internal_objects(schema)
    for function in FAKE_FUNCTIONS:
        names.setdefault(function, "one of its SQL functions")
    return InternalNames(names)


class _TxnState:
    """The one open transaction: whose it is, how deep, and whether a statement failed."""

    def __init__(self, thread: int, user: str | None) -> None:
        self.thread = thread
        self.user = user  # None: the admin path
        self.depth = 0
        self.aborted = False
        self.started = False  # PostgreSQL's BEGIN (and now()) come with the first statement


class _Handle:
    """The :class:`~crm_infra.ports.Transaction` handle yielded by ``transaction()``."""

    def __init__(self, db: InMemoryUserScopedDB, state: _TxnState) -> None:
        self._db = db
        self._state = state
        self.open = True  # False once its block (transaction or savepoint) has ended

    def execute(self, query: str, params: Params = ()) -> list[Row]:
        """Run ``query`` inside the transaction and return all rows.

        Raises:
            TransactionUsageError: the handle's block has ended.
        """
        if not self.open:
            raise TransactionUsageError(
                "transaction.execute failed: this handle's transaction block has ended"
            )
        return self._db._run_in(self._state, query, params)

    def execute_one(self, query: str, params: Params = ()) -> Row | None:
        """Run ``query`` inside the transaction and return its first row, or None."""
        rows = self.execute(query, params)
        return rows[0] if rows else None

    def execute_scalar(self, query: str, params: Params = ()) -> Any:
        """Run ``query`` inside the transaction; return the first column of the first row.

        Raises:
            NoRowsError: the query returned no row.
        """
        return _scalar(self.execute(query, params), query)


def _scalar(rows: list[Row], query: str) -> Any:
    if not rows:
        raise NoRowsError(f"execute_scalar: the query returned no row: {_short(query)}")
    return next(iter(rows[0].values()))


def _refuse_untextable(params: Params, query: str) -> None:
    """Refuse text PostgreSQL cannot hold (NUL, lone surrogates) before anything runs.

    The real client refuses both too (psycopg, and the UTF-8 encoding); SQLite would store
    them, so without this the fake would accept what PostgreSQL never can.
    """
    values = params.values() if isinstance(params, Mapping) else params
    pending = list(values)
    while pending:
        value = pending.pop()
        if isinstance(value, list | tuple):
            pending.extend(value)
        elif isinstance(value, str):
            why = None
            if "\x00" in value:
                why = "PostgreSQL text fields cannot contain NUL (0x00) bytes"
            else:
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    why = "a parameter cannot be encoded as UTF-8 text (a lone surrogate?)"
            if why is not None:
                raise DatabaseInputError(f"execute: {_short(query)} failed: {why}")


def _refuse_untextable_sql(query: str) -> None:
    """Refuse SQL text PostgreSQL cannot receive whole, as ``PostgresClient`` does."""
    why = untextable_reason(query)
    if why is not None:
        raise DatabaseInputError(f"execute: {_short(shown(query))} failed: {why}; nothing ran")


def _describe(operation: str, query: str) -> str:
    """Name an operation with the start of its SQL, as PostgresClient's messages do."""
    first = " ".join(shown(query).split())
    return f"{operation}: {first[:70]}{'...' if len(first) > 70 else ''}"


def _refused(operation: str, query: str, refusal: Refusal) -> UnsafeQueryError:
    return UnsafeQueryError(
        f"{_describe(operation, query)} refused: {refusal.message()}; nothing ran"
    )


def _syntax_error(operation: str, query: str, message: str) -> DatabaseError:
    return DatabaseError(
        f"{_describe(operation, query)} failed: {message} (SQLSTATE 42601); nothing ran"
    )


def _short(query: str) -> str:
    text = " ".join(query.split())
    return text if len(text) <= 120 else text[:117] + "..."


class InMemoryUserScopedDB:
    """A faithful in-memory stand-in for ``PostgresClient``: both UserScopedDB and AdminDB.

    Thread-safe: one lock serialises statements, and an open transaction holds it until it
    ends, so concurrent transactions run one after the other (a valid serial order).

    Args:
        sql_dir: the schema directory (``NNN_name.sql`` files); default: the package's own.
        app_role: the role whose grants the user-scoped path gets (as the app login role).
        clock: returns the current aware time; ``now()`` is frozen per transaction from it.
        lock_timeout: seconds a call waits while another thread's transaction holds the
            database, before raising :class:`TransactionUsageError`.

    Raises:
        UnsupportedQueryError: the schema holds a statement the fake cannot reproduce.
    """

    def __init__(
        self,
        sql_dir: Path | str | None = None,
        *,
        app_role: str = "crm_app",
        clock: Callable[[], datetime] | None = None,
        lock_timeout: float = 10.0,
    ) -> None:
        compiled = _compile(Path(sql_dir) if sql_dir is not None else None, app_role)
        self._schema = compiled.schema
        self._state = SessionState(clock or (lambda: datetime.now(UTC)))
        self._conn = sqlite3.connect(
            ":memory:", isolation_level=None, check_same_thread=False, cached_statements=512
        )
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute("PRAGMA case_sensitive_like = ON")
        register_functions(self._conn, self._state)
        for statement in compiled.ddl:
            self._conn.execute(statement)
        self._translators = compiled.translators
        self._checker = compiled.checker
        self._cache = compiled.translations
        self._split_cache: dict[str, list[str]] = {}
        self._lock = threading.RLock()
        self._lock_timeout = lock_timeout
        self._txn: _TxnState | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"InMemoryUserScopedDB(tables={sorted(self._schema.tables)})"

    # --- UserScopedDB ---------------------------------------------------------------------

    def execute(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> list[Row]:
        """Run ``query`` (``%s`` placeholders) for one user in its own transaction.

        Raises:
            MissingUserContextError: no ``user_id`` and no current user (before any work).
            InvalidUserIdError: ``user_id`` is not a UUID.
            UnsafeQueryError: not exactly one data statement, one that would act on the
                session or on other sessions, or one naming something internal to the fake
                (before anything runs; as ``PostgresClient``, except for the internal names).
            IntegrityError: a NOT NULL, UNIQUE, FOREIGN KEY or CHECK constraint refused a write.
            RowSecurityError: a row-level security policy refused a write.
            UnsupportedQueryError: SQL the fake cannot run faithfully.
            TransactionUsageError: called while this thread has a transaction open.
            DatabaseError: any other failure PostgreSQL would report (a missing grant, an
                unknown table or column, a malformed value...).
        """
        uid = uuid_text(resolve_user_id(user_id))
        # The hot path: the lock by hand, without a context manager's generator.
        lock = self._lock
        if not lock.acquire(blocking=False) and not lock.acquire(timeout=self._lock_timeout):
            raise self._lock_timed_out()
        try:
            self._refuse_inside_transaction("execute")
            return self._autocommit(uid, query, params, "execute")
        finally:
            self._lock.release()

    def execute_one(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> Row | None:
        """Run ``query`` for one user in its own transaction; return the first row or None."""
        rows = self.execute(query, params, user_id)
        return rows[0] if rows else None

    def execute_scalar(
        self, query: str, params: Params = (), user_id: UserId | None = None
    ) -> Any:
        """Run ``query`` for one user; return the first column of the first row.

        Raises:
            NoRowsError: the query returned no row (also a ``ValueError``).
        """
        return _scalar(self.execute(query, params, user_id), query)

    def transaction(self, user_id: UserId | None = None) -> AbstractContextManager[Transaction]:
        """Open one transaction for one user; commit on normal exit, roll back on an exception.

        Nested for the same user it is a savepoint; for another user (or inside an admin
        transaction) it raises :class:`TransactionUsageError`. After a statement fails inside
        the transaction, further statements raise :class:`DatabaseError` until it ends, and a
        normal exit rolls everything back and raises :class:`TransactionUsageError`, as
        ``PostgresClient`` does.

        Raises:
            MissingUserContextError: no ``user_id`` and no current user (before any work).
            InvalidUserIdError: ``user_id`` is not a UUID.
        """
        uid = uuid_text(resolve_user_id(user_id))
        return self._transaction(uid)

    def health_check(self) -> bool:
        """Return True when the fake answers; raise :class:`DatabaseError` once it is closed."""
        with self._locked():
            if self._closed:
                raise DatabaseError("health check failed: the in-memory database is closed")
            self._conn.execute("SELECT 1").fetchone()
            return True

    # --- AdminDB ------------------------------------------------------------------------

    def execute_admin(self, query: str, params: Params = ()) -> list[Row]:
        """Run ``query`` on the admin path, bypassing row-level security; return all rows.

        Raises the same errors as :meth:`execute`, except the user-related ones.
        """
        with self._locked():
            self._refuse_inside_transaction("execute_admin")
            return self._autocommit(None, query, params, "execute_admin")

    def admin_transaction(self) -> AbstractContextManager[Transaction]:
        """Open one admin transaction; commit on normal exit, roll back on an exception.

        Nested, it is a savepoint of the enclosing admin transaction.
        """
        return self._transaction(None)

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Drop every row and release the database; later calls raise :class:`DatabaseError`."""
        with self._locked():
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> InMemoryUserScopedDB:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Waiting forever would hang a test whose threads wait on each other: PostgreSQL would
        # run their transactions side by side, the fake runs them one at a time.
        if not self._lock.acquire(timeout=self._lock_timeout):
            raise self._lock_timed_out()
        try:
            yield
        finally:
            self._lock.release()

    def _lock_timed_out(self) -> TransactionUsageError:
        return TransactionUsageError(
            f"waited {self._lock_timeout:g} s for the in-memory database: another thread's "
            "transaction holds it (the fake runs transactions one at a time; a thread "
            "waiting for another one's database work inside a transaction deadlocks)"
        )

    def _refuse_inside_transaction(self, method: str) -> None:
        txn = self._txn
        if txn is not None and txn.thread == threading.get_ident():
            raise TransactionUsageError(
                f"{method}() called while a transaction is open in this thread: on PostgreSQL "
                "it would run on another connection, outside that transaction; use the "
                "transaction handle instead"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseError("the in-memory database is closed")

    def _autocommit(
        self, user: str | None, query: str, params: Params, operation: str
    ) -> list[Row]:
        self._check_open()
        self._state.now_text = None  # now() is frozen lazily, on its first use in the statement
        # One statement outside BEGIN is its own transaction in SQLite too.
        return self._run(user, query, params, operation)

    @contextmanager
    def _transaction(self, user: str | None) -> Iterator[Transaction]:
        with self._locked():
            self._check_open()
            txn = self._txn
            if txn is not None and txn.thread == threading.get_ident():
                yield from self._savepoint(txn, user)
                return
            txn = _TxnState(threading.get_ident(), user)
            self._conn.execute("BEGIN")
            self._txn = txn
            handle = _Handle(self, txn)
            try:
                yield handle
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                handle.open = False
                self._txn = None
                self._state.now_text = None
            if txn.aborted:
                self._conn.execute("ROLLBACK")
                raise TransactionUsageError(
                    "transaction commit failed: an error inside the block aborted the "
                    "transaction and was caught; everything in it was rolled back"
                )
            self._conn.execute("COMMIT")

    def _savepoint(self, txn: _TxnState, user: str | None) -> Iterator[Transaction]:
        if txn.user != user:
            if txn.user is None:
                where = "an admin transaction"
            elif user is None:
                where = "a user's transaction (an admin transaction)"
            else:
                where = "another user's transaction"
            raise TransactionUsageError(
                f"a transaction cannot be nested inside {where}: each transaction acts for "
                "one user only; on PostgreSQL it would run on another connection"
            )
        if txn.aborted:
            raise DatabaseError(_ABORTED)
        txn.depth += 1
        name = quote(f"_crm_sp_{txn.depth}")
        self._conn.execute(f"SAVEPOINT {name}")
        handle = _Handle(self, txn)
        try:
            yield handle
        except BaseException:
            self._rollback_to(name, txn)
            raise
        finally:
            handle.open = False
            txn.depth -= 1
        if not txn.aborted:
            self._conn.execute(f"RELEASE SAVEPOINT {name}")
        elif user is None:
            # The admin path checks its block on exit (psycopg's savepoint then recovers).
            self._rollback_to(name, txn)
            raise TransactionUsageError(
                "admin_transaction failed: an error inside the block aborted the transaction "
                "and was caught; everything in it was rolled back"
            )
        # A user savepoint left aborted stays so: the enclosing block fails on its next
        # statement and on exit, as the PostgreSQL client's deferred RELEASE does.

    def _rollback_to(self, name: str, txn: _TxnState) -> None:
        self._conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
        self._conn.execute(f"RELEASE SAVEPOINT {name}")
        txn.aborted = False

    def _run_in(self, txn: _TxnState, query: str, params: Params) -> list[Row]:
        operation = "admin_transaction.execute" if txn.user is None else "transaction.execute"
        with self._locked():
            if self._txn is not txn:
                raise TransactionUsageError("this transaction handle is used after its block ended")
            if txn.aborted:
                raise DatabaseError(_ABORTED)
            if not txn.started:
                txn.started = True
                self._state.freeze_now()
            try:
                return self._run(txn.user, query, params, operation)
            except ParamsShapeError:
                raise  # psycopg's TypeError: PostgresClient's transaction goes on after it
            except UnsupportedQueryError:
                raise  # SQL that PostgreSQL would run: its transaction would go on
            except DatabaseError:
                # Also SQL refused before it ran (UnsafeQueryError, a syntax error,
                # parameters psycopg cannot bind): PostgresClient aborts the transaction for
                # these too.
                txn.aborted = True
                raise

    def _checked_kind(self, admin: bool, query: str, with_params: bool, operation: str) -> str:
        """Check ``query`` as PostgresClient does before sending it; return its kind.

        User-scoped: the guard (one data statement, nothing acting on the session) and the
        fake's internal names. Admin: PostgreSQL's grammar only, for its syntax errors.

        Raises:
            UnsafeQueryError: the guard refuses the statement.
            DatabaseError: a syntax error (nothing ran); placeholders psycopg refuses.
        """
        if admin:
            split = split_placeholders(query) if with_params else verbatim(query)
            syntax_error = user_sql_verdict(split.text).syntax_error
            if syntax_error is not None:
                raise _syntax_error(operation, query, syntax_error)
            return ""
        checked = self._checker.check(query, with_params=with_params)
        if checked.refusal is not None:
            raise _refused(operation, query, checked.refusal)
        if checked.syntax_error is not None:
            raise _syntax_error(operation, query, checked.syntax_error)
        return checked.kind

    def _translation(
        self, admin: bool, query: str, params: Params, with_params: bool, operation: str
    ) -> Translation:
        key = (admin, with_params, query)
        found = self._cache.get(key)
        if found is not None and not found.depends_on_widths:
            return found  # the hot path: one look-up (only texts the checks passed are here)
        kind = self._checked_kind(admin, query, with_params, operation) if found is None else ""
        # How PostgresClient sends the parameters decides their integer types (on the admin
        # path, psycopg picks them by the values at run time: the translation checks then).
        widths = user_widths(params) if with_params and not admin else ()
        if found is not None:  # it depends on the widths: look for these ones
            found = self._cache.get((admin, with_params, query, widths))
        if found is None:
            if not kind and not admin:  # a new width for a text that passed already
                kind = self._checked_kind(admin, query, with_params, operation)
            try:
                found = self._translators[admin].translate(
                    query, with_params=with_params, widths=widths, kind=kind
                )
            except RefusedSql as exc:
                if admin:  # no user to protect, but no such name on PostgreSQL either
                    refusal = exc.refusal
                    raise DatabaseError(
                        f"{_describe(operation, query)} failed: {refusal.written} "
                        f"{refusal.reason}"
                    ) from None
                raise _refused(operation, query, exc.refusal) from None
            if len(self._cache) >= _MAX_CACHED_TRANSLATIONS:
                self._cache.clear()  # generated SQL texts could otherwise grow it forever
            # Whether a translation depends on the widths is the same for every widths: the
            # first one made tells the next calls where to look.
            self._cache.setdefault(key, found)
            if found.depends_on_widths:
                self._cache[(admin, with_params, query, widths)] = found
        return found

    def _run(self, user: str | None, query: str, params: Params, operation: str) -> list[Row]:
        if not isinstance(query, str):
            raise DatabaseError(f"query must be a str; got {type(query).__name__}")
        _refuse_untextable_sql(query)
        with_params = bool(params)
        if user is None and ";" in query:
            # The admin path sends a text without params as written: several statements
            # run as one simple Query. (User-scoped SQL is one statement: the guard.)
            pieces = self._pieces(query)
            if len(pieces) > 1:
                self._checked_kind(True, query, with_params, operation)
                if with_params:
                    raise DatabaseError(
                        f"{_describe(operation, query)} failed: cannot insert multiple "
                        "commands into a prepared statement (SQLSTATE 42601); with params "
                        "the admin path runs one statement per call"
                    )
                return self._run_several(pieces, operation)
        return self._run_one(user, query, params, with_params, operation)

    def _pieces(self, query: str) -> list[str]:
        found = self._split_cache.get(query)
        if found is None:
            found = split_statements(query)
            if len(self._split_cache) >= _MAX_CACHED_TRANSLATIONS:
                self._split_cache.clear()
            self._split_cache[query] = found
        return found

    def _run_several(self, pieces: list[str], operation: str) -> list[Row]:
        # As one simple Query: one implicit transaction (all or nothing); the last result
        # comes back.
        self._conn.execute(f"SAVEPOINT {_SEVERAL}")
        try:
            rows: list[Row] = []
            for piece in pieces:
                rows = self._run_one(None, piece, (), False, operation)
        except BaseException:
            self._conn.execute(f"ROLLBACK TO SAVEPOINT {_SEVERAL}")
            self._conn.execute(f"RELEASE SAVEPOINT {_SEVERAL}")
            raise
        self._conn.execute(f"RELEASE SAVEPOINT {_SEVERAL}")
        return rows

    def _run_one(
        self, user: str | None, query: str, params: Params, with_params: bool, operation: str
    ) -> list[Row]:
        _refuse_untextable(params, query)
        translation = self._translation(user is None, query, params, with_params, operation)
        values = self._bind(translation, params)
        state = self._state
        state.current_user_id = user
        state.rls_active = user is not None
        state.error = None
        if translation.computes_quotients:
            exact_results.by_double = {}
        try:
            if translation.then:
                self._run_script((translation.sql, *translation.then))
                raw = None
            else:
                cursor = self._conn.execute(translation.sql, values)
                raw = cursor.fetchall() if translation.returns_rows else None
        except sqlite3.Error as exc:
            raise self._translate_error(exc, query) from None
        finally:
            state.current_user_id = None
            state.rls_active = False
        if raw is None:
            return []
        return self._decode(translation, raw, params)

    def _run_script(self, statements: tuple[str, ...]) -> None:
        """Run parameterless statements as one: all of them, or none."""
        self._conn.execute(f"SAVEPOINT {_SCRIPT}")
        try:
            for statement in statements:
                self._conn.execute(statement)
        except BaseException:
            self._conn.execute(f"ROLLBACK TO SAVEPOINT {_SCRIPT}")
            self._conn.execute(f"RELEASE SAVEPOINT {_SCRIPT}")
            raise
        self._conn.execute(f"RELEASE SAVEPOINT {_SCRIPT}")

    def _bind(self, translation: Translation, params: Params) -> list[Any]:
        if not translation.keys and not params:
            return []
        if not translation.keys and isinstance(params, Mapping):
            return []  # a piece of several statements that uses none of the names
        ordered = bind_order(translation.split, params)
        types, arrays = translation.param_types, translation.array_params
        return [
            encode_param(value, types[i], array=i in arrays) for i, value in enumerate(ordered)
        ]

    @staticmethod
    def _decode(translation: Translation, raw: list[Any], params: Params) -> list[Row]:
        names, decoders = translation.names, translation.decoders
        if translation.echoes_params:
            # `SELECT %s`: psycopg hands back the value as passed, whatever its type.
            originals = bind_order(translation.split, params)
            echoed = [
                (i, c.param_index)
                for i, c in enumerate(translation.columns)
                if c.param_index is not None
            ]
            rows = []
            for record in raw:
                values = [decode(value) for decode, value in zip(decoders, record, strict=True)]
                for i, index in echoed:
                    values[i] = originals[index]
                rows.append(dict(zip(names, values, strict=True)))
            return rows
        return [
            dict(zip(names, [d(v) for d, v in zip(decoders, record, strict=True)], strict=True))
            for record in raw
        ]

    def _user_names(self, message: str) -> str:
        """Return SQLite's message with the tables named as the user knows them."""
        tables = self._schema.tables
        return _BASE_NAME.sub(
            lambda m: m.group(1) if m.group(1) in tables else m.group(0), message
        )

    def _translate_error(self, exc: sqlite3.Error, query: str) -> DatabaseError:
        raised = self._state.error
        self._state.error = None
        if isinstance(raised, DatabaseError):
            return raised
        message = self._user_names(str(exc))
        name = getattr(exc, "sqlite_errorname", "")
        if name == "SQLITE_CONSTRAINT_TRIGGER" and message.startswith(RLS_ERROR_PREFIX):
            table = message[len(RLS_ERROR_PREFIX) :].split(":", maxsplit=1)[0]
            return RowSecurityError(
                f'new row violates row-level security policy for table "{table}"'
            )
        if name == "SQLITE_CONSTRAINT_CHECK" and TYPE_CHECK_PREFIX in message:
            column = message.rsplit(f"{TYPE_CHECK_PREFIX}varchar_", 1)[-1]
            return DatabaseError(f"value too long for type character varying (column {column})")
        if name in {
            "SQLITE_CONSTRAINT_NOTNULL",
            "SQLITE_CONSTRAINT_UNIQUE",
            "SQLITE_CONSTRAINT_PRIMARYKEY",
            "SQLITE_CONSTRAINT_FOREIGNKEY",
            "SQLITE_CONSTRAINT_CHECK",
        }:
            return IntegrityError(f"{_constraint_kind(name)} violated: {message}")
        return DatabaseError(f"query failed: {message}: {_short(query)}")


_BASE_NAME = re.compile(r"\b_t_(\w+)")


def _constraint_kind(name: str) -> str:
    return {
        "SQLITE_CONSTRAINT_NOTNULL": "NOT NULL constraint",
        "SQLITE_CONSTRAINT_UNIQUE": "UNIQUE constraint",
        "SQLITE_CONSTRAINT_PRIMARYKEY": "UNIQUE constraint (primary key)",
        "SQLITE_CONSTRAINT_FOREIGNKEY": "FOREIGN KEY constraint",
        "SQLITE_CONSTRAINT_CHECK": "CHECK constraint",
    }[name]

