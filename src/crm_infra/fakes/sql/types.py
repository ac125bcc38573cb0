"""PostgreSQL column types as the in-memory fake stores them in SQLite, and conversions both ways.

Values are stored so that SQLite's own comparisons and ordering agree with PostgreSQL's:

============  =====================================  ==========================================
PostgreSQL    stored in SQLite as                    returned as (like psycopg)
============  =====================================  ==========================================
uuid          canonical lowercase text               :class:`uuid.UUID`
text/varchar  text                                   :class:`str`
integer...    integer                                :class:`int`
boolean       0 / 1                                  :class:`bool`
numeric(p,s)  real (at most 15 significant digits)   :class:`decimal.Decimal`
float         real                                   :class:`float`
timestamptz   fixed-width UTC text (orders as time)  aware :class:`datetime.datetime` in UTC
date          ``YYYY-MM-DD`` text                    :class:`datetime.date`
============  =====================================  ==========================================
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from uuid import UUID

import attrs
from sqlglot import exp

from crm_infra._sql_params import ClientSideError
from crm_infra.errors import DatabaseError, UnsupportedQueryError

__all__ = [
    "PgType",
    "decoder_for",
    "encode_param",
    "exact_results",
    "format_timestamptz",
    "pg_type_from_datatype",
    "remember_exact",
    "uuid_text",
]

_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f+00:00"
_MAX_EXACT_DIGITS = 15  # what a double holds exactly; beyond it the fake would round silently
_INT64 = 2**63
_UUID_CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@attrs.frozen
class PgType:
    """A PostgreSQL type as far as the fake needs it: a kind, plus numeric/varchar modifiers."""

    kind: str  # uuid, text, int, bool, numeric, float, timestamptz, date, null, param, unknown
    precision: int | None = None  # numeric digits; for int, the bits (16, 32, 64)
    scale: int | None = None
    length: int | None = None
    role: str = ""  # for a parameter: "assign", "compare", "cast", "concat", "arith", "untyped"

    @property
    def sqlite_decl(self) -> str:
        """Return the SQLite column declaration whose affinity stores this type faithfully."""
        return {
            "int": "INTEGER",
            "bool": "INTEGER",
            "numeric": "REAL",
            "float": "REAL",
        }.get(self.kind, "TEXT")


UNKNOWN = PgType("unknown")
_SCALARS = (bool, int, float, Decimal, str, UUID, datetime, date)

_INT_TYPES = {
    exp.DataType.Type.INT,
    exp.DataType.Type.BIGINT,
    exp.DataType.Type.SMALLINT,
    exp.DataType.Type.TINYINT,
}
_TEXT_TYPES = {
    exp.DataType.Type.TEXT,
    exp.DataType.Type.VARCHAR,
    exp.DataType.Type.CHAR,
    exp.DataType.Type.NVARCHAR,
    exp.DataType.Type.NCHAR,
}


def pg_type_from_datatype(dt: exp.DataType) -> PgType | None:  # noqa: PLR0911 (one per type)
    """Return the fake's view of a parsed PostgreSQL type, or None when the fake cannot hold it."""
    t = dt.this
    params = [p.this for p in dt.expressions if isinstance(p, exp.DataTypeParam)]
    if t == exp.DataType.Type.UUID:
        return PgType("uuid")
    if t in _TEXT_TYPES:
        if t == exp.DataType.Type.CHAR:
            return None  # char(n) pads with blanks; comparisons would differ
        length = int(params[0].name) if params else None
        return PgType("text", length=length)
    if t in _INT_TYPES:
        bits = {exp.DataType.Type.SMALLINT: 16, exp.DataType.Type.INT: 32}.get(t, 64)
        return PgType("int", precision=bits)
    if t == exp.DataType.Type.BOOLEAN:
        return PgType("bool")
    if t == exp.DataType.Type.DECIMAL:
        precision = int(params[0].name) if params else None
        scale = int(params[1].name) if len(params) > 1 else (0 if params else None)
        if precision is not None and precision > _MAX_EXACT_DIGITS:
            return None
        return PgType("numeric", precision=precision, scale=scale)
    if t in {exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT}:
        return PgType("float")
    if t == exp.DataType.Type.TIMESTAMPTZ:
        return PgType("timestamptz")
    if t == exp.DataType.Type.DATE:
        return PgType("date")
    return None


def format_timestamptz(value: datetime) -> str:
    """Return ``value`` as the fixed-width UTC text the fake stores (orders like the instant)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise UnsupportedQueryError(
            "a naive datetime parameter: PostgreSQL would read it in the server's time zone; "
            "pass an aware datetime (e.g. datetime.now(UTC)), or test that query against "
            "PostgreSQL"
        )
    utc = value.astimezone(UTC)
    if utc.year < 1000:
        raise UnsupportedQueryError(
            "a timestamp before year 1000: test that query against PostgreSQL"
        )
    return utc.strftime(_TIMESTAMP_FORMAT)


def _encode_scalar(value: Any) -> Any:  # noqa: PLR0911 (one return per Python type)
    if value is None:
        return None
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise UnsupportedQueryError(
                "an integer parameter beyond 64 bits: test that query against PostgreSQL"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsupportedQueryError(
                "a NaN or infinite float parameter: test that query against PostgreSQL"
            )
        return value
    if isinstance(value, Decimal):
        return _decimal_to_real(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise DatabaseError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return value
    if isinstance(value, UUID):
        return uuid_text(value)
    if isinstance(value, datetime):
        return format_timestamptz(value)
    if isinstance(value, date):
        return value.isoformat()
    raise _unsupported_param(
        value,
        f"a parameter of type {type(value).__name__}: the fake supports None, bool, int, float, "
        "Decimal, str, UUID, aware datetime, date and lists of those (for = ANY(%s)); test that "
        "query against PostgreSQL",
    )


def _unsupported_param(value: Any, message: str) -> DatabaseError:
    """Return the error for a parameter the fake does not bind.

    A type psycopg cannot adapt either is psycopg's own refusal (which aborts a
    ``PostgresClient`` transaction); any other is SQL that PostgreSQL would run.
    """
    # Asked of psycopg only here, for a rare value: the in-memory default otherwise runs
    # without importing the driver.
    import psycopg  # noqa: PLC0415
    from psycopg.adapt import PyFormat  # noqa: PLC0415

    try:
        psycopg.adapters.get_dumper(type(value), PyFormat.TEXT)
    except psycopg.ProgrammingError:
        return ClientSideError(f"cannot adapt type {type(value).__name__!r} (a query parameter)")
    return UnsupportedQueryError(message)


def _decimal_to_real(value: Decimal) -> float:
    if not value.is_finite():
        raise UnsupportedQueryError(
            "a NaN or infinite Decimal parameter: test that query against PostgreSQL"
        )
    as_float = float(value)
    if Decimal(repr(as_float)) != value:
        raise UnsupportedQueryError(
            f"a Decimal parameter with more than {_MAX_EXACT_DIGITS} significant digits: the "
            "fake cannot hold it exactly; test that query against PostgreSQL"
        )
    return as_float


def encode_param(value: Any, target: PgType | None = None, *, array: bool = False) -> Any:
    """Return ``value`` as SQLite stores it, checked against the column type it goes into.

    Args:
        value: the Python parameter, as a caller would pass it to psycopg.
        target: the type of the column the parameter is compared with or written to, if known.
        array: the placeholder is the array of ``= ANY(%s)``; ``value`` must be a list.

    Raises:
        DatabaseError: PostgreSQL would refuse the value (e.g. a malformed uuid), or psycopg
            its type.
        UnsupportedQueryError: the fake cannot represent the value faithfully.
    """
    if array:
        if not isinstance(value, list | tuple):
            raise DatabaseError(
                f"= ANY(%s) needs a list parameter; got {type(value).__name__}"
            )
        return json.dumps([encode_param(v, target) for v in value])
    if isinstance(value, list | tuple | dict | set):
        raise _unsupported_param(
            value,
            f"a {type(value).__name__} parameter outside `= ANY(%s)`: the fake supports array "
            "parameters only there; test that query against PostgreSQL",
        )
    untyped = value is None or isinstance(value, str)
    if target is not None and target.role == "untyped" and untyped:
        # psycopg sends str and None untyped; here PostgreSQL has nothing to infer a type from.
        raise DatabaseError(
            "could not determine data type of a parameter (add a cast, e.g. %s::text)"
        )
    if value is None or target is None or not isinstance(value, _SCALARS):
        return _encode_scalar(value)  # refuses what the fake cannot hold
    return _encode_for(value, target)


def _encode_for(value: Any, target: PgType) -> Any:  # noqa: PLR0911, PLR0912 (one per kind)
    """Encode ``value`` for a column of ``target``'s type, as PostgreSQL would take it.

    psycopg sends str (and None) untyped, so PostgreSQL parses them as the column's type; any
    other Python type is sent typed, and PostgreSQL refuses a comparison between unrelated
    types. An assignment to a text column converts any value to its text.
    """
    kind, role = target.kind, target.role
    if kind == "uuid":
        if isinstance(value, UUID):
            return uuid_text(value)
        if isinstance(value, str):
            return canonical_uuid(value)
        raise _mismatch(value, "uuid")
    if isinstance(value, bool):
        if kind == "bool":
            return 1 if value else 0
        if kind == "text" and role in {"assign", "cast", "concat"}:
            return _text_for(target, "true" if value else "false")
        raise _mismatch(value, kind)
    if kind == "text":
        if isinstance(value, str):
            return _text_for(target, value)
        if role not in {"assign", "cast", "concat"}:
            raise _mismatch(value, "text")
        if isinstance(value, int):
            return _text_for(target, str(value))
        if isinstance(value, Decimal) and value.is_finite():
            return _text_for(target, format(value, "f"))
        if isinstance(value, UUID):
            return _text_for(target, uuid_text(value))
        raise UnsupportedQueryError(
            f"a {type(value).__name__} parameter converted to text: PostgreSQL's text form of "
            "it may differ from Python's; test that query against PostgreSQL"
        )
    if kind == "bool":
        if isinstance(value, str):
            return _parse_bool(value)
        raise _mismatch(value, "boolean")
    if kind in {"int", "numeric", "float"}:
        return _encode_number(value, target)
    if kind == "timestamptz":
        if isinstance(value, datetime):
            return format_timestamptz(value)
        if isinstance(value, str):
            parsed = _aware_timestamp(value)
            if parsed is not None:
                return format_timestamptz(parsed)
        if isinstance(value, str | date):
            raise UnsupportedQueryError(
                f"a {type(value).__name__} value for a timestamptz column without a UTC offset "
                "(or not in ISO 8601): PostgreSQL reads it in the session time zone; pass an "
                "aware datetime, or test that query against PostgreSQL"
            )
        raise _mismatch(value, "timestamp with time zone")
    if kind == "date":
        if isinstance(value, date) and not isinstance(value, datetime):
            return value.isoformat()
        raise UnsupportedQueryError(
            f"a {type(value).__name__} parameter for a date column: test that query against "
            "PostgreSQL"
        )
    return _encode_scalar(value)


def _encode_number(value: Any, target: PgType) -> Any:
    kind, role = target.kind, target.role
    if isinstance(value, str):
        try:
            parsed: int | Decimal = int(value.strip()) if kind == "int" else Decimal(value.strip())
        except (ValueError, ArithmeticError):
            name = {"int": "integer", "numeric": "numeric"}.get(kind, "double precision")
            raise DatabaseError(f"invalid input syntax for type {name}") from None
        value = parsed
    if not isinstance(value, int | float | Decimal):
        raise _mismatch(value, kind)
    if kind == "int":
        if role == "arith" and not isinstance(value, int):
            raise UnsupportedQueryError(
                f"a {type(value).__name__} parameter in integer arithmetic (PostgreSQL makes "
                "the result numeric): add a cast such as %s::numeric, or test that query "
                "against PostgreSQL"
            )
        if isinstance(value, int):
            bits = target.precision or 64
            if role == "assign" and not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
                raise DatabaseError(f"integer out of range (a {bits}-bit integer column)")
            return _encode_scalar(value)
        if role == "assign":
            raise UnsupportedQueryError(
                "a non-integer parameter for an integer column: PostgreSQL rounds it; test "
                "that query against PostgreSQL"
            )
        return _encode_scalar(value)
    if kind == "numeric" and role == "assign":
        return _decimal_to_real(round_numeric(_to_decimal(value), target))
    return _encode_scalar(value)


def _aware_timestamp(text: str) -> datetime | None:
    """Return ``text`` as a datetime when it is ISO 8601 with an offset; None otherwise."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _mismatch(value: Any, expected: str) -> DatabaseError:
    return DatabaseError(
        f"a {type(value).__name__} parameter where PostgreSQL expects {expected} "
        "(operator or column type does not match)"
    )


def _text_for(target: PgType, text: str) -> str:
    if "\x00" in text:
        raise DatabaseError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    check_length(text, target)
    return text


def _parse_bool(text: str) -> int:
    word = text.strip().lower()
    if word in {"t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"}:
        return 1
    if word in {"f", "fa", "fal", "fals", "false", "n", "no", "off", "0"}:
        return 0
    raise DatabaseError("invalid input syntax for type boolean")


def canonical_uuid(text: str) -> str:
    """Return ``text`` as canonical uuid text, or raise DatabaseError as PostgreSQL does."""
    if _UUID_CANONICAL.match(text):
        return text
    try:
        return str(UUID(text))
    except ValueError:
        raise DatabaseError("invalid input syntax for type uuid") from None


def check_length(text: str, target: PgType) -> None:
    """Raise DatabaseError when ``text`` is longer than a varchar(n) column allows."""
    if target.length is not None and len(text) > target.length:
        raise DatabaseError(f"value too long for type character varying({target.length})")


def round_numeric(value: Decimal, target: PgType) -> Decimal:
    """Round ``value`` to the column's scale as PostgreSQL does; refuse what overflows it."""
    if target.scale is not None:
        try:
            value = value.quantize(Decimal(1).scaleb(-target.scale), rounding=ROUND_HALF_UP)
        except InvalidOperation:
            raise DatabaseError("numeric field overflow") from None
    if target.precision is not None:
        integer_digits = target.precision - (target.scale or 0)
        if abs(value) >= Decimal(10) ** integer_digits:
            raise DatabaseError(
                f"numeric field overflow: a field with precision {target.precision}, scale "
                f"{target.scale or 0} must round to an absolute value less than "
                f"10^{integer_digits}"
            )
    return value


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def decoder_for(pg_type: PgType) -> Callable[[Any], Any]:  # noqa: PLR0911 (one per kind)
    """Return the function turning a stored SQLite value into psycopg's Python value."""
    kind = pg_type.kind
    if kind == "uuid":
        return _decode_uuid
    if kind == "bool":
        return _decode_bool
    if kind == "timestamptz":
        return _decode_timestamptz
    if kind == "date":
        return _decode_date
    if kind == "numeric":
        if pg_type.scale is not None:
            quantum = Decimal(1).scaleb(-pg_type.scale)

            def decode_scaled(value: Any) -> Any:
                if value is None:
                    return None
                return _to_decimal(value).quantize(quantum, rounding=ROUND_HALF_UP)

            return decode_scaled
        return _decode_numeric
    if kind == "float":
        return _decode_float
    return _identity


def _identity(value: Any) -> Any:
    return value


@lru_cache(maxsize=8192)
def uuid_text(value: UUID) -> str:
    """Return the canonical text of ``value`` (cached: ``str(UUID)`` is slow and ids repeat)."""
    return str(value)


@lru_cache(maxsize=8192)
def _parse_uuid(text: str) -> UUID:
    return UUID(text)


def _decode_uuid(value: Any) -> UUID | None:
    return None if value is None else _parse_uuid(value)


def _decode_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _decode_timestamptz(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _decode_date(value: Any) -> date | None:
    return None if value is None else date.fromisoformat(value)


class _ExactResults(threading.local):
    """Quotients computed in the current statement, by the double SQLite holds for each.

    A quotient such as avg() has more digits than a double holds; SQLite gets the double (so
    comparisons and ordering work) and the decoder gets the exact value back from here.
    """

    def __init__(self) -> None:
        self.by_double: dict[float, Decimal] = {}


exact_results = _ExactResults()


def remember_exact(value: Decimal) -> float:
    """Return ``value`` as a double, remembering the exact value for the decoder."""
    as_double = float(value)
    exact_results.by_double[as_double] = value
    return as_double


def _decode_numeric(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        exact = exact_results.by_double.get(value)
        if exact is not None:
            return exact
    return _to_decimal(value)


def _decode_float(value: Any) -> float | None:
    return None if value is None else float(value)
