"""The fake's mirror of how PostgresClient sends parameters agrees with the client itself.

``crm_infra.fakes._sql_paths`` copies the pure helpers of
``crm_infra.adapters._pg_statements`` (the fakes may not import the adapters); these tests
decide each case both ways, so the copy cannot drift from ``StatementCache.run``.
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from crm_infra.adapters._pg_statements import _pg_type, _preparable, to_dollar_placeholders
from crm_infra.fakes._sql_paths import CONTEXT, param_widths, runs_prepared
from crm_infra.ports import Params


def client_prepares(query: str, params: Params) -> bool:
    """Return what StatementCache.run decides: PREPARE with declared types, or literals."""
    query = query.strip().rstrip(";").rstrip()
    converted = to_dollar_placeholders(query, params) if params else (query, [])
    if converted is None or not _preparable(query):
        return False
    return None not in [_pg_type(v) for v in converted[1]]


class Level(enum.IntEnum):
    HIGH = 3


SELECT = "SELECT id FROM contacts WHERE name = %s"
QUERIES: list[tuple[str, Params]] = [
    (SELECT, ("Ann",)),
    (SELECT, (None,)),
    (SELECT, (5,)),
    (SELECT, (2**70,)),
    (SELECT, (True,)),
    (SELECT, (1.5,)),
    (SELECT, (Decimal("1.5"),)),
    (SELECT, (uuid4(),)),
    (SELECT, (dt.date(2024, 1, 1),)),
    (SELECT, (dt.datetime(2024, 1, 1, tzinfo=dt.UTC),)),
    (SELECT, (dt.datetime(2024, 1, 1),)),
    (SELECT, (dt.time(1, 2),)),
    (SELECT, (dt.timedelta(seconds=1),)),
    (SELECT, (b"x",)),
    (SELECT, (["a"],)),
    (SELECT, (("a",),)),
    (SELECT, (Level.HIGH,)),
    (SELECT, ({"a": 1},)),
    (SELECT, ()),
    (SELECT, ("a", "b")),
    (SELECT, "a"),
    (SELECT + ";", ("Ann",)),
    ("  " + SELECT + " ;  ", ("Ann",)),
    (SELECT + "; SELECT 1", ("Ann",)),
    ("SELECT ';' AS x WHERE 1 = %s", (1,)),
    ("SELECT 1 -- ; comment\n WHERE 1 = %s", (1,)),
    ("SELECT $$;$$ AS x WHERE 1 = %s", (1,)),
    ("SELECT $1 WHERE 1 = %s", (1,)),
    ("SELECT '$1' AS x WHERE 1 = %s", (1,)),
    ("(SELECT 1 WHERE 1 = %s)", (1,)),
    ("/* c */ SELECT 1 WHERE 1 = %s", (1,)),
    ("-- c\nSELECT 1 WHERE 1 = %s", (1,)),
    ("with x AS (SELECT %s AS a) SELECT a FROM x", (1,)),
    ("INSERT INTO contacts (name) VALUES (%s)", ("Ann",)),
    ("UPDATE contacts SET name = %s", ("Ann",)),
    ("DELETE FROM contacts WHERE name = %s", ("Ann",)),
    ("VALUES (%s)", (1,)),
    ("TABLE contacts", ()),
    ("TRUNCATE contacts", ()),
    ("SET LOCAL x = 1", ()),
    ("EXPLAIN SELECT %s", (1,)),
    ("SELECT 1 WHERE 'a' = ANY(%s)", (["a"],)),
    ("SELECT %s, %s", (1, ["a"])),
    ("SELECT %(a)s, %(b)s, %(a)s", {"a": 1, "b": None}),
    ("SELECT %(a)s", {"a": 1, "unused": ["x"]}),
    ("SELECT %(a)s", {"a": ["x"]}),
    ("SELECT %(a)s, %(b)s", {"a": 1}),
    ("SELECT %(a)s, %s", {"a": 1}),
    ("SELECT %s", {"a": 1}),
    ("SELECT %(a)s", (1,)),
    ("SELECT %t", (1,)),
    ("SELECT %b", (1,)),
    ("SELECT %d", (1,)),
    ("SELECT '100%%' AS p WHERE 1 = %s", (1,)),
    ("SELECT '100%' AS p", ()),
    ("SELECT %s", (1, 2)),
    ("select 1 where 1 = %s", (1,)),
    ("Select 1 WHERE 1 = %s", (1,)),
    ("", ()),
    (";", ()),
]


@pytest.mark.parametrize(("query", "params"), QUERIES)
def test_the_fake_decides_prepared_or_literal_as_the_client_does(
    query: str, params: Params
) -> None:
    assert runs_prepared(query, params) == client_prepares(query, params)


def test_the_table_covers_both_outcomes() -> None:
    outcomes = [client_prepares(q, p) for q, p in QUERIES]
    assert outcomes.count(True) >= 10
    assert outcomes.count(False) >= 10


@pytest.mark.parametrize(
    ("params", "prepared", "expected"),
    [
        ((5, None, "x", True, 1.5), True, (64, CONTEXT, CONTEXT, CONTEXT, CONTEXT)),
        ((2**31 - 1, -(2**31), 2**31, -(2**31) - 1), False, (32, 32, 64, 64)),
        ((2**40, None, ["a"]), False, (64, CONTEXT, CONTEXT)),
        ((Level.HIGH,), False, (32,)),
        ({"a": 5, "b": None}, True, (("a", 64), ("b", CONTEXT))),
        ({"a": 5}, False, (("a", 32),)),
        ((), True, ()),
    ],
)
def test_int_parameters_have_the_width_of_their_path(
    params: Params, prepared: bool, expected: tuple[Any, ...]
) -> None:
    assert param_widths(params, admin=False, prepared=prepared) == expected
    assert param_widths(params, admin=True, prepared=prepared) == ()
