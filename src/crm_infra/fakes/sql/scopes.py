"""Name resolution and type inference for PostgreSQL statements, as PostgreSQL does them.

For each column reference: which table, subquery or CTE it comes from, and its type; for each
select-list item: the name PostgreSQL gives it (FigureColname) and its type, so that result
values are decoded to psycopg's Python types and named as psycopg names them.
"""

from __future__ import annotations

import attrs
from sqlglot import exp

from crm_infra.errors import DatabaseError
from crm_infra.fakes.sql.errors import refuse
from crm_infra.fakes.sql.paths import CONTEXT, RUN_TIME
from crm_infra.fakes.sql.schema import Schema, Table
from crm_infra.fakes.sql.types import UNKNOWN, PgType, pg_type_from_datatype

__all__ = [
    "BOOL",
    "COMPARISONS",
    "INT",
    "INT4",
    "INT8",
    "INTERVAL_SECONDS",
    "NUMERIC",
    "TEXT",
    "TIMESTAMPTZ",
    "Scopes",
    "Source",
    "pg_name",
]

INT = PgType("int")  # width not known before run time (see Scopes.int_width)
INT4 = PgType("int", precision=32)
INT8 = PgType("int", precision=64)
TEXT = PgType("text")
BOOL = PgType("bool")
NUMERIC = PgType("numeric")
TIMESTAMPTZ = PgType("timestamptz")
UUID_T = PgType("uuid")
NULL = PgType("null")
PARAM = PgType("param")
COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
PREDICATES = (
    *COMPARISONS,
    exp.And,
    exp.Or,
    exp.Not,
    exp.Is,
    exp.Like,
    exp.ILike,
    exp.In,
    exp.Between,
    exp.Exists,
    exp.Escape,
)
INTERVAL_SECONDS = {
    "HOUR": 3600,
    "HOURS": 3600,
    "MINUTE": 60,
    "MINUTES": 60,
    "SECOND": 1,
    "SECONDS": 1,
}
"""Interval units of a fixed length; days and months depend on the session's time zone."""
PG_TYPE_NAMES = {
    "uuid": "uuid",
    "text": "text",
    "int": "int4",
    "numeric": "numeric",
    "bool": "bool",
    "timestamptz": "timestamptz",
}


@attrs.define
class Source:
    alias: str
    table: Table | None  # a schema table
    columns: list[tuple[str, PgType]]  # for a subquery or CTE: its output
    qualified_only: bool = False  # EXCLUDED in ON CONFLICT: only as `excluded.col`


class Scopes:
    """Resolve columns to types, per SELECT/DML node, as PostgreSQL's name resolution does.

    Args:
        schema: the tables.
        param_bits: for ``$1``, ``$2``..., the integer width each parameter has as the client
            sends it (see :mod:`._sql_paths`): 64 (an int: int8), ``RUN_TIME`` (psycopg picks
            int2, int4 or int8 by the value: the admin path, an int subclass) or ``CONTEXT``
            (none of its own, like an untyped NULL: it takes the type of what it meets). A
            parameter beyond the tuple is ``RUN_TIME``.
    """

    def __init__(self, schema: Schema, *, param_bits: tuple[int, ...] = ()) -> None:
        self.schema = schema
        self.param_bits = param_bits
        self.widths_used = False  # whether a parameter's width went into a type
        self._cte_columns: dict[int, list[tuple[str, PgType]]] = {}  # by id of the CTE
        self._cache: dict[int, list[Source]] = {}
        self.extra: dict[int, list[Source]] = {}

    def sources(self, node: exp.Expr) -> list[Source]:
        key = id(node)
        if key not in self._cache:
            found = list(self.extra.get(key, []))
            from_ = node.args.get("from_")
            items: list[exp.Expr] = [from_.this] if from_ is not None else []
            items += [j.this for j in node.args.get("joins") or []]
            for item in items:
                found.append(self._source(item))
            self._cache[key] = found
        return self._cache[key]

    def _source(self, item: exp.Expr) -> Source:
        alias_node = item.args.get("alias")
        if isinstance(alias_node, exp.TableAlias) and alias_node.columns:
            # SQLite has no column list on a FROM item's alias (WITH a (x) AS ... it has).
            raise refuse("column lists in a FROM item's alias (AS t(a, b))")
        if isinstance(item, exp.Table):
            name = item.name.lower()
            if item.args.get("db") or item.args.get("catalog"):
                raise DatabaseError(f'relation "{item.sql("postgres")}" does not exist')
            alias = item.alias_or_name.lower()
            cte = self.cte_of(item)
            if cte is not None:
                return Source(alias, None, self.cte_columns(cte))
            table = self.schema.tables.get(name)
            if table is None:
                if isinstance(item.this, exp.Anonymous):
                    raise refuse(f"set-returning function {item.this.name}() in FROM")
                raise DatabaseError(f'relation "{name}" does not exist')
            return Source(alias, table, [(c.name, c.type) for c in table.columns.values()])
        if isinstance(item, exp.Subquery):
            inner = item.this
            if not isinstance(inner, exp.Query):
                raise refuse(f"{item.this.key} in FROM")
            return Source(item.alias.lower(), None, self.output(inner))
        raise refuse(f"{item.key} in FROM")

    @staticmethod
    def cte_of(table: exp.Table) -> exp.CTE | None:
        """Return the WITH query ``table`` names, as PostgreSQL resolves it; None for a table.

        A WITH query is visible in its own statement (subqueries included) and in the WITH
        queries after it in the same list, never in its own body (no WITH RECURSIVE here) nor
        outside its statement; the nearest enclosing one wins.
        """
        if table.args.get("db") or table.args.get("catalog") or _written_to(table):
            return None  # what INSERT, UPDATE and DELETE write is always a table
        name = table.name.lower()
        below: exp.Expr = table
        node = table.parent
        while node is not None:
            ctes: list[exp.CTE] = []
            if isinstance(node, exp.With):
                ctes = list(node.expressions)
                # Coming up from the body of one of them: only those before it.
                ctes = ctes[: next((i for i, c in enumerate(ctes) if c is below), len(ctes))]
            else:
                with_ = node.args.get("with_")
                if isinstance(with_, exp.With) and with_ is not below:
                    ctes = list(with_.expressions)
            for cte in ctes:
                if cte.alias.lower() == name:
                    return cte
            below, node = node, node.parent
        return None

    def cte_columns(self, cte: exp.CTE) -> list[tuple[str, PgType]]:
        """Return the output columns of a WITH query (computed once)."""
        key = id(cte)
        found = self._cte_columns.get(key)
        if found is None:
            found = self.output(cte.this)
            names = [_folded(c) for c in cte.args["alias"].columns]  # WITH a (x, y) AS
            if len(names) > len(found):
                raise DatabaseError(
                    f"WITH query {cte.alias} has {len(found)} columns available but "
                    f"{len(names)} columns specified"
                )
            found = [(n, t) for n, (_, t) in zip(names, found, strict=False)] + found[len(names) :]
            self._cte_columns[key] = found
        return found

    def output(self, query: exp.Expr) -> list[tuple[str, PgType]]:
        if isinstance(query, exp.Subquery):
            return self.output(query.this)
        if isinstance(query, exp.SetOperation):
            return self.output(query.this)
        if isinstance(query, exp.Select):
            out: list[tuple[str, PgType]] = []
            for item in query.selects:
                if isinstance(item, exp.Star):  # `*`: every source's columns, in FROM order
                    out += [c for source in self.sources(query) for c in source.columns]
                elif isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
                    qualifier = item.table.lower()
                    matching = [s for s in self.sources(query) if s.alias == qualifier]
                    if not matching:
                        raise DatabaseError(
                            f'missing FROM-clause entry for table "{item.table}"'
                        )
                    out += matching[0].columns
                else:
                    out.append((pg_name(item), self.type_of(item)))
            return out
        raise refuse(f"{query.key} as a subquery")

    def column_type(self, column: exp.Column) -> PgType:
        # As PostgreSQL folds it: "Q" is Q, q and Q are q.
        name = _folded(column.this) if isinstance(column.this, exp.Identifier) else column.name
        qualifier = column.table.lower()
        assigned = column.parent
        if (
            isinstance(assigned, exp.EQ)
            and assigned.this is column
            and isinstance(assigned.parent, exp.Update)
            and assigned.arg_key == "expressions"
        ):
            # UPDATE ... SET column = ...: a column of the table written, whatever FROM holds.
            target = self.extra.get(id(assigned.parent), [])[:1]
            found = [t for source in target for n, t in source.columns if n == name]
            if found:
                return found[0]
        scope: exp.Expr | None = column
        while scope is not None:
            scope = scope.parent
            if scope is None:
                break
            if not isinstance(scope, exp.Select | exp.Update | exp.Delete | exp.Insert):
                continue
            matches = []
            for source in self.sources(scope):
                if (qualifier or source.qualified_only) and source.alias != qualifier:
                    continue
                matches += [t for n, t in source.columns if n == name]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise DatabaseError(f'column reference "{name}" is ambiguous')
            if qualifier and any(s.alias == qualifier for s in self.sources(scope)):
                break
        if qualifier in {"excluded"}:
            return UNKNOWN
        if isinstance(column.this, exp.Star):
            return UNKNOWN
        raise DatabaseError(f'column "{column.sql("postgres")}" does not exist')

    def type_of(self, node: exp.Expr) -> PgType:  # noqa: PLR0911, PLR0912
        if isinstance(node, exp.Alias | exp.Paren | exp.Filter):
            return self.type_of(node.this)
        if isinstance(node, exp.Column):
            return self.column_type(node)
        if isinstance(node, exp.Literal):
            if node.is_string:
                return TEXT
            if node.is_int:
                return INT4 if -(2**31) <= int(node.name) < 2**31 else INT8
            return NUMERIC
        if isinstance(node, exp.Boolean):
            return BOOL
        if isinstance(node, exp.Null):
            return NULL
        if isinstance(node, exp.Parameter):
            return PARAM
        if isinstance(node, exp.Cast):
            return pg_type_from_datatype(node.to) or UNKNOWN
        if isinstance(node, exp.Count | exp.RowNumber | exp.Rank | exp.DenseRank):
            return INT8
        if isinstance(node, exp.Length):
            return INT4
        if isinstance(node, exp.Window):
            return self.type_of(node.this)
        if isinstance(node, exp.Sum):
            return self._sum_type(node)
        if isinstance(node, exp.Avg):
            return NUMERIC
        if isinstance(node, exp.Min | exp.Max | exp.Abs | exp.Neg):
            return self.type_of(node.this)
        if isinstance(node, exp.Coalesce):
            for arg in [node.this, *node.expressions]:
                kind = self.type_of(arg)
                if kind.kind not in {"null", "param"}:
                    return self._int_typed(node, kind)
            return UNKNOWN
        if isinstance(node, exp.Nullif):
            return self.type_of(node.this)
        if isinstance(node, exp.Greatest | exp.Least):
            types = [self.type_of(a) for a in [node.this, *node.expressions]]
            known = [t for t in types if t.kind not in {"null", "param"}]
            if any(k.kind == "numeric" for k in known):
                return NUMERIC
            return self._int_typed(node, known[0]) if known else UNKNOWN
        if isinstance(node, exp.Concat):
            return TEXT
        if isinstance(node, exp.Round):
            return NUMERIC
        if isinstance(node, exp.Lower | exp.Upper | exp.DPipe):
            return TEXT
        if isinstance(node, exp.CurrentTimestamp):
            return TIMESTAMPTZ
        if isinstance(node, exp.Uuid):
            return UUID_T
        if isinstance(node, exp.Anonymous) and node.name.lower() == "current_setting":
            return TEXT
        if isinstance(node, PREDICATES):
            return BOOL
        if isinstance(node, exp.Case):
            branches = [i.args.get("true") for i in node.args.get("ifs") or []]
            for branch in [*branches, node.args.get("default")]:
                if branch is not None:
                    kind = self.type_of(branch)
                    if kind.kind not in {"null", "param"}:
                        return self._int_typed(node, kind)
            return UNKNOWN
        if isinstance(node, exp.Add | exp.Sub) and isinstance(node.expression, exp.Interval):
            if self.type_of(node.this).kind not in {"timestamptz", "param", "null"}:
                raise refuse("intervals added to anything but a timestamptz")
            return TIMESTAMPTZ
        if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod):
            kinds = {self.type_of(node.this).kind, self.type_of(node.expression).kind}
            kinds -= {"null", "param"}
            if kinds <= {"int"}:
                return self._int_typed(node, INT)
            if isinstance(node, exp.Mod):
                raise refuse("modulo of non-integers")
            if kinds <= {"int", "numeric"}:
                return NUMERIC
            if kinds <= {"int", "float", "numeric"}:
                return PgType("float")
            raise refuse(f"arithmetic on {'/'.join(sorted(kinds))} values")
        if isinstance(node, exp.Subquery):
            out = self.output(node.this)
            return out[0][1] if out else UNKNOWN
        return UNKNOWN

    def _sum_type(self, node: exp.Sum) -> PgType:
        """Return sum()'s type: bigint over smallint and integer, numeric over bigint."""
        if self.type_of(node.this).kind != "int":
            return NUMERIC
        bits, decided_at_run_time = self.int_width(node.this)
        if bits == 64:
            return NUMERIC
        if decided_at_run_time:
            raise refuse(
                "sum() of an integer expression with a parameter whose width psycopg picks by "
                "its value (the result is bigint or numeric; add a cast such as %s::bigint)"
            )
        return INT8

    def _int_typed(self, node: exp.Expr, found: PgType) -> PgType:
        """Return ``found`` with the integer width PostgreSQL gives ``node``.

        The width is None when a parameter's value may still widen it (bigint cannot widen).
        """
        if found.kind != "int":
            return found
        bits, decided_at_run_time = self.int_width(node)
        known = bits == 64 or (bits > 0 and not decided_at_run_time)
        return attrs.evolve(found, precision=bits if known else None)

    def _is_int(self, node: exp.Expr | None) -> bool:
        return node is not None and self.type_of(node).kind == "int"

    def int_bits(self, node: exp.Expr) -> int:
        """Return the bits of the integer type PostgreSQL gives ``node`` (0: decided at run time).

        ``0`` only when parameters alone decide it; see :meth:`int_width`.
        """
        return self.int_width(node)[0]

    def param_bits_of(self, node: exp.Parameter) -> int:
        """Return the width of ``$n`` as the client sends it (see the class's ``param_bits``)."""
        index = int(node.this.name) - 1
        if index >= len(self.param_bits):
            return RUN_TIME
        self.widths_used = True
        return self.param_bits[index]

    def int_width(self, node: exp.Expr) -> tuple[int, bool]:  # noqa: PLR0911
        """Return the bits of ``node``'s integer type, and whether a parameter may widen it.

        The bits are those known before run time (0 when only parameters decide them); the
        flag is true when an int parameter whose width psycopg picks by its value (the admin
        path) takes part in the result's type, so that the type may be wider.
        """
        while isinstance(node, exp.Paren | exp.Alias):
            node = node.this
        if isinstance(node, exp.Parameter):
            bits = self.param_bits_of(node)
            if bits == CONTEXT:
                return 0, False  # like NULL: it takes the other operands' type
            return bits, bits == RUN_TIME
        if isinstance(node, exp.Literal) and node.is_int:
            return (32 if -(2**31) <= int(node.name) < 2**31 else 64), False
        if isinstance(node, exp.Null):
            return 0, False  # NULL takes the other operand's type
        if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod):
            return _widest([self.int_width(node.this), self.int_width(node.expression)])
        if isinstance(node, exp.Min | exp.Max | exp.Abs | exp.Neg | exp.Nullif):
            return self.int_width(node.this)
        if isinstance(node, exp.Coalesce | exp.Greatest | exp.Least | exp.Case):
            if isinstance(node, exp.Case):
                args = [i.args.get("true") for i in node.args.get("ifs") or []]
                args.append(node.args.get("default"))
            else:
                args = [node.this, *node.expressions]
            # The common type of the branches: the widest integer among them.
            return _widest(
                [
                    self.int_width(a)
                    for a in args
                    if a is not None and (self._is_int(a) or isinstance(a.unnest(), exp.Parameter))
                ],
                default=32,
            )
        if isinstance(node, exp.Subquery):
            selects = node.this.selects if isinstance(node.this, exp.Select) else []
            return self.int_width(selects[0]) if len(selects) == 1 else (64, False)
        # Columns, casts, count(), sum(), length(), window functions: their type says it.
        # A column without a width is one a parameter decided (see _int_typed).
        precision = self.type_of(node).precision
        return (precision, False) if precision else (32, True)


def _written_to(table: exp.Table) -> bool:
    """Return True for the target of an INSERT, UPDATE or DELETE."""
    node: exp.Expr = table
    parent = table.parent
    if isinstance(parent, exp.Schema) and table.arg_key == "this":
        node, parent = parent, parent.parent  # INSERT INTO t (columns)
    return isinstance(parent, exp.Insert | exp.Update | exp.Delete) and node.arg_key == "this"


def _widest(widths: list[tuple[int, bool]], default: int = 0) -> tuple[int, bool]:
    """Return the widest of integer widths, and whether any may be widened at run time."""
    return (
        max((bits for bits, _ in widths), default=default),
        any(flag for _, flag in widths),
    )


def _folded(identifier: exp.Expr) -> str:
    """Return an identifier's name as PostgreSQL keeps it: unquoted names fold to lower case."""
    name = identifier.name
    return name if identifier.args.get("quoted") else name.lower()


def pg_name(node: exp.Expr) -> str:  # noqa: PLR0911, PLR0912 (one per kind of item)
    """Return the column name PostgreSQL gives a select-list item (FigureColname)."""
    if isinstance(node, exp.Alias):
        return _folded(node.args["alias"])
    if isinstance(node, exp.Paren):
        return pg_name(node.this)
    if isinstance(node, exp.Column):
        return _folded(node.this) if isinstance(node.this, exp.Identifier) else node.name
    if isinstance(node, exp.Cast):
        inner = pg_name(node.this)
        if inner != "?column?":
            return inner
        target = pg_type_from_datatype(node.to)
        return PG_TYPE_NAMES.get(target.kind, "?column?") if target else "?column?"
    if isinstance(node, exp.Window):
        return pg_name(node.this)
    if isinstance(node, exp.Case):
        return "case"
    if isinstance(node, exp.Exists):
        return "exists"
    if isinstance(node, exp.CurrentTimestamp):
        return "now"
    if isinstance(node, exp.Uuid):
        return "gen_random_uuid"
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select) and node.this.selects:
        return pg_name(node.this.selects[0])
    if isinstance(node, exp.Func) and not isinstance(node, exp.Binary | exp.Predicate):
        return node.sql_name().lower()
    return "?column?"
