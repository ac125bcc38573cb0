"""The fake's SQL: placeholders, the supported subset, and the constructs it refuses."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from crm_infra import DatabaseError, IntegrityError, UnsafeQueryError, UnsupportedQueryError
from crm_infra._sql_params import split_placeholders
from crm_infra.fakes import InMemoryUserScopedDB
from crm_infra.fakes.sql.paths import CONTEXT
from crm_infra.fakes.sql.schema import split_statements

ALICE = UUID("00000000-0000-4000-8000-00000000000a")


@pytest.fixture
def db() -> Iterator[InMemoryUserScopedDB]:
    fake = InMemoryUserScopedDB()
    fake.execute_admin("INSERT INTO users (id, email) VALUES (%s, 'a@example.com')", (ALICE,))
    for name, email in (("Ann", "ann@example.com"), ("bob", None), ("Cy", "cy@example.com")):
        fake.execute(
            "INSERT INTO contacts (name, email) VALUES (%s, %s)", (name, email), user_id=ALICE
        )
    yield fake
    fake.close()


def q(db: InMemoryUserScopedDB, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    return db.execute(sql, params, user_id=ALICE)


def names(rows: list[dict[str, Any]]) -> list[Any]:
    return [r["name"] for r in rows]


# --- placeholders ----------------------------------------------------------------------------


def test_placeholders_are_split_as_psycopg_does() -> None:
    split = split_placeholders("SELECT %s, '%%', %s", spaced=True)
    assert split.text == "SELECT $1 , '%', $2 "
    named = split_placeholders("SELECT %(a)s, %(b)s, %(a)s", spaced=True)
    assert named.text == "SELECT $1 , $2 , $1 "
    assert named.keys == ("a", "b")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT %s, %(a)s", "mixed"),
        ("SELECT '100%'", "placeholders"),
        ("SELECT 1 %", "incomplete"),
    ],
)
def test_malformed_placeholders_are_refused(sql: str, message: str) -> None:
    with pytest.raises(DatabaseError, match=message):
        split_placeholders(sql)


def test_params_must_fit_the_placeholders(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(DatabaseError, match="1 placeholders but 2"):
        q(db, "SELECT name FROM contacts WHERE name = %s", ("a", "b"))
    with pytest.raises(DatabaseError, match="missing: n"):
        q(db, "SELECT name FROM contacts WHERE name = %(n)s", {"m": 1})
    with pytest.raises(DatabaseError, match="sequence or a mapping"):
        q(db, "SELECT name FROM contacts WHERE name = %s", "Ann")


def test_named_params_and_percent_escapes_work(db: InMemoryUserScopedDB) -> None:
    rows = q(db, "SELECT name, '100%%' AS pct FROM contacts WHERE name = %(n)s", {"n": "Ann"})
    assert rows == [{"name": "Ann", "pct": "100%"}]


def test_without_params_the_text_is_sent_as_written(db: InMemoryUserScopedDB) -> None:
    assert q(db, "SELECT '100%' AS a, '5%%' AS b") == [{"a": "100%", "b": "5%%"}]


# --- the supported subset --------------------------------------------------------------------


def test_order_by_puts_nulls_where_postgresql_does(db: InMemoryUserScopedDB) -> None:
    assert [r["email"] for r in q(db, "SELECT email FROM contacts ORDER BY email")][-1] is None
    assert next(r["email"] for r in q(db, "SELECT email FROM contacts ORDER BY email DESC")) is None


def test_text_orders_by_code_point_like_the_c_collation(db: InMemoryUserScopedDB) -> None:
    assert names(q(db, "SELECT name FROM contacts ORDER BY name")) == ["Ann", "Cy", "bob"]


def test_limit_and_offset(db: InMemoryUserScopedDB) -> None:
    rows = q(db, "SELECT name FROM contacts ORDER BY name LIMIT %s OFFSET %s", (1, 1))
    assert names(rows) == ["Cy"]


def test_like_is_case_sensitive_and_ilike_is_not(db: InMemoryUserScopedDB) -> None:
    assert names(q(db, "SELECT name FROM contacts WHERE name LIKE %s", ("b%",))) == ["bob"]
    assert names(q(db, "SELECT name FROM contacts WHERE name LIKE %s", ("B%",))) == []
    assert names(q(db, "SELECT name FROM contacts WHERE name ILIKE %s", ("B%",))) == ["bob"]
    assert q(db, "SELECT count(*) FROM contacts WHERE name NOT ILIKE 'a%%'") == [{"count": 2}]


def test_like_escapes_with_a_backslash_by_default(db: InMemoryUserScopedDB) -> None:
    q(db, "INSERT INTO contacts (name) VALUES ('a_b'), ('axb')")
    assert names(q(db, "SELECT name FROM contacts WHERE name LIKE %s", ("a\\_b",))) == ["a_b"]


def test_any_with_a_list_and_all(db: InMemoryUserScopedDB) -> None:
    rows = q(db, "SELECT name FROM contacts WHERE name = ANY(%s) ORDER BY name", (["Ann", "Cy"],))
    assert names(rows) == ["Ann", "Cy"]
    assert q(db, "SELECT name FROM contacts WHERE name = ANY(%s)", ([],)) == []
    rows = q(db, "SELECT name FROM contacts WHERE name <> ALL(%s) ORDER BY name", (["Ann"],))
    assert names(rows) == ["Cy", "bob"]
    ids = [r["id"] for r in q(db, "SELECT id FROM contacts")]
    assert len(q(db, "SELECT id FROM contacts WHERE id = ANY(%s)", (ids[:2],))) == 2


def test_count_group_by_and_having(db: InMemoryUserScopedDB) -> None:
    rows = q(
        db,
        "SELECT email IS NULL AS missing, count(*) AS n FROM contacts "
        "GROUP BY email IS NULL HAVING count(*) >= 1 ORDER BY missing",
    )
    assert rows == [{"missing": False, "n": 2}, {"missing": True, "n": 1}]


def test_column_names_follow_postgresql(db: InMemoryUserScopedDB) -> None:
    row = q(
        db,
        "SELECT count(*), lower(name), name::text, 1 + 1, now() IS NOT NULL AS ok, "
        "upper(max(name)) FROM contacts GROUP BY name ORDER BY name LIMIT 1",
    )[0]
    assert list(row) == ["count", "lower", "name", "?column?", "ok", "upper"]


def test_select_star_over_a_join_expands_in_order(db: InMemoryUserScopedDB) -> None:
    contact = q(db, "SELECT id FROM contacts WHERE name = 'Ann'")[0]["id"]
    q(db, "INSERT INTO tickets (contact_id, subject) VALUES (%s, 'hi')", (contact,))
    row = q(db, "SELECT t.subject, c.* FROM tickets t JOIN contacts c ON c.id = t.contact_id")[0]
    assert list(row)[:3] == ["subject", "id", "user_id"]
    assert row["name"] == "Ann"


def test_with_union_and_subqueries(db: InMemoryUserScopedDB) -> None:
    rows = q(db, "WITH x AS (SELECT name FROM contacts) SELECT count(*) AS n FROM x")
    assert rows == [{"n": 3}]
    rows = q(db, "SELECT name FROM contacts UNION SELECT 'Zed' ORDER BY 1")
    assert names(rows) == ["Ann", "Cy", "Zed", "bob"]
    assert q(db, "SELECT n FROM (SELECT count(*) AS n FROM contacts) s") == [{"n": 3}]


def test_avg_and_numeric_division_keep_postgresqls_digits(db: InMemoryUserScopedDB) -> None:
    row = q(db, "SELECT avg(length(name)) AS a, 1 / 3.0 AS b, 10.50 / 4 AS c FROM contacts")[0]
    # PostgreSQL's numeric_div scale: at least 16 significant digits.
    assert str(row["a"]) == "2.6666666666666667"
    assert str(row["b"]) == "0.33333333333333333333"
    assert str(row["c"]) == "2.6250000000000000"
    assert q(db, "SELECT count(*) FROM contacts HAVING avg(length(name)) > 2.6") == [{"count": 3}]


def test_integer_division_by_zero_fails_like_postgresql(db: InMemoryUserScopedDB) -> None:
    assert q(db, "SELECT -7 / 2 AS a, -7 % 2 AS b") == [{"a": -3, "b": -1}]
    with pytest.raises(DatabaseError, match="division by zero"):
        q(db, "SELECT 1 / 0")


def test_select_of_a_parameter_returns_it_unchanged(db: InMemoryUserScopedDB) -> None:
    row = q(db, "SELECT %s AS u, %s AS d", (ALICE, Decimal("1.20")))[0]
    assert row == {"u": ALICE, "d": Decimal("1.20")}


def test_casts_that_postgresql_checks_are_checked(db: InMemoryUserScopedDB) -> None:
    assert q(db, "SELECT %s::uuid AS u", (str(ALICE).upper(),)) == [{"u": ALICE}]
    with pytest.raises(DatabaseError, match="uuid"):
        q(db, "SELECT 'x'::uuid AS u")
    assert q(db, "SELECT '7'::int + 1 AS n") == [{"n": 8}]


def test_upper_and_lower_map_each_character_like_postgresql(db: InMemoryUserScopedDB) -> None:
    assert q(db, "SELECT upper('straße') AS u, lower('ÀB') AS l") == [{"u": "STRAßE", "l": "àb"}]


def test_translations_are_cached_by_sql_text(db: InMemoryUserScopedDB) -> None:
    sql = "SELECT name FROM contacts WHERE name = %s"
    q(db, sql, ("Ann",))
    cached = db._cache[(False, True, sql)]
    assert not cached.depends_on_widths  # no parameter's integer width goes into a type
    q(db, sql, ("Cy",))
    assert db._cache[(False, True, sql)] is cached


class Level(enum.IntEnum):
    HIGH = 3


def test_translations_are_cached_by_the_widths_of_int_parameters(
    db: InMemoryUserScopedDB,
) -> None:
    sql = "SELECT sum(coalesce(%s, priority)) AS s FROM tickets"
    listed = sql + " WHERE subject = ANY(%s)"
    q(db, sql, (3,))  # an int: int8
    q(db, sql, (None,))  # untyped
    with pytest.raises(UnsupportedQueryError, match="picks by its value"):
        q(db, sql, (Level.HIGH,))  # int2, int4 or int8 by its value: bigint or numeric sum
    q(db, listed, (3, ["a"]))  # a list beside it changes nothing: int8
    q(db, listed, (2**40, ["a"]))  # the same widths
    assert db._cache[(False, True, sql)].depends_on_widths
    widths = {key[3] for key in db._cache if len(key) == 4 and key[2] in {sql, listed}}
    assert widths == {(64,), (CONTEXT,), (64, CONTEXT)}
    assert db._cache[(False, True, sql, (64,))] is not db._cache[(False, True, sql, (CONTEXT,))]
    # The admin path's widths are picked by the values, at run time (checked then).
    admin = "SELECT coalesce(%s, priority) * 2 AS p FROM tickets"
    db.execute_admin(admin, (3,))
    assert not db._cache[(True, True, admin)].depends_on_widths


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        ("SELECT id FROM contacts FOR UPDATE", "FOR UPDATE"),
        ("SELECT id FROM contacts FOR UPDATE SKIP LOCKED", "FOR UPDATE"),
        ("SELECT id FROM contacts FOR SHARE", "FOR UPDATE / FOR SHARE"),
        ("SELECT lag(name) OVER (ORDER BY name) FROM contacts", "window functions"),
        ("SELECT sum(length(name)) OVER () FROM contacts", "window functions"),
        ("SELECT count(*) OVER (ROWS 1 PRECEDING) FROM contacts", "window functions"),
        ("SELECT DISTINCT ON (email) email FROM contacts", "DISTINCT ON"),
        ("SELECT avg(length(name)) * 2 FROM contacts", "arithmetic on avg()"),
        ("SELECT avg(DISTINCT length(name)) FROM contacts", "avg(DISTINCT"),
        ("SELECT now() - interval '1 day'", "intervals"),
        ("SELECT foo(name) FROM contacts", "foo()"),
        ("SELECT concat(name, created_at) FROM contacts", "concat() with a timestamptz"),
        ("SELECT round(1.5, length(name)) FROM contacts", "round()"),
        ("SELECT greatest(name, 1) FROM contacts", "of mixed types"),
        ("SELECT current_setting('role')", "current_setting()"),
        ("SELECT name FROM contacts WHERE name ~ 'A'", "regular expression"),
        ("SELECT ARRAY[1, 2]", "array literals"),
        ("WITH RECURSIVE r AS (SELECT 1) SELECT * FROM r", "WITH RECURSIVE"),
        ("SELECT created_at::text FROM contacts", "casting a timestamptz value to text"),
        ("SELECT 1.5 % 2", "modulo of non-integers"),
        ("SELECT sum(1.5 / 2)", "arithmetic on a numeric quotient"),
        ("SELECT CASE WHEN true THEN NULL END", "cannot tell"),
        ("SELECT * FROM generate_series(1, 3)", "generate_series"),
    ],
)
def test_unsupported_sql_is_refused_by_name(
    db: InMemoryUserScopedDB, sql: str, construct: str
) -> None:
    with pytest.raises(UnsupportedQueryError) as caught:
        q(db, sql)
    message = str(caught.value)
    assert construct in message
    assert "test that query against PostgreSQL" in message


def test_a_sum_refused_while_it_runs_leaves_the_transaction_usable(
    db: InMemoryUserScopedDB,
) -> None:
    """A total beyond what the fake holds exactly is refused when known: at run time."""
    big = (
        "SELECT sum(x) AS s FROM (SELECT 9223372036854775807::bigint AS x "
        "UNION ALL SELECT %s::bigint) t"
    )
    assert q(db, big, (-1,)) == [{"s": Decimal(9223372036854775806)}]
    with db.transaction(ALICE) as tx:
        with pytest.raises(UnsupportedQueryError, match=r"sum\(\) of 18446744073709551614"):
            tx.execute(big, (9223372036854775807,))
        assert tx.execute("SELECT 1 AS one") == [{"one": 1}]


def test_the_admin_path_refuses_the_same_constructs(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(UnsupportedQueryError, match="FOR UPDATE"):
        db.execute_admin("SELECT id FROM contacts FOR UPDATE SKIP LOCKED")


@pytest.mark.parametrize(
    "value",
    [b"bytes", Decimal("1.2345678901234567890"), float("nan"), 2**70],
)
def test_parameters_the_fake_cannot_hold_are_refused(db: InMemoryUserScopedDB, value: Any) -> None:
    with pytest.raises(UnsupportedQueryError):
        q(db, "SELECT %s AS v", (value,))


@pytest.mark.parametrize("value", [{"a": 1}, {1}, object(), 1j])
def test_parameters_psycopg_cannot_adapt_fail_as_with_psycopg(
    db: InMemoryUserScopedDB, value: Any
) -> None:
    with pytest.raises(DatabaseError, match="cannot adapt type") as caught:
        q(db, "SELECT %s AS v", (value,))
    assert not isinstance(caught.value, UnsupportedQueryError)


def test_unknown_tables_and_columns_fail_as_on_postgresql(db: InMemoryUserScopedDB) -> None:
    with pytest.raises(DatabaseError, match='relation "nothere" does not exist'):
        q(db, "SELECT 1 FROM nothere")
    with pytest.raises(DatabaseError, match='column "nope" does not exist'):
        q(db, "SELECT nope FROM contacts")


def test_several_statements_run_as_one_transaction_on_the_admin_path_only(
    db: InMemoryUserScopedDB,
) -> None:
    insert = f"INSERT INTO contacts (user_id, name) VALUES ('{ALICE}', 'x')"
    rows = db.execute_admin(f"{insert}; SELECT count(*) AS n FROM contacts")
    assert rows == [{"n": 4}]
    with pytest.raises(IntegrityError):
        db.execute_admin(f"{insert}; INSERT INTO tickets (priority) VALUES (9)")
    assert db.execute_admin("SELECT count(*) AS n FROM contacts") == [{"n": 4}]
    # With params psycopg binds server-side, which takes one statement.
    with pytest.raises(DatabaseError, match="multiple commands"):
        db.execute_admin("SELECT %s AS a; SELECT %s AS b", (1, 2))
    with pytest.raises(UnsafeQueryError, match=r"2 statements.*transaction\(\)"):
        q(db, "SELECT 1 AS a; SELECT 2 AS b")


def test_schema_statements_split_on_top_level_semicolons() -> None:
    text = "SELECT ';' -- x;\n; /* ; */ DO $$ BEGIN; END $$; SELECT \"a;b\""
    assert split_statements(text) == ["SELECT ';'", "DO $$ BEGIN; END $$", 'SELECT "a;b"']


def test_a_trailing_escape_fails_only_when_matching_reaches_it(db: InMemoryUserScopedDB) -> None:
    # PostgreSQL's matcher reports it lazily: a value that differs earlier simply does not match.
    assert q(db, "SELECT name FROM contacts WHERE name LIKE %s", ("Z\\",)) == []
    with pytest.raises(DatabaseError, match="escape character"):
        q(db, "SELECT name FROM contacts WHERE name LIKE %s", ("A\\",))


def test_parameters_whose_type_postgresql_infers_differently_are_refused(
    db: InMemoryUserScopedDB,
) -> None:
    # An integer expression with a Decimal parameter is numeric on PostgreSQL.
    with pytest.raises(UnsupportedQueryError, match="integer arithmetic"):
        q(db, "SELECT length(name) * %s FROM contacts", (Decimal("1.5"),))
    cast = "SELECT max(length(name) * %s::numeric) AS m FROM contacts"
    assert q(db, cast, (Decimal("1.5"),)) == [{"m": Decimal("4.5")}]
    # concat(VARIADIC "any") gives an untyped (str) parameter no type to take.
    with pytest.raises(DatabaseError, match="could not determine data type"):
        q(db, "SELECT concat(name, %s) FROM contacts", ("x",))


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        ("SELECT concat_ws(',', name) AS x FROM contacts", "concat_ws()"),
        ("SELECT U&'\\0041' AS x", "U&'...' strings"),
        ("SELECT E'a\\tb' AS x", "E'...' strings"),
    ],
)
def test_sql_the_fake_cannot_read_or_run_is_refused_by_name(
    db: InMemoryUserScopedDB, sql: str, construct: str
) -> None:
    """Only an InfraError, never sqlglot's own exceptions or a variant run as its parent."""
    with pytest.raises(UnsupportedQueryError) as caught:
        q(db, sql)
    assert construct in str(caught.value)
