"""PostgreSQL functions and operators rewritten to the ones the fake registers in SQLite.

Shared by the statement translator and the DDL (column defaults, CHECKs, policies). Each
rewrite keeps PostgreSQL's meaning: ``now()`` frozen per transaction, LIKE case-sensitive with
backslash escapes, casts that validate, ``= ANY(%s)`` over a JSON-encoded list parameter.
"""

from __future__ import annotations

from sqlglot import exp

from crm_infra.fakes.sql.errors import refuse
from crm_infra.fakes.sql.types import pg_type_from_datatype

__all__ = ["fn", "rewrite_expression"]


def fn(name: str, *args: exp.Expr) -> exp.Anonymous:
    """Return a call of the SQLite function ``name`` (registered by the fake)."""
    return exp.Anonymous(this=name, expressions=list(args))


def rewrite_expression(node: exp.Expr, *, copy: bool = True) -> exp.Expr:
    """Rewrite PostgreSQL functions and operators in ``node`` to the fake's SQLite versions."""
    root = node.copy() if copy else node
    # Bottom-up, so a rewritten node already holds rewritten children (sqlglot's own
    # transform does not descend into a node it has just replaced).
    for current in reversed(list(root.walk(bfs=False))):
        new = _rewrite_node(current)
        if new is not current:
            if current is root:
                root = new
            else:
                current.replace(new)
    return root


def _rewrite_node(node: exp.Expr) -> exp.Expr:  # noqa: PLR0911, PLR0912 (one per construct)
    if isinstance(node, exp.Parameter):
        return exp.Var(this=f"?{node.this.name}")
    if isinstance(node, exp.CurrentTimestamp):
        return fn("pg_now")
    if isinstance(node, exp.Uuid):
        return fn("gen_random_uuid")
    if isinstance(node, exp.Cast):
        target = pg_type_from_datatype(node.to)
        kind = target.kind if target else "?"
        return fn(f"pg_cast_{kind}", node.this)
    if isinstance(node, exp.Escape) and isinstance(node.this, exp.Like | exp.ILike):
        return _like(node.this, node.expression)
    if isinstance(node, exp.Like | exp.ILike) and not isinstance(node.parent, exp.Escape):
        return _like(node, None)
    if isinstance(node, exp.Lower):
        return fn("pg_lower", node.this)
    if isinstance(node, exp.Upper):
        return fn("pg_upper", node.this)
    if isinstance(node, exp.Anonymous) and node.name.lower() == "current_setting":
        return fn("current_setting", *node.expressions)
    if isinstance(node, exp.Greatest | exp.Least):
        name = "pg_greatest" if isinstance(node, exp.Greatest) else "pg_least"
        return fn(name, node.this, *node.expressions)
    if isinstance(node, exp.Concat):
        return fn("pg_concat", *node.expressions)
    if isinstance(node, exp.Round):
        places = node.args.get("decimals")
        return fn("pg_round", node.this, places if places is not None else exp.Literal.number(0))
    if isinstance(node, exp.Limit | exp.Offset) and node.expression is not None:
        # PostgreSQL: NULL means no limit (or offset 0), a negative count is an error.
        name = "pg_limit" if isinstance(node, exp.Limit) else "pg_offset"
        node.set("expression", fn(name, node.expression))
        return node
    if isinstance(node, exp.EQ) and isinstance(node.expression, exp.Any):
        return _rewrite_any(node.this, node.expression, negate=False)
    if isinstance(node, exp.NEQ) and isinstance(node.expression, exp.All):
        return _rewrite_any(node.this, node.expression, negate=True)
    return node


def _like(like: exp.Like | exp.ILike, escape: exp.Expr | None) -> exp.Expr:
    name = "pg_ilike" if isinstance(like, exp.ILike) else "pg_like"
    args = [like.this, like.expression] + ([escape] if escape is not None else [])
    call = fn(name, *args)
    return exp.Not(this=call) if like.args.get("negate") else call


def _rewrite_any(
    left: exp.Expr, any_node: exp.Any | exp.All, *, negate: bool
) -> exp.Expr:
    inner = any_node.this.unnest() if isinstance(any_node.this, exp.Paren) else any_node.this
    if isinstance(inner, exp.Parameter):
        inner = exp.Var(this=f"?{inner.this.name}")
    if isinstance(inner, exp.Var) and inner.name.startswith("?"):
        # The list parameter is bound as a JSON array (see encode_param(array=True)).
        select = exp.select("value").from_(exp.Table(this=fn("json_each", inner)))
        rewritten: exp.Expr = exp.In(this=left, query=exp.Subquery(this=select))
    elif isinstance(inner, exp.Array):
        rewritten = exp.In(this=left, expressions=list(inner.expressions))
    else:
        raise refuse("= ANY(...) / <> ALL(...) over anything but a list parameter or ARRAY[...]")
    return exp.Not(this=rewritten) if negate else rewritten
