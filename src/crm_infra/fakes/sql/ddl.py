"""SQLite DDL for a parsed schema: base tables, filtering views and WITH CHECK triggers.

A table under row-level security becomes a base table ``_t_<name>`` holding the rows, and a
view ``<name>`` over it filtered by the policies' USING expressions: every read through the
user path goes through the view, so a missed rewrite can only fail, never leak. BEFORE triggers
on the base table refuse rows that fail WITH CHECK (and, for the existing row of an upsert's
DO UPDATE, USING), but only while the user path is active; the admin path bypasses them.
"""

from __future__ import annotations

from sqlglot import exp

from crm_infra.fakes.sql.rewrite import rewrite_expression
from crm_infra.fakes.sql.schema import Schema, Table
from crm_infra.fakes.sql.sqlite import quote, to_sqlite

__all__ = ["RLS_ERROR_PREFIX", "TYPE_CHECK_PREFIX", "internal_objects", "schema_ddl"]

RLS_ERROR_PREFIX = "crm_fake_rls:"
TYPE_CHECK_PREFIX = "crm_fake_type_"
# (name suffix, event, row, policy expression): WITH CHECK on new rows; USING on the row an
# upsert's DO UPDATE would change.
_TRIGGERS = (
    ("ins", "INSERT", "NEW", "check"),
    ("upd_new", "UPDATE", "NEW", "check"),
    ("upd_old", "UPDATE", "OLD", "using"),
)


def _sql(node: exp.Expr) -> str:
    return to_sqlite(node)


def _trigger_name(table: Table, suffix: str) -> str:
    return f"_rls_{table.name}_{suffix}"


def _type_check_name(column: str) -> str:
    return f"{TYPE_CHECK_PREFIX}varchar_{column}"


def internal_objects(schema: Schema) -> dict[str, str]:
    """Return the names of what :func:`schema_ddl` creates that PostgreSQL has no such thing
    as (lower case), each with what it is: the base tables behind the views, the triggers,
    the constraints."""
    found: dict[str, str] = {}
    for table in schema.tables.values():
        if table.rls_enabled:
            found[table.base_name.lower()] = (
                f"its table of every user's rows behind the view {table.name}"
            )
            for suffix, *_ in _TRIGGERS:
                found[_trigger_name(table, suffix).lower()] = "one of its triggers"
        for column in table.columns.values():
            if column.type.kind == "text" and column.type.length is not None:
                found[_type_check_name(column.name).lower()] = "one of its constraints"
    return found


def _table_ddl(schema: Schema, table: Table) -> str:  # noqa: PLR0912 (one pass per node kind)
    create = table.create.copy()
    create.set("exists", False)
    columns_node = create.this
    columns_node.this.set("this", exp.to_identifier(table.base_name))
    for node in list(columns_node.find_all(exp.Reference)):
        ref = node.this
        target = ref.this if isinstance(ref, exp.Schema) else ref
        if isinstance(target, exp.Table) and target.name.lower() in schema.tables:
            target.set("this", exp.to_identifier(schema.tables[target.name.lower()].base_name))
    extra: list[exp.Expr] = []
    for item in columns_node.expressions:
        if not isinstance(item, exp.ColumnDef):
            continue
        column = table.columns[item.name.lower()]
        item.set("kind", exp.DataType.build(column.type.sqlite_decl))
        for constraint in item.args.get("constraints") or []:
            kind = constraint.kind
            if isinstance(kind, exp.DefaultColumnConstraint):
                kind.set("this", exp.paren(rewrite_expression(kind.this)))
            elif isinstance(kind, exp.CheckColumnConstraint):
                kind.set("this", rewrite_expression(kind.this))
        if column.type.kind == "text" and column.type.length is not None:
            extra.append(
                exp.Constraint(
                    this=exp.to_identifier(_type_check_name(column.name)),
                    expressions=[
                        exp.CheckColumnConstraint(
                            this=exp.LTE(
                                this=exp.Length(this=exp.column(column.name)),
                                expression=exp.Literal.number(column.type.length),
                            )
                        )
                    ],
                )
            )
    for item in columns_node.expressions:
        if isinstance(item, exp.CheckColumnConstraint):
            item.set("this", rewrite_expression(item.this))
        elif isinstance(item, exp.Constraint):
            for sub in item.expressions:
                if isinstance(sub, exp.CheckColumnConstraint):
                    sub.set("this", rewrite_expression(sub.this))
    columns_node.set("expressions", [*columns_node.expressions, *extra])
    return _sql(create)


def _index_ddl(table: Table, index: exp.Create) -> str:
    index = index.copy()
    index.set("exists", False)
    index_node = index.this
    index_node.args["table"].set("this", exp.to_identifier(table.base_name))
    for ordered in list(index_node.find_all(exp.Ordered)):
        ordered.set("nulls_first", None)
    return _sql(index).replace(" NULLS LAST", "").replace(" NULLS FIRST", "")


def _qualified(expression: exp.Expr, row: str) -> str:
    node = rewrite_expression(expression)
    for column in node.find_all(exp.Column):
        column.set("table", exp.to_identifier(row))
    return _sql(node)


def _policy_sql(table: Table, which: str, row: str | None) -> str:
    parts = []
    for policy in table.policies.values():
        expression = policy.using if which == "using" else policy.check
        if expression is None:
            continue
        text = _qualified(expression, row) if row else _sql(rewrite_expression(expression))
        parts.append(f"({text})")
    return " OR ".join(parts) if parts else "0"


def _rls_ddl(table: Table) -> list[str]:
    base, name = table.base_name, table.name
    using = _policy_sql(table, "using", None)
    statements = [f"CREATE VIEW {quote(name)} AS SELECT * FROM {quote(base)} WHERE {using}"]
    for suffix, event, row, which in _TRIGGERS:
        condition = _policy_sql(table, which, row)
        statements.append(
            f"CREATE TRIGGER {quote(_trigger_name(table, suffix))} BEFORE {event} ON {quote(base)} "
            f"WHEN crm_rls_active() AND NOT COALESCE(({condition}), 0) "
            f"BEGIN SELECT RAISE(ABORT, '{RLS_ERROR_PREFIX}{name}:{event.lower()}'); END"
        )
    return statements


def schema_ddl(schema: Schema) -> list[str]:
    """Return the SQLite statements that build ``schema``, in order."""
    statements: list[str] = []
    for table in schema.tables.values():
        statements.append(_table_ddl(schema, table))
        statements += [_index_ddl(table, index) for index in table.indexes]
        if table.rls_enabled:
            statements += _rls_ddl(table)
    return statements
