"""PostgreSQL statements to SQLite ones, for the supported subset; everything else is refused.

One :class:`Translator` per path (user-scoped or admin). For each statement it works out what
PostgreSQL would return (column names as PostgreSQL names them, and their types, for decoding)
and what each ``$n`` parameter is compared with or written to (so a parameter is checked and
stored as that column holds it), then rewrites the tree for SQLite:

* user path: reads go through the same-named filtering views; the target of INSERT, UPDATE and
  DELETE is the base table, with the policy's USING added to UPDATE and DELETE (WITH CHECK is
  enforced by triggers); table privileges are checked as PostgreSQL checks the app role's grants;
* admin path: every name points at the base tables, so nothing is filtered.

Names resolve as PostgreSQL resolves them: a WITH query is visible only in the statement it
belongs to (and in the WITH queries after it), so a reference outside that scope is to the
table of that name, or to nothing. A statement that names anything internal to the fake (a
base table, a function it registers; see :mod:`._sql_checks`) is refused whatever sqlglot made
of the text, and the SQL handed to SQLite is written by :func:`._sql_sqlite.to_sqlite`: every
identifier quoted, no comments.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError

from crm_infra._sql_guard import Refusal
from crm_infra._sql_params import SplitQuery, split_placeholders, verbatim
from crm_infra.errors import DatabaseError
from crm_infra.fakes.sql.checks import InternalNames, RefusedSql, written_spelling
from crm_infra.fakes.sql.errors import TEST_AGAINST_PG, UnparsableQueryError, refuse
from crm_infra.fakes.sql.functions import RLS_REFUSE
from crm_infra.fakes.sql.paths import CONTEXT, ParamWidths
from crm_infra.fakes.sql.rewrite import fn, rewrite_expression
from crm_infra.fakes.sql.schema import Schema, Table
from crm_infra.fakes.sql.scopes import (
    COMPARISONS,
    INTERVAL_SECONDS,
    TEXT,
    TIMESTAMPTZ,
    Scopes,
    Source,
    pg_name,
)
from crm_infra.fakes.sql.sqlite import quote, to_sqlite
from crm_infra.fakes.sql.types import PgType, decoder_for, encode_param, pg_type_from_datatype

__all__ = ["CTE_PREFIX", "OutputColumn", "Translation", "Translator"]

CTE_PREFIX = "_crm_cte_"
"""What SQLite calls the statement's WITH queries (``_crm_cte_0``...): internal names."""

_REFUSED_NODES: dict[type[exp.Expr], str] = {
    exp.Lock: "FOR UPDATE / FOR SHARE row locks (SKIP LOCKED, NOWAIT)",
    exp.Array: "array literals outside = ANY(...)",
    exp.Lateral: "LATERAL",
    exp.RegexpLike: "regular expression matching",
    exp.Collate: "COLLATE",
    exp.TableSample: "TABLESAMPLE",
    exp.Into: "SELECT INTO",
    exp.JSONExtract: "JSON operators",
    exp.JSONExtractScalar: "JSON operators",
    exp.Pivot: "PIVOT",
    exp.Bracket: "array subscripts",
    exp.SimilarTo: "SIMILAR TO",
    # sqlglot would hand SQLite these as something else than PostgreSQL reads.
    exp.ByteString: "E'...' strings with backslash escapes",
    exp.UnicodeString: "U&'...' strings",
    exp.BitString: "bit-string constants",
    exp.HexString: "bit-string constants",
    exp.National: "N'...' strings",
}
# The statement the guard classified, as sqlglot's trees spell it.
_KINDS: dict[str, tuple[type[exp.Expr], ...]] = {
    "SELECT": (exp.Query,),
    "INSERT": (exp.Insert,),
    "UPDATE": (exp.Update,),
    "DELETE": (exp.Delete,),
    "MERGE": (exp.Merge,),
}

_ALLOWED_FUNCS: tuple[type[exp.Expr], ...] = (
    exp.Count,
    exp.Sum,
    exp.Avg,
    exp.Min,
    exp.Max,
    exp.Coalesce,
    exp.Nullif,
    exp.Lower,
    exp.Upper,
    exp.Length,
    exp.CurrentTimestamp,
    exp.Uuid,
    exp.Cast,
    exp.Case,
    exp.If,
    exp.Exists,
    exp.Abs,
    exp.Any,
    exp.All,
    exp.Anonymous,
    exp.RowNumber,
    exp.Rank,
    exp.DenseRank,
    exp.Greatest,
    exp.Least,
    exp.Concat,
    exp.Round,
)
_ALLOWED_FUNC_TYPES = frozenset(_ALLOWED_FUNCS)
_WINDOW_FUNCTIONS = (exp.RowNumber, exp.Rank, exp.DenseRank, exp.Count)
_RANKING = (exp.RowNumber, exp.Rank, exp.DenseRank)
_ALLOWED_ANONYMOUS = {"current_setting"}
_FUNCTION_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_FAMILIES = {
    "int": "number",
    "numeric": "number",
    "float": "number",
    "date": "time",
    "timestamptz": "time",
}
_CAST_SOURCES = {  # the conversions the fake's pg_cast_* functions make as PostgreSQL does
    "text": {"text", "uuid", "int"},
    "bool": {"bool", "text", "int"},
    "int": {"int", "numeric", "text", "bool"},
    "numeric": {"int", "numeric", "float", "text"},
    "uuid": {"uuid", "text"},
    "timestamptz": {"timestamptz", "text"},
}
_CAST_TARGETS = {"uuid", "text", "int", "numeric", "bool", "timestamptz"}


def _rename(table: exp.Table, name: str) -> None:
    """Point ``table`` at ``name`` in SQLite, keeping the name the statement knows it by."""
    alias = table.alias_or_name
    table.set("this", exp.to_identifier(name))
    table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))


def _written_name(node: exp.Func) -> str:
    """Return the function's PostgreSQL name (date_trunc, not sqlglot's timestamp_trunc)."""
    try:
        text = node.sql(dialect="postgres")
    except SqlglotError:
        text = ""
    match = _FUNCTION_NAME.match(text)
    if match is None or isinstance(node, exp.Cast):  # try_cast() would print as CAST(...)
        return node.sql_name().lower()
    return match.group(1).lower()


_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
_WRITES = (exp.Insert, exp.Update, exp.Delete)


def _system_catalog(table: exp.Table) -> bool:
    """PostgreSQL's own relations (``pg_roles``, ``pg_catalog.pg_class``,
    ``information_schema.tables``...), which the fake has none of."""
    db = table.args.get("db")
    schema = db.name.lower() if isinstance(db, exp.Identifier) else ""
    return schema in _SYSTEM_SCHEMAS or (not schema and table.name.lower().startswith("pg_"))


def _inside_any(node: exp.Expr) -> bool:
    parent = node.parent
    while isinstance(parent, exp.Paren):
        parent = parent.parent
    return isinstance(parent, exp.Any | exp.All)


@attrs.frozen
class OutputColumn:
    """One result column: PostgreSQL's name for it and how to decode its stored value."""

    name: str
    type: PgType
    decode: Callable[[Any], Any]
    param_index: int | None = None  # a bare `SELECT %s`: psycopg hands back the value itself


@attrs.frozen
class Translation:
    """A statement ready for SQLite, with how to bind its parameters and decode its rows."""

    sql: str
    split: SplitQuery
    param_types: tuple[PgType | None, ...]
    array_params: frozenset[int]
    columns: tuple[OutputColumn, ...]
    returns_rows: bool
    then: tuple[str, ...] = ()  # more SQLite statements to run after ``sql`` (TRUNCATE)
    # Whether it holds only for parameters of the integer widths it was made for.
    depends_on_widths: bool = False
    names: tuple[str, ...] = attrs.field(init=False)
    computes_quotients: bool = attrs.field(init=False)
    decoders: tuple[Callable[[Any], Any], ...] = attrs.field(init=False)
    echoes_params: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Precomputed: decoding runs once per row of every query.
        object.__setattr__(self, "names", tuple(c.name for c in self.columns))
        object.__setattr__(self, "decoders", tuple(c.decode for c in self.columns))
        echoes = any(c.param_index is not None for c in self.columns)
        object.__setattr__(self, "echoes_params", echoes)
        quotients = any(
            f in self.sql.upper() for f in ("PG_NUMERIC_AVG(", "PG_NUMERIC_DIV(", "PG_ROUND(")
        )
        object.__setattr__(self, "computes_quotients", quotients)

    @property
    def keys(self) -> tuple[int | str, ...]:
        """Return what each ``$n`` takes: a position in the params, or a mapping key."""
        return self.split.keys


# --- the translator --------------------------------------------------------------------------


class Translator:
    """Translate statements for one path: ``user`` (RLS, app-role grants) or ``admin``."""

    def __init__(
        self,
        schema: Schema,
        *,
        admin: bool,
        app_role: str = "crm_app",
        internal: InternalNames | None = None,
    ) -> None:
        self.schema = schema
        self.admin = admin
        self.app_role = app_role
        self.internal = internal or InternalNames({})

    def translate(
        self, query: str, *, with_params: bool = True, widths: ParamWidths = (), kind: str = ""
    ) -> Translation:
        """Return the SQLite form of ``query`` and how to bind and decode it.

        ``widths`` (from :func:`._sql_paths.user_widths`) gives each user-scoped parameter
        the integer width it has as ``PostgresClient`` sends it: the translation holds for
        calls whose parameters have the same widths. The admin path's are decided at run time.
        ``kind`` is the statement PostgreSQL's grammar read (``SELECT``...; user path).

        Raises:
            RefusedSql: the statement names something internal to the fake.
            UnsupportedQueryError: a construct the fake cannot run faithfully, or a statement
                sqlglot reads as another kind than PostgreSQL's grammar.
            DatabaseError: a statement PostgreSQL would refuse too (unknown table, a write the
                app role has no privilege for...).
        """
        # Without parameters the text is sent as written: no placeholders, `%%` stays `%%`.
        split = split_placeholders(query, spaced=True) if with_params else verbatim(query)
        tree = self._parse(split.text)
        self._refuse_internal_names(tree, split.text)
        if not self.admin:
            self._check_kind(tree, kind)
        if isinstance(tree, exp.TruncateTable):
            return self._truncate(tree, split)
        scopes = Scopes(self.schema, param_bits=self._param_bits(split, widths))
        if isinstance(tree, exp.Update):
            self._set_defaults(tree)
        self._check_constructs(tree)
        self._check_ctes(tree)
        self._check_tables(tree, scopes)
        self._register_dml_scope(tree, scopes)
        found = {int(p.this.name) for p in tree.find_all(exp.Parameter)}
        if found != set(range(1, len(split.keys) + 1)):
            raise DatabaseError(
                f"the query has {split.count} placeholders but they do not all appear in the "
                "statement (a placeholder inside a string literal?)"
            )
        param_types, arrays = self._param_types(tree, scopes, len(split.keys))
        self._typed_literals(tree, scopes)
        columns = self._outputs(tree, scopes)
        self._check_privileges(tree, scopes)
        self._check_types(tree, scopes)
        self._rewrite_numeric_arithmetic(tree, scopes)  # first: it needs the aggregates' types
        self._rewrite_sums(tree, scopes)
        sqlite_tree = self._route_tables(tree, scopes)
        sqlite_tree = rewrite_expression(sqlite_tree, copy=False)
        try:
            sql = to_sqlite(sqlite_tree)
        except SqlglotError as exc:
            raise refuse(f"this statement ({exc})") from None
        returns_rows = isinstance(tree, exp.Query) or bool(tree.args.get("returning"))
        return Translation(
            sql=sql,
            split=split,
            param_types=tuple(param_types),
            array_params=frozenset(arrays),
            columns=tuple(columns),
            returns_rows=returns_rows,
            depends_on_widths=scopes.widths_used,
        )

    def _refuse_internal_names(self, tree: exp.Expr, text: str) -> None:
        """Refuse any name internal to the fake, however sqlglot read the text.

        The guard refused those PostgreSQL's parser found already; this is the same check on
        the tree whose names SQLite gets, so that no difference between the two parsers can
        let one through.
        """
        for node in tree.walk():
            if not isinstance(node, exp.Identifier | exp.Var | exp.Anonymous):
                continue
            name = node.name
            why = self.internal.why(name)
            if why is not None:
                raise RefusedSql(Refusal(written_spelling(text, name), name.lower(), why))

    @staticmethod
    def _check_kind(tree: exp.Expr, kind: str) -> None:
        """Refuse a statement sqlglot reads as another kind than PostgreSQL's grammar did."""
        if isinstance(tree, _KINDS.get(kind, ())):
            return
        raise refuse(
            f"this statement, which it reads as {tree.key.upper()} where PostgreSQL reads "
            f"{kind or 'no data statement'}"
        )

    def _param_bits(self, split: SplitQuery, widths: ParamWidths) -> tuple[int, ...]:
        """Return the width of ``$1``, ``$2``... (RUN_TIME throughout on the admin path)."""
        if self.admin:
            return ()
        if split.named:
            by_name = {item[0]: item[1] for item in widths if isinstance(item, tuple)}
            return tuple(by_name.get(str(k), CONTEXT) for k in split.keys)
        positional = [item for item in widths if isinstance(item, int)]
        count = len(positional)
        return tuple(
            positional[k] if isinstance(k, int) and k < count else CONTEXT for k in split.keys
        )

    def _truncate(self, tree: exp.TruncateTable, split: SplitQuery) -> Translation:
        """Empty tables as TRUNCATE does: no row triggers, referencing tables checked."""
        if split.keys or tree.args.get("is_database"):
            raise refuse("this form of TRUNCATE")
        names: set[str] = set()
        for table in tree.expressions:
            name = table.name.lower()
            if not isinstance(table, exp.Table) or name not in self.schema.tables:
                raise DatabaseError(f'relation "{table.sql("postgres")}" does not exist')
            if not self.admin:
                self._require(name, "TRUNCATE")
            names.add(name)
        referencing = {
            name: {
                ref.find(exp.Table).name.lower()  # type: ignore[union-attr]  # always a table
                for ref in table.create.find_all(exp.Reference)
            }
            - {name}
            for name, table in self.schema.tables.items()
        }
        cascade = str(tree.args.get("option") or "").upper() == "CASCADE"
        grew = True
        while grew:
            outside = {t for t, refs in referencing.items() if t not in names and refs & names}
            if outside and not cascade:
                raise DatabaseError(
                    f"cannot truncate a table referenced in a foreign key constraint "
                    f"(table {sorted(outside)[0]}); truncate it too, or use CASCADE"
                )
            grew = bool(outside)
            names |= outside
        ordered = self._children_first(sorted(names), referencing)
        deletes = tuple(f"DELETE FROM {quote(self.schema.tables[n].base_name)}" for n in ordered)
        return Translation(
            sql=deletes[0],
            split=split,
            param_types=(),
            array_params=frozenset(),
            columns=(),
            returns_rows=False,
            then=deletes[1:],
        )

    @staticmethod
    def _children_first(names: list[str], referencing: dict[str, set[str]]) -> list[str]:
        ordered: list[str] = []
        remaining = list(names)
        while remaining:
            for name in remaining:
                children = [o for o in remaining if o != name and name in referencing[o]]
                if not children:
                    ordered.append(name)
                    remaining.remove(name)
                    break
            else:
                ordered += remaining  # a cycle: leave it to the foreign keys' own actions
                break
        return ordered

    # parsing and refusals

    def _parse(self, text: str) -> exp.Expr:
        try:
            # After a final `;`, comments alone parse as an empty statement; PostgreSQL
            # ignores it, as it does empty statements.
            statements = [
                s
                for s in sqlglot.parse(text, read="postgres")
                if s is not None and not isinstance(s, exp.Semicolon)
            ]
        except SqlglotError as exc:  # ParseError, and TokenError for an unterminated '...
            errors = exc.errors if isinstance(exc, ParseError) else []
            first = errors[0]["description"] if errors else str(exc)
            raise UnparsableQueryError(
                f"the in-memory database fake could not parse this statement ({first}); "
                f"if PostgreSQL accepts it, {TEST_AGAINST_PG}"
            ) from None
        if len(statements) != 1:
            raise refuse("several statements in one piece of SQL")  # split by the caller
        tree = statements[0]
        for node in list(tree.find_all(exp.Anonymous)):
            if node.name.upper() == "ALL" and len(node.expressions) == 1:
                node.replace(exp.All(this=node.expressions[0]))
        for table in tree.find_all(exp.Table):
            # The schema's tables live in `public`, the only schema the fake knows.
            if table.text("db").lower() == "public" and not table.args.get("catalog"):
                table.set("db", None)
            table.set("only", None)  # no table inherits from another: ONLY changes nothing
        if isinstance(tree, exp.Query | exp.Insert | exp.Update | exp.Delete | exp.TruncateTable):
            return tree
        if isinstance(tree, exp.Transaction | exp.Commit | exp.Rollback):
            raise refuse(
                "transaction control statements through execute(); use transaction() or "
                "admin_transaction()"
            )
        if isinstance(tree, exp.Create | exp.Drop | exp.Alter | exp.TruncateTable | exp.Grant):
            raise refuse(
                f"DDL ({tree.key.upper()}): the fake builds its tables from the sql/ files only"
            )
        if isinstance(tree, exp.Command):
            raise refuse(f"{tree.name.upper()} statements")
        raise refuse(f"{tree.key.upper()} statements")

    def _set_defaults(self, tree: exp.Update) -> None:
        """Replace ``SET col = DEFAULT`` with the column's default (NULL without one)."""
        table = self._target_table(tree)
        for assignment in tree.expressions:
            value = assignment.expression if isinstance(assignment, exp.EQ) else None
            if not (
                isinstance(value, exp.Column)
                and not value.table
                and isinstance(value.this, exp.Identifier)
                and not value.this.args.get("quoted")
                and value.name.upper() == "DEFAULT"
            ):
                continue
            value.replace(self._column_default(table, assignment.this.name.lower()))

    @staticmethod
    def _column_default(table: Table, column: str) -> exp.Expr:
        for item in table.create.this.expressions:
            if isinstance(item, exp.ColumnDef) and item.name.lower() == column:
                for constraint in item.args.get("constraints") or []:
                    if isinstance(constraint.kind, exp.DefaultColumnConstraint):
                        return exp.paren(constraint.kind.this.copy())
                return exp.null()
        raise DatabaseError(f'column "{column}" of relation "{table.name}" does not exist')

    def _check_constructs(self, tree: exp.Expr) -> None:  # noqa: PLR0912 (one check per construct)
        for node in tree.walk():
            for cls, what in _REFUSED_NODES.items():
                if isinstance(node, cls):
                    if isinstance(node, exp.Array) and _inside_any(node):
                        break
                    raise refuse(what)
            # Exact types: subclasses (ConcatWs of Concat, TryCast of Cast) mean other things.
            if isinstance(node, exp.Func) and type(node) not in _ALLOWED_FUNC_TYPES:
                if isinstance(node, exp.Binary | exp.Predicate | exp.Connector):
                    continue
                raise refuse(f"the function {_written_name(node)}()")
            if isinstance(node, exp.Anonymous) and node.name.lower() not in _ALLOWED_ANONYMOUS:
                raise refuse(f"the function {node.name.lower()}()")
            if isinstance(node, exp.Anonymous) and node.name.lower() == "current_setting":
                self._check_current_setting(node)
            if isinstance(node, exp.Interval):
                self._check_interval(node)
            if isinstance(node, exp.Window) and (
                not isinstance(node.this, _WINDOW_FUNCTIONS) or node.args.get("spec") is not None
            ):
                raise refuse(
                    "window functions other than row_number(), rank(), dense_rank() and "
                    "count() OVER (PARTITION BY ... ORDER BY ...) without a frame clause"
                )
            if isinstance(node, _RANKING) and not isinstance(node.parent, exp.Window):
                raise refuse(f"{node.sql_name().lower()}() without OVER")
            if isinstance(node, exp.Distinct) and node.args.get("on") is not None:
                raise refuse("DISTINCT ON")
            if isinstance(node, exp.With) and node.args.get("recursive"):
                raise refuse("WITH RECURSIVE")
            if isinstance(node, exp.CTE) and isinstance(node.this, _WRITES):
                raise refuse("WITH queries that write (INSERT, UPDATE or DELETE inside WITH)")
            if isinstance(node, exp.Table) and _system_catalog(node):
                raise refuse(f"the system catalog {node.sql('postgres')}")
            if isinstance(node, exp.Any) and not isinstance(node.parent, exp.EQ):
                raise refuse("ANY(...) with an operator other than =")
            if isinstance(node, exp.All) and not isinstance(node.parent, exp.NEQ):
                raise refuse("ALL(...) with an operator other than <>")
            if isinstance(node, exp.Cast):
                target = pg_type_from_datatype(node.to)
                if target is None or target.kind not in _CAST_TARGETS:
                    raise refuse(f"casts to {node.to.sql('postgres')}")
            if isinstance(node, exp.OnConflict) and node.args.get("constraint") is not None:
                raise refuse("ON CONFLICT ON CONSTRAINT")
            if isinstance(node, exp.Delete) and node.args.get("using"):
                raise refuse("DELETE ... USING")
            if isinstance(node, exp.Values) and not isinstance(node.parent, exp.Insert):
                raise refuse("VALUES lists outside INSERT")
            self._check_raw_words(node)

    @staticmethod
    def _check_raw_words(node: exp.Expr) -> None:
        """Refuse what sqlglot would hand SQLite as a bare word of the user's text.

        Identifiers go out quoted; a ``Var`` goes out as written, so only the few sqlglot
        makes of the supported grammar pass (interval units, ``DO UPDATE``/``DO NOTHING``).
        ``@x`` is PostgreSQL's absolute value; sqlglot reads a parameter.
        """
        if isinstance(node, exp.Parameter) and not node.this.name.isdigit():
            raise refuse("the prefix operator @ (absolute value)")
        if isinstance(node, exp.Placeholder):
            raise refuse(f"the placeholder {node.sql('postgres')}")
        if isinstance(node, exp.Var) and not (
            (isinstance(node.parent, exp.Interval) and node.arg_key == "unit")
            or (isinstance(node.parent, exp.OnConflict) and node.arg_key == "action")
        ):
            raise refuse(f"the word {node.name} here")

    @staticmethod
    def _check_interval(node: exp.Interval) -> None:
        unit = node.text("unit").upper()
        value = node.this
        fixed = (
            unit in INTERVAL_SECONDS
            and isinstance(value, exp.Literal)
            and value.name.replace(".", "", 1).isdigit()
            and isinstance(node.parent, exp.Add | exp.Sub)
            and node.arg_key == "expression"
        )
        if not fixed:
            raise refuse(
                "intervals other than `timestamp ± interval 'N hours|minutes|seconds'` (days, "
                "months and years depend on the session's time zone)"
            )

    @staticmethod
    def _check_current_setting(node: exp.Anonymous) -> None:
        args = node.expressions
        name = args[0].name if args and isinstance(args[0], exp.Literal) else None
        if name != "app.current_user_id":
            raise refuse("current_setting() of anything but 'app.current_user_id'")

    @staticmethod
    def _check_ctes(tree: exp.Expr) -> None:
        """Refuse what PostgreSQL refuses of WITH query names.

        The fake resolves each name itself, as PostgreSQL does (the nearest WITH query in
        scope, else the table), and SQLite gets every WITH query under a name of its own
        (see :meth:`_route_tables`): a WITH query may be named like a table, or use the table
        it is named like in its own body.
        """
        for with_ in tree.find_all(exp.With):
            names: set[str] = set()
            for cte in with_.expressions:
                name = cte.alias.lower()
                if name in names:
                    raise DatabaseError(f'WITH query name "{name}" specified more than once')
                names.add(name)

    # parameters

    def _param_types(
        self, tree: exp.Expr, scopes: Scopes, count: int
    ) -> tuple[list[PgType | None], set[int]]:
        types: list[PgType | None] = [None] * count
        arrays: set[int] = set()
        if isinstance(tree, exp.Insert):
            self._insert_targets(tree, types)
        for param in tree.find_all(exp.Parameter):
            index = int(param.this.name) - 1
            parent = param.parent
            while isinstance(parent, exp.Paren):
                parent = parent.parent
            if isinstance(parent, exp.Any | exp.All):
                arrays.add(index)
                comparison = parent.parent
                if isinstance(comparison, exp.EQ | exp.NEQ):
                    types[index] = self._type_if_column(comparison.this, scopes, "compare")
                continue
            target = self._param_target(param, parent, scopes)
            if target is not None and types[index] is None:
                types[index] = target
        return types, arrays

    def _param_target(  # noqa: PLR0911 (one return per context)
        self, param: exp.Expr, parent: exp.Expr | None, scopes: Scopes
    ) -> PgType | None:
        if (
            isinstance(parent, exp.EQ)
            and isinstance(parent.parent, exp.Update)
            and parent.arg_key == "expressions"  # SET column = %s
        ):
            return self._type_if_column(parent.this, scopes, "assign")
        if isinstance(parent, COMPARISONS):
            other = parent.expression if parent.this is param else parent.this
            return self._type_if_column(other, scopes, "compare")
        if isinstance(parent, exp.In | exp.Between):
            return self._type_if_column(parent.this, scopes, "compare")
        if isinstance(parent, exp.Cast):
            target = pg_type_from_datatype(parent.to)
            return attrs.evolve(target, role="cast") if target is not None else None
        if isinstance(parent, exp.Like | exp.ILike | exp.Escape):
            return attrs.evolve(TEXT, role="compare")
        if isinstance(parent, exp.DPipe):
            return attrs.evolve(TEXT, role="concat")
        if isinstance(parent, exp.Concat) or (isinstance(parent, exp.Is) and parent.this is param):
            return attrs.evolve(TEXT, role="untyped")  # concat(VARIADIC "any"), `%s IS NULL`
        if isinstance(parent, exp.Add | exp.Sub) and isinstance(parent.expression, exp.Interval):
            return attrs.evolve(TIMESTAMPTZ, role="compare")
        if isinstance(parent, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod):
            other = parent.expression if parent.this is param else parent.this
            return self._arithmetic_target([other], scopes)
        if isinstance(parent, exp.Greatest | exp.Least | exp.Coalesce):
            others = [a for a in [parent.this, *parent.expressions] if a is not param]
            return self._arithmetic_target(others, scopes)
        return None

    @staticmethod
    def _arithmetic_target(others: list[exp.Expr], scopes: Scopes) -> PgType | None:
        # PostgreSQL types the parameter from the other operands; an integer expression
        # with a Decimal or float parameter becomes numeric, which the fake would miss.
        kinds = {scopes.type_of(o).kind for o in others} - {"null", "param", "unknown"}
        if kinds == {"int"}:
            return PgType("int", role="arith")
        if kinds and kinds <= {"int", "numeric"}:
            return PgType("numeric", role="arith")
        return None

    def _type_if_column(self, node: exp.Expr, scopes: Scopes, role: str) -> PgType | None:
        if isinstance(node, exp.Column):
            kind = scopes.column_type(node)
            return None if kind.kind == "unknown" else attrs.evolve(kind, role=role)
        return None

    def _insert_targets(self, tree: exp.Insert, types: list[PgType | None]) -> None:
        table = self._target_table(tree)
        target = tree.this
        names = (
            [i.name.lower() for i in target.expressions]
            if isinstance(target, exp.Schema) and target.expressions
            else list(table.columns)
        )
        for name in names:
            if name not in table.columns:
                raise DatabaseError(f'column "{name}" of relation "{table.name}" does not exist')
        values = tree.expression
        if isinstance(values, exp.Values):
            rows = [r.expressions if isinstance(r, exp.Tuple) else [r] for r in values.expressions]
        elif isinstance(values, exp.Select):
            rows = [[p.unalias() for p in values.selects]]
        else:
            return
        for items in rows:
            if len(items) > len(names):
                raise DatabaseError("INSERT has more expressions than target columns")
            for name, item in zip(names, items, strict=False):
                if isinstance(item, exp.Parameter):
                    column_type = attrs.evolve(table.columns[name].type, role="assign")
                    types[int(item.this.name) - 1] = column_type

    def _typed_literals(self, tree: exp.Expr, scopes: Scopes) -> None:
        # PostgreSQL reads a quoted literal met by a column as a value of the column's type,
        # as it does an untyped (str) parameter: store it the way the column holds values.
        for literal in list(tree.find_all(exp.Literal)):
            if not literal.is_string:
                continue
            parent = literal.parent
            target = self._param_target(literal, parent, scopes) if parent is not None else None
            if target is None or target.kind == "text":
                continue
            value = encode_param(literal.name, target)
            if target.kind == "bool":
                literal.replace(exp.Boolean(this=bool(value)))
            elif isinstance(value, str):
                literal.replace(exp.Literal.string(value))
            elif value is not None:
                literal.replace(exp.Literal.number(value))

    # outputs and checks

    def _outputs(self, tree: exp.Expr, scopes: Scopes) -> list[OutputColumn]:
        if isinstance(tree, exp.Query):
            select = tree
            while isinstance(select, exp.SetOperation):
                select = select.this
            if not isinstance(select, exp.Select):
                raise refuse(f"{select.key} as a statement")
            self._expand_stars(select, scopes)
            if isinstance(tree, exp.SetOperation):
                for branch in self._set_branches(tree):
                    self._expand_stars(branch, scopes)
            return self._columns(select.selects, scopes)
        return self._returning_outputs(tree, scopes)

    def _returning_outputs(self, tree: exp.Expr, scopes: Scopes) -> list[OutputColumn]:
        returning = tree.args.get("returning")
        if not returning:
            return []
        table = self._target_table(tree)
        # The name the statement knows the target by: its alias when it has one.
        written = self._target_alias(tree)
        target = written.lower()
        items: list[exp.Expr] = []
        for item in returning.expressions:
            star = isinstance(item, exp.Star)
            if isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
                if item.table.lower() != target:
                    raise refuse("RETURNING columns of another table than the one written")
                star = True
            if star:
                items += [
                    exp.column(exp.to_identifier(c, quoted=True), table=written)
                    for c in table.columns
                ]
            else:
                items.append(item)
        returning.set("expressions", items)
        columns = self._columns(items, scopes)  # resolved as written, qualifiers and all
        # SQLite's RETURNING may only name the target table's columns, unqualified.
        for item in items:
            for column in item.find_all(exp.Column):
                if column.table.lower() == target:
                    column.set("table", None)
                elif column.table:
                    raise refuse("RETURNING columns of another table than the one written")
        return columns

    def _target_alias(self, tree: exp.Expr) -> str:
        node = self._target_node(tree)
        assert node is not None
        return node.alias_or_name

    def _check_tables(self, tree: exp.Expr, scopes: Scopes) -> None:
        for table in tree.find_all(exp.Table):
            if isinstance(table.this, exp.Anonymous | exp.Func):
                raise refuse(f"set-returning function {table.this.sql('postgres')} in FROM")
            name = table.name.lower()
            if table.args.get("db") or (
                name not in self.schema.tables and scopes.cte_of(table) is None
            ):
                raise DatabaseError(f'relation "{table.sql("postgres")}" does not exist')

    def _register_dml_scope(self, tree: exp.Expr, scopes: Scopes) -> None:
        if not isinstance(tree, exp.Insert | exp.Update | exp.Delete):
            return
        table = self._target_table(tree)
        columns = [(c.name, c.type) for c in table.columns.values()]
        sources = [Source(self._target_alias(tree).lower(), table, columns)]
        if isinstance(tree, exp.Insert):
            sources.append(Source("excluded", table, columns, qualified_only=True))
        scopes.extra[id(tree)] = sources

    def _set_branches(self, tree: exp.Expr) -> Iterator[exp.Select]:
        if isinstance(tree, exp.SetOperation):
            yield from self._set_branches(tree.this)
            yield from self._set_branches(tree.expression)
        elif isinstance(tree, exp.Select):
            yield tree
        elif isinstance(tree, exp.Subquery):
            yield from self._set_branches(tree.this)

    def _expand_stars(self, select: exp.Select, scopes: Scopes) -> None:
        if not any(
            isinstance(p, exp.Star) or (isinstance(p, exp.Column) and isinstance(p.this, exp.Star))
            for p in select.selects
        ):
            return
        expanded: list[exp.Expr] = []
        for item in select.selects:
            qualifier = item.table.lower() if isinstance(item, exp.Column) else None
            if isinstance(item, exp.Star) or (
                isinstance(item, exp.Column) and isinstance(item.this, exp.Star)
            ):
                sources = [
                    s for s in scopes.sources(select) if not qualifier or s.alias == qualifier
                ]
                if not sources:
                    raise DatabaseError(f'missing FROM-clause entry for table "{qualifier}"')
                for source in sources:
                    expanded += [
                        exp.column(exp.to_identifier(name, quoted=True), table=source.alias)
                        for name, _ in source.columns
                    ]
            else:
                expanded.append(item)
        select.set("expressions", expanded)

    def _columns(self, items: list[exp.Expr], scopes: Scopes) -> list[OutputColumn]:
        columns = []
        for item in items:
            pg_type = scopes.type_of(item)
            inner = item.this if isinstance(item, exp.Alias) else item
            while isinstance(inner, exp.Paren):
                inner = inner.this
            param_index = int(inner.this.name) - 1 if isinstance(inner, exp.Parameter) else None
            if pg_type.kind == "unknown" or (pg_type.kind == "param" and param_index is None):
                raise refuse(
                    f"the result column {item.sql('postgres')!r} whose PostgreSQL type the fake "
                    "cannot tell (add a cast such as ::text)"
                )
            columns.append(OutputColumn(pg_name(item), pg_type, decoder_for(pg_type), param_index))
        return columns

    def _check_types(self, tree: exp.Expr, scopes: Scopes) -> None:
        checks: list[tuple[tuple[type[exp.Expr], ...], Callable[[exp.Expr, Scopes], None]]] = [
            ((exp.Cast,), self._check_cast),
            ((exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod), self._check_arithmetic),
            ((exp.Like, exp.ILike), lambda n, s: self._expect_text(s, n, n.this, n.expression)),
            ((exp.Lower, exp.Upper, exp.Length), lambda n, s: self._expect_text(s, n, n.this)),
            ((*COMPARISONS, exp.In), lambda n, s: self._check_comparable(s, n)),
            ((exp.Concat,), lambda n, s: self._expect_textual(s, "concat()", n.expressions)),
            ((exp.DPipe,), lambda n, s: self._expect_textual(s, "||", [n.this, n.expression])),
            ((exp.Greatest, exp.Least), self._check_greatest),
            ((exp.Round,), self._check_round),
        ]
        for node in tree.walk():
            for classes, check in checks:
                if isinstance(node, classes):
                    check(node, scopes)
                    break

    @staticmethod
    def _check_arithmetic(node: exp.Expr, scopes: Scopes) -> None:
        scopes.type_of(node)  # refuses the operand types it cannot compute with

    @staticmethod
    def _check_cast(node: exp.Expr, scopes: Scopes) -> None:
        assert isinstance(node, exp.Cast)
        target = pg_type_from_datatype(node.to)
        source = scopes.type_of(node.this)
        allowed = _CAST_SOURCES.get(target.kind, set()) if target is not None else set()
        if source.kind not in allowed | {"null", "param"}:
            raise refuse(
                f"casting a {source.kind} value to {node.to.sql('postgres').lower()} "
                "(PostgreSQL's conversion rules)"
            )

    @staticmethod
    def _expect_textual(scopes: Scopes, what: str, operands: list[exp.Expr]) -> None:
        for operand in operands:
            kind = scopes.type_of(operand).kind
            if kind not in {"text", "uuid", "int", "null", "param"}:
                raise refuse(f"{what} with a {kind} value (PostgreSQL's text form of it)")

    @staticmethod
    def _check_greatest(node: exp.Expr, scopes: Scopes) -> None:
        kinds = {scopes.type_of(a).kind for a in [node.this, *node.expressions]}
        kinds -= {"null", "param"}
        if len(kinds) > 1 and not kinds <= {"int", "numeric"}:
            raise refuse(f"{node.key}() of mixed types")

    @staticmethod
    def _check_round(node: exp.Expr, scopes: Scopes) -> None:
        kind = scopes.type_of(node.this).kind
        places = node.args.get("decimals")
        if isinstance(places, exp.Neg):
            places = places.this
        constant = places is None or (isinstance(places, exp.Literal) and places.is_int)
        if kind not in {"int", "numeric", "null"} or not constant:
            raise refuse("round() other than of a numeric to a constant number of places")

    @staticmethod
    def _expect_text(scopes: Scopes, node: exp.Expr, *operands: exp.Expr) -> None:
        for operand in operands:
            kind = scopes.type_of(operand).kind
            if kind not in {"text", "null", "param", "unknown"}:
                what = node.sql_name().lower() if isinstance(node, exp.Func) else node.key
                raise DatabaseError(f"{what} of a {kind} value does not exist in PostgreSQL")

    @staticmethod
    def _check_comparable(scopes: Scopes, node: exp.Expr) -> None:
        sides = [node.this, *(node.expressions if isinstance(node, exp.In) else [node.expression])]
        families = set()
        for side in sides:
            if side is None or (isinstance(side, exp.Literal) and side.is_string):
                continue  # an untyped literal takes the other side's type
            kind = scopes.type_of(side).kind
            if kind not in {"null", "param", "unknown"}:
                families.add(_FAMILIES.get(kind, kind))
        if len(families) > 1:
            raise DatabaseError(
                f"operator does not exist: {' vs '.join(sorted(families))} "
                f"({node.sql('postgres')})"
            )

    def _rewrite_sums(self, tree: exp.Expr, scopes: Scopes) -> None:
        for avg in list(tree.find_all(exp.Avg)):
            if isinstance(avg.this, exp.Distinct):
                raise refuse("avg(DISTINCT ...)")
            kind = scopes.type_of(avg.this).kind
            if kind not in {"int", "numeric", "null"}:
                raise refuse(f"avg() over {kind} values")
            self._refuse_in_arithmetic(avg, "avg()")
            avg.replace(fn("pg_numeric_avg", avg.this))
        for node in list(tree.find_all(exp.Sum)):
            kind = scopes.type_of(node.this).kind
            if kind not in {"int", "numeric", "null"}:
                raise refuse(f"sum() over {kind} values")
            # sum() of numeric, and of bigint, is numeric: added exactly, as PostgreSQL does
            # (SQLite's sum() would give an int, or fail beyond 64 bits).
            if scopes.type_of(node).kind == "numeric":
                node.replace(fn("pg_numeric_sum", node.this))

    def _rewrite_numeric_arithmetic(self, tree: exp.Expr, scopes: Scopes) -> None:
        # SQLite would add doubles (1.1 + 2.2 = 3.3000000000000003); PostgreSQL adds decimals.
        # Integer division and modulo go through functions too: SQLite answers NULL for a
        # division by zero where PostgreSQL raises an error.
        numeric = {
            exp.Add: "pg_numeric_add",
            exp.Sub: "pg_numeric_sub",
            exp.Mul: "pg_numeric_mul",
            exp.Div: "pg_numeric_div",
        }
        integer = {exp.Div: "pg_int_div", exp.Mod: "pg_int_mod"}
        # + - * on integers are range-checked in the result's type, as PostgreSQL does.
        checked = {exp.Add: "pg_int_add", exp.Sub: "pg_int_sub", exp.Mul: "pg_int_mul"}
        bits: dict[int, tuple[int, int]] = {}
        found: list[tuple[exp.Expr, str]] = []
        for node in tree.find_all(exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod):
            kind = scopes.type_of(node).kind
            if isinstance(node.expression, exp.Interval):
                found.append((node, "pg_timestamptz_add"))
            elif kind == "numeric" and type(node) in numeric:
                found.append((node, numeric[type(node)]))
            elif kind == "int" and type(node) in integer:
                found.append((node, integer[type(node)]))
            elif kind == "int" and type(node) in checked:
                found.append((node, checked[type(node)]))
                this, other = scopes.int_width(node.this), scopes.int_width(node.expression)
                # An operand without a type of its own (NULL, an untyped parameter) takes the
                # other one's; 0 left is a width psycopg picks by the value, at run time.
                bits[id(node)] = (
                    this[0] or (0 if this[1] else other[0]),
                    other[0] or (0 if other[1] else this[0]),
                )
        for operation, name in found:
            if name == "pg_numeric_div":
                self._refuse_in_arithmetic(operation, "a numeric quotient")
            right = operation.expression
            if isinstance(right, exp.Interval):
                seconds = float(right.this.name) * INTERVAL_SECONDS[right.text("unit").upper()]
                sign = -1 if isinstance(operation, exp.Sub) else 1
                right = exp.Literal.number(sign * seconds)
            if id(operation) in bits:
                left_bits, right_bits = bits[id(operation)]
                operation.replace(
                    fn(
                        name,
                        operation.this,
                        right,
                        exp.Literal.number(left_bits),
                        exp.Literal.number(right_bits),
                    )
                )
                continue
            operation.replace(fn(name, operation.this, right))

    @staticmethod
    def _refuse_in_arithmetic(node: exp.Expr, what: str) -> None:
        # Such results travel through SQLite as doubles; more arithmetic would lose digits.
        parent = node.parent
        while isinstance(parent, exp.Paren):
            parent = parent.parent
        rewritten = isinstance(parent, exp.Anonymous) and parent.name.startswith(
            ("pg_numeric_", "pg_int_")
        )
        if rewritten or isinstance(
            parent, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod | exp.Neg | exp.Sum | exp.Avg
        ):
            raise refuse(f"arithmetic on {what} (its digits beyond a double's)")

    def _target_table(self, tree: exp.Expr) -> Table:
        target = tree.this
        if isinstance(target, exp.Schema):
            target = target.this
        if not isinstance(target, exp.Table):
            raise refuse(f"{tree.key.upper()} into {target.key}")
        name = target.name.lower()
        table = self.schema.tables.get(name)
        if table is None or target.args.get("db"):
            raise DatabaseError(f'relation "{name}" does not exist')
        return table

    def _check_privileges(self, tree: exp.Expr, scopes: Scopes) -> None:
        if self.admin:
            return
        target: Table | None = None
        if isinstance(tree, exp.Insert | exp.Update | exp.Delete):
            target = self._target_table(tree)
            needed = {exp.Insert: "INSERT", exp.Update: "UPDATE", exp.Delete: "DELETE"}[type(tree)]
            self._require(target.name, needed)
            reads_target = isinstance(tree, exp.Update | exp.Delete) and (
                tree.args.get("where") is not None or tree.args.get("returning") is not None
            )
            if reads_target or (isinstance(tree, exp.Insert) and tree.args.get("returning")):
                self._require(target.name, "SELECT")
            conflict = tree.args.get("conflict")
            if conflict is not None and str(conflict.args.get("action", "")).upper().endswith(
                "UPDATE"
            ):
                self._require(target.name, "UPDATE")
        target_node = self._target_node(tree)
        for table in tree.find_all(exp.Table):
            if table is target_node:
                continue
            name = table.name.lower()
            if name not in self.schema.tables or scopes.cte_of(table) is not None:
                continue
            self._require(name, "SELECT")

    def _require(self, table: str, privilege: str) -> None:
        if privilege not in self.schema.privileges(self.app_role, table):
            raise DatabaseError(f"permission denied for table {table} ({privilege})")

    @staticmethod
    def _target_node(tree: exp.Expr) -> exp.Expr | None:
        node: exp.Expr | None = None
        if isinstance(tree, exp.Insert):
            target = tree.this
            node = target.this if isinstance(target, exp.Schema) else target
        elif isinstance(tree, exp.Update | exp.Delete):
            node = tree.this
        return node

    # routing names to base tables and views

    def _route_tables(self, tree: exp.Expr, scopes: Scopes) -> exp.Expr:
        target_node = self._target_node(tree)
        target = self._target_table(tree) if target_node is not None else None
        # Every name resolved first, as PostgreSQL resolves it; then renamed for SQLite.
        resolved = [(t, scopes.cte_of(t)) for t in tree.find_all(exp.Table)]
        ctes = {id(c): f"{CTE_PREFIX}{n}" for n, c in enumerate(tree.find_all(exp.CTE))}
        for table_node, cte in resolved:
            if cte is not None:
                # Each WITH query gets a name of its own in SQLite, so SQLite cannot resolve
                # it otherwise (a table or view of that name, itself inside its own body).
                _rename(table_node, ctes[id(cte)])
                continue
            name = table_node.name.lower()
            table = self.schema.tables.get(name)
            if table is None:
                continue
            if (table_node is target_node or self.admin) and table.base_name != name:
                _rename(table_node, table.base_name)
        for cte in tree.find_all(exp.CTE):
            cte.args["alias"].set("this", exp.to_identifier(ctes[id(cte)]))
        if not self.admin and isinstance(tree, exp.Update | exp.Delete):
            assert target is not None
            table = target
            if table.rls_enabled:
                alias = tree.this.alias_or_name
                tree.set("where", exp.Where(this=self._using_filter(table, alias, tree)))
        if isinstance(tree, exp.Insert):
            conflict = tree.args.get("conflict")
            if conflict is not None:
                keys = conflict.args.get("conflict_keys") or []
                conflict.set(
                    "conflict_keys", [k.this if isinstance(k, exp.Ordered) else k for k in keys]
                )
                if not self.admin and target is not None and target.rls_enabled:
                    self._check_existing_row_first(conflict, target, self._target_alias(tree))
        return tree

    def _check_existing_row_first(
        self, conflict: exp.Expr, table: Table, alias: str
    ) -> None:
        """Check the existing row of a DO UPDATE against USING before its WHERE.

        PostgreSQL refuses an existing row that fails the policy's USING before it looks at
        DO UPDATE's WHERE; the fake's trigger sees only rows that are updated, so a WHERE
        that is false would tell, by the missing error, what another user's row holds.
        """
        where = conflict.args.get("where")
        if where is None:
            return  # every conflicting row is updated: the trigger checks it
        visible = fn("coalesce", exp.paren(self._using_filter(table, alias, None)), exp.false())
        refused = fn(RLS_REFUSE, exp.Literal.string(table.name))
        checked = exp.Case(ifs=[exp.If(this=visible, true=exp.paren(where.this))], default=refused)
        conflict.set("where", exp.Where(this=checked))

    def _using_filter(self, table: Table, alias: str, tree: exp.Expr | None) -> exp.Expr:
        usings = [p.using for p in table.policies.values() if p.using is not None]
        policy: exp.Expr = (
            exp.or_(*[exp.paren(u.copy()) for u in usings]) if usings else exp.false()
        )
        for column in policy.find_all(exp.Column):
            if not column.table:
                column.set("table", exp.to_identifier(alias))
        where = tree.args.get("where") if tree is not None else None
        if where is None:
            return policy
        # The policy first: SQLite checks a row's terms in order, so the statement's own
        # (which may fail on a value, as 1 / 0 does) only ever meet the user's rows.
        return exp.and_(exp.paren(policy), exp.paren(where.this))
