"""Numeric arithmetic as PostgreSQL does it: exact decimals, and its scale for quotients.

SQLite holds a numeric as a double (exact up to 15 significant digits); these functions work on
the exact decimal each double stands for, and give quotients (``/``, ``avg()``) the digits
PostgreSQL's ``numeric_div`` gives them, remembered for the decoder (see ``remember_exact``).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from crm_infra.errors import DatabaseError
from crm_infra.fakes.sql.errors import refuse
from crm_infra.fakes.sql.types import remember_exact

__all__ = [
    "NumericAvg",
    "NumericSum",
    "int_checked",
    "int_div",
    "int_mod",
    "numeric",
    "numeric_div",
    "pg_numeric_div",
    "round_half_away",
]


def numeric(op: Callable[[Decimal, Decimal], Decimal]) -> Callable[[Any, Any], Any]:
    """Return ``op`` applied to the exact decimals of two stored values (NULL in, NULL out)."""

    def apply(left: Any, right: Any) -> Any:
        if left is None or right is None:
            return None
        # Exact in decimal, stored as the double nearest to the exact result.
        return float(op(_exact(left), _exact(right)))

    return apply


def numeric_div(left: Any, right: Any) -> Any:
    """Divide two numerics as PostgreSQL does; a division by zero is an error."""
    if left is None or right is None:
        return None
    divisor = _exact(right)
    if divisor == 0:
        raise DatabaseError("division by zero")
    dividend = _exact(left)
    scale = -min(0, int(dividend.as_tuple().exponent))
    return remember_exact(pg_numeric_div(dividend, scale, divisor))


_INT_NAMES = {16: "smallint", 32: "integer", 64: "bigint"}


def _fitting_bits(value: int) -> int:
    """Return the bits of the integer type psycopg sends a Python int as (int2, int4, int8)."""
    for bits in (16, 32):
        if -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            return bits
    return 64


def int_checked(op: Callable[[int, int], int]) -> Callable[[Any, Any, int, int], Any]:
    """Return ``op`` on two integers, range-checked in the type PostgreSQL gives the result.

    The SQL passes each operand's bits (16, 32, 64), or 0 for a parameter, whose type
    psycopg picks from its value. The result has the wider operand's type.
    """

    def apply(left: Any, right: Any, left_bits: int, right_bits: int) -> Any:
        if left is None or right is None:
            return None
        bits = max(left_bits or _fitting_bits(left), right_bits or _fitting_bits(right))
        result = op(left, right)
        if not -(2 ** (bits - 1)) <= result < 2 ** (bits - 1):
            raise DatabaseError(f"{_INT_NAMES[bits]} out of range")
        return result

    return apply


def int_div(left: Any, right: Any) -> Any:
    """Divide two integers, truncating toward zero; a division by zero is an error."""
    if left is None or right is None:
        return None
    if right == 0:
        raise DatabaseError("division by zero")
    quotient = abs(left) // abs(right)  # PostgreSQL truncates toward zero
    return quotient if (left >= 0) == (right > 0) else -quotient


def int_mod(left: Any, right: Any) -> Any:
    """Return the remainder with the dividend's sign; a division by zero is an error."""
    if left is None or right is None:
        return None
    if right == 0:
        raise DatabaseError("division by zero")
    return left - right * int_div(left, right)


def round_half_away(value: Any, places: int) -> Any:
    """Round a numeric to ``places`` digits, half away from zero, as PostgreSQL does."""
    if value is None:
        return None
    # numeric rounds half away from zero, to exactly `places` digits (kept for the decoder).
    quantum = Decimal(1).scaleb(-places)
    return remember_exact(_exact(value).quantize(quantum, rounding=ROUND_HALF_UP))


def _exact(value: Any) -> Decimal:
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


_INT64 = 2**63


class NumericSum:
    """sum() of numeric or bigint values, exactly, as PostgreSQL adds numerics.

    A sum of integers (bigint values) stays an integer in SQLite, exact to 64 bits, so that the
    decoder gives the ``Decimal`` PostgreSQL gives (``Decimal('3')``); other sums are doubles.
    A total that neither holds exactly is refused: the fake would answer other digits.
    """

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is None:
            return
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        self.total = amount if self.total is None else self.total + amount

    def finalize(self) -> int | float | None:
        total = self.total
        if total is None:
            return None
        if int(total.as_tuple().exponent) >= 0 and -_INT64 <= total < _INT64:
            return int(total)
        # Comparisons, ordering and the decoder (through repr) all see the exact value.
        as_double = float(total)
        if Decimal(repr(as_double)) != total:
            raise refuse(
                f"a sum() of {total} (beyond what it holds exactly: 64-bit integers, and "
                "numerics a double holds exactly)"
            )
        return as_double


class NumericAvg:
    """avg() of integer or numeric values: their exact sum over the count, at PostgreSQL's scale."""

    def __init__(self) -> None:
        self.total = Decimal(0)
        self.scale = 0
        self.count = 0

    def step(self, value: Any) -> None:
        if value is None:
            return
        amount = _exact(value)
        self.total += amount
        self.scale = max(self.scale, -min(0, int(amount.as_tuple().exponent)))
        self.count += 1

    def finalize(self) -> float | None:
        if self.count == 0:
            return None
        return remember_exact(pg_numeric_div(self.total, self.scale, Decimal(self.count)))


_NBASE_DIGITS = 4  # PostgreSQL stores numerics in base 10000
_MIN_SIG_DIGITS = 16


def _nbase_weight(value: Decimal) -> tuple[int, int]:
    """Return the weight and first digit of ``value`` in base 10000 (0, 0 for zero)."""
    if value == 0:
        return 0, 0
    magnitude = abs(value)
    weight = magnitude.adjusted() // _NBASE_DIGITS
    first = int(magnitude.scaleb(-weight * _NBASE_DIGITS))
    return weight, first


def pg_numeric_div(dividend: Decimal, dividend_scale: int, divisor: Decimal) -> Decimal:
    """Divide as PostgreSQL's numeric_div does (select_div_scale, then round half away)."""
    weight1, first1 = _nbase_weight(dividend)
    weight2, first2 = _nbase_weight(divisor)
    quotient_weight = weight1 - weight2
    if first1 <= first2:
        quotient_weight -= 1
    scale = _MIN_SIG_DIGITS - quotient_weight * _NBASE_DIGITS
    scale = min(max(scale, dividend_scale, 0), 1000)
    with localcontext() as ctx:
        ctx.prec = 2000
        return (dividend / divisor).quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)
