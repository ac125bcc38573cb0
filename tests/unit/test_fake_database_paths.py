"""The fake types int parameters as PostgresClient declares them.

``crm_infra.fakes.sql.paths`` decides, per parameter, the integer width PostgreSQL will give
it; the fakes may not import the adapters, so these tests ask the client itself (its
``check_call`` and ``prepare_call``, which need no connection) what type it declares for each
value, and check the fake agrees.
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast
from uuid import uuid4

import pytest
from psycopg.adapt import Transformer

from crm_infra.adapters.postgres.statements import ConnState, check_call, prepare_call
from crm_infra.fakes.sql.paths import CONTEXT, RUN_TIME, user_widths
from crm_infra.ports import Params

_INT8, _NUMERIC, _UNKNOWN = 20, 1700, 0
_BY_VALUE = {21, 23}  # int2, int4: psycopg's pick by the value


class Level(enum.IntEnum):
    HIGH = 3


class Count(int):
    pass


def declared(query: str, params: Params) -> tuple[int, ...]:
    """Return the type oids PostgresClient declares for ``params``."""
    state = cast(ConnState, SimpleNamespace(pipeline=SimpleNamespace(transformer=Transformer())))
    return prepare_call(state, check_call(query, params)).oids


def expected_width(value: Any, oid: int) -> int:
    """Return the width the fake must give a value the client declares as ``oid``."""
    if type(value) is int:
        assert oid in {_INT8, _NUMERIC}
        return 64  # beyond int8 the fake refuses the value when it binds it
    if oid in _BY_VALUE or (oid in {_INT8, _NUMERIC} and isinstance(value, int)):
        return RUN_TIME
    return CONTEXT


VALUES: list[Any] = [
    5,
    -(2**31),
    2**40,
    2**70,
    None,
    "Ann",
    True,
    1.5,
    Decimal("1.5"),
    uuid4(),
    dt.date(2024, 1, 1),
    dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    Level.HIGH,
    Count(7),
    Count(2**40),
    ["a"],
    [1, 2],
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_each_parameter_has_the_width_the_client_declares(value: Any) -> None:
    query = "SELECT 1 AS one WHERE %s IS NOT NULL"
    (oid,) = declared(query, (value,))
    assert user_widths((value,)) == (expected_width(value, oid),)


def test_a_list_beside_an_int_changes_nothing_of_the_int() -> None:
    query = "SELECT %s AS a FROM contacts WHERE name = ANY(%s)"
    assert declared(query, (5, ["a"]))[0] == _INT8
    assert user_widths((5, ["a"])) == (64, CONTEXT)
    assert user_widths([5, None]) == (64, CONTEXT)


def test_named_parameters_are_keyed_by_name() -> None:
    params = {"a": 5, "b": None, "c": Level.HIGH}
    oids = declared("SELECT %(a)s, %(b)s, %(c)s", params)
    assert oids[0] == _INT8
    assert user_widths(params) == (("a", 64), ("b", CONTEXT), ("c", RUN_TIME))


def test_no_params_and_params_of_the_wrong_kind_have_no_widths() -> None:
    assert user_widths(()) == ()
    assert user_widths("a") == ()
