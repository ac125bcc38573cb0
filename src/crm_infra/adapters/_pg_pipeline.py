"""``execute`` in one round trip at the cost of a plain query: a libpq pipeline.

For a user-scoped ``execute`` of one preparable statement the client sends, through libpq's
pipeline mode on the connection's ``pgconn``::

    [Parse _crm_sN]  Bind/Execute _crm_set_user(uuid)  Bind/Execute _crm_sN(values)  Sync

The extended protocol runs everything up to the Sync in order, in one implicit transaction
when the connection starts idle in autocommit (the caller asserts it), so the
transaction-local user setting is in force for the statement and gone at the Sync. Server
plans are reused (named statements), values travel as text parameters of the declared types,
never spliced into SQL, and the client does one write and reads until the Sync: about the
client and server work of a raw pooled query.

This works below psycopg's public API (pipeline mode on ``pgconn``, psycopg's generators and
``Connection.wait``), which is why ``pyproject.toml`` pins psycopg's minor version. After an
error the results are drained to the Sync, so the connection stays usable; a call interrupted
before the Sync was read leaves the protocol state unknown, so the connection is closed.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg import abc as pg_abc
from psycopg import errors as pg_errors
from psycopg.adapt import PyFormat, Transformer
from psycopg.generators import fetch_many, send
from psycopg.pq import ExecStatus
from psycopg.pq.abc import PGconn, PGresult
from psycopg.rows import DictRow

from crm_infra.adapters._pg_errors import ResultLoadError
from crm_infra.ports import Row

__all__ = ["Outcome", "PipelineState", "run_pipelined", "type_oids"]

# The declared parameter types of ``_pg_statements._pg_type`` as OIDs (0: let the server infer).
_OIDS = {
    "unknown": 0,
    "bool": 16,
    "bytea": 17,
    "int8": 20,
    "float8": 701,
    "date": 1082,
    "time": 1083,
    "timestamp": 1114,
    "timestamptz": 1184,
    "interval": 1186,
    "timetz": 1266,
    "numeric": 1700,
    "uuid": 2950,
}

SET_USER = b"_crm_set_user"


def type_oids(types: Sequence[str | None]) -> list[int]:
    """Return the OIDs to declare for the given type names (all known to ``_pg_type``)."""
    return [_OIDS[t or "unknown"] for t in types]


class PipelineState:
    """What one connection needs for pipelined calls: a reusable transformer (it caches
    dumpers and loaders) and the connection's encoding."""

    __slots__ = ("encoding", "transformer")

    def __init__(self, conn: psycopg.Connection[DictRow]) -> None:
        self.transformer: pg_abc.Transformer = Transformer(conn)
        self.encoding = conn.info.encoding


_TEXT_FORMATS: dict[int, list[PyFormat]] = {}


def _text_formats(count: int) -> list[PyFormat]:
    formats = _TEXT_FORMATS.get(count)
    if formats is None:
        formats = _TEXT_FORMATS.setdefault(count, [PyFormat.TEXT] * count)
    return formats


class Outcome(NamedTuple):
    """What one pipelined call gave: its rows, or the error the server answered with."""

    rows: list[Row]
    error: psycopg.Error | None
    prepared: bool  # the statement was prepared by this call (even if running it then failed)


def run_pipelined(
    conn: psycopg.Connection[DictRow],
    state: PipelineState,
    *,
    name: str,
    prepare: tuple[str, list[int]] | None,
    user: str,
    values: Sequence[Any],
) -> Outcome:
    """Run prepared statement ``name`` for ``user`` in one round trip.

    Args:
        conn: a connection idle in autocommit, not in pipeline mode.
        state: the connection's :class:`PipelineState`.
        name: the statement's name (``""``: the unnamed statement, prepared in this call).
        prepare: ``(sql with $n placeholders, declared type OIDs)`` to prepare ``name`` first,
            or None when the connection has it already.
        user: the user id (a UUID's text) to set transaction-locally.
        values: the statement's parameter values, in ``$n`` order.

    Returns:
        The rows (``[]`` for a statement without a result), or the error the server answered
        with (the connection is idle again), and whether ``prepare`` succeeded.

    Raises:
        psycopg.Error: the connection failed (it is closed). Errors of encoding the SQL or
            dumping ``values`` come before any I/O, with the connection untouched.
        UnicodeEncodeError: the SQL text or a value cannot be encoded (before any I/O).
    """
    tx = state.transformer
    encoding = state.encoding
    # Everything that can fail on the caller's input happens before anything is sent.
    params = tx.dump_sequence(values, _text_formats(len(values))) if values else None
    statement = name.encode(encoding)
    parse = None if prepare is None else (prepare[0].encode(encoding), prepare[1])
    user_param = [user.encode()]
    pgconn = conn.pgconn
    try:
        pgconn.enter_pipeline_mode()
        if parse is not None:
            pgconn.send_prepare(statement, parse[0], param_types=parse[1])
        pgconn.send_query_prepared(SET_USER, user_param)
        pgconn.send_query_prepared(statement, params)
        pgconn.pipeline_sync()
        results = conn.wait(_exchange(pgconn, 2 if parse is None else 3))
        pgconn.exit_pipeline_mode()
    except BaseException:
        # Interrupted or disconnected before the Sync was read: what the server still has
        # to say is unknown, so the connection cannot be used again. (One the server broke
        # is left as it is, so that the pool sees it was the server.)
        if not conn.closed:
            conn.close()
        raise
    prepared = parse is not None and results[0].status == ExecStatus.COMMAND_OK
    for result in results:
        if result.status == ExecStatus.FATAL_ERROR:
            return Outcome([], pg_errors.error_from_result(result, encoding=encoding), prepared)
    return Outcome(_rows(tx, results[-1], encoding), None, prepared)


def _exchange(pgconn: PGconn, expected: int) -> Generator[Any, Any, list[PGresult]]:
    """Flush the pipeline, then read each statement's result and the Sync."""
    yield from send(pgconn)
    results: list[PGresult] = []
    for _ in range(expected):
        # One statement's results up to its terminating NULL (an aborted one gives
        # PIPELINE_ABORTED); the last of them is the one that counts.
        got = yield from fetch_many(pgconn)
        results.append(got[-1])
    sync = yield from fetch_many(pgconn)
    if not sync or sync[-1].status != ExecStatus.PIPELINE_SYNC:
        raise psycopg.OperationalError("the server's answer to a pipeline ended unexpectedly")
    return results


def _rows(tx: pg_abc.Transformer, result: PGresult, encoding: str) -> list[Row]:
    if result.status != ExecStatus.TUPLES_OK or not result.ntuples:
        return []
    tx.set_pgresult(result)
    names = [(result.fname(i) or b"").decode(encoding) for i in range(result.nfields)]

    def make_row(values: Sequence[Any]) -> Row:
        return dict(zip(names, values, strict=True))

    try:
        rows: list[Row] = tx.load_rows(0, result.ntuples, make_row)
    except psycopg.DataError as exc:
        raise ResultLoadError.wrap(exc) from exc
    return rows
