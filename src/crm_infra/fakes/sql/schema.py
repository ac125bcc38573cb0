"""The schema as the ``sql/`` files declare it: tables, columns, RLS policies and grants.

Only what the fake can reproduce is accepted; any other statement is refused with its file and
text, so a schema change never silently diverges from PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from crm_infra.errors import UnsupportedQueryError
from crm_infra.fakes.sql.types import PgType, pg_type_from_datatype

__all__ = ["Column", "Policy", "Schema", "Table", "load_schema", "split_statements"]

PRIVILEGES = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
_IGNORED_PRIVILEGES = frozenset({"TRUNCATE", "REFERENCES", "TRIGGER"})


@attrs.frozen
class Column:
    """One column: its name and type."""

    name: str
    type: PgType


@attrs.define
class Policy:
    """One permissive policy FOR ALL: USING and WITH CHECK as parsed PostgreSQL expressions."""

    name: str
    using: exp.Expr | None
    check: exp.Expr | None


@attrs.define
class Table:
    """One table, with what the SQLite DDL needs and what row-level security declares."""

    name: str
    columns: dict[str, Column]
    create: exp.Create
    indexes: list[exp.Create] = attrs.field(factory=list)
    rls_enabled: bool = False
    policies: dict[str, Policy] = attrs.field(factory=dict)

    @property
    def base_name(self) -> str:
        """Return the name of the SQLite table holding the rows (a view takes the real name)."""
        return f"_t_{self.name}" if self.rls_enabled else self.name


@attrs.define
class Schema:
    """Every table, and the table privileges granted to each role (``public`` for PUBLIC)."""

    tables: dict[str, Table] = attrs.field(factory=dict)
    grants: dict[tuple[str, str], set[str]] = attrs.field(factory=dict)

    def privileges(self, role: str, table: str) -> set[str]:
        """Return the privileges ``role`` has on ``table``, PUBLIC's included."""
        return self.grants.get((role, table), set()) | self.grants.get(("public", table), set())

    def column_types(self) -> dict[str, dict[str, str]]:
        """Return the schema in the form sqlglot's optimizer takes (PostgreSQL type names)."""
        names = {
            "uuid": "UUID",
            "text": "TEXT",
            "int": "BIGINT",
            "bool": "BOOLEAN",
            "numeric": "DECIMAL",
            "float": "DOUBLE",
            "timestamptz": "TIMESTAMPTZ",
            "date": "DATE",
        }
        return {
            t.name: {c.name: names[c.type.kind] for c in t.columns.values()}
            for t in self.tables.values()
        }


def split_statements(text: str) -> list[str]:
    """Split SQL text on top-level semicolons, skipping comments, quotes and dollar quotes."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            current.append(" ")
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            current.append(" ")
            continue
        if ch in "'\"":
            end = i + 1
            while end < n:
                if text[end] == ch:
                    if end + 1 < n and text[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            current.append(text[i : end + 1])
            i = end + 1
            continue
        dollar = re.match(r"\$[A-Za-z_]*\$", text[i:])
        if dollar:
            tag = dollar.group(0)
            end = text.find(tag, i + len(tag))
            end = n if end < 0 else end + len(tag)
            current.append(text[i:end])
            i = end
            continue
        if ch == ";":
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    statements.append("".join(current).strip())
    return [s for s in statements if s]


def _norm(statement: str) -> str:
    return " ".join(statement.split())


def _refuse(where: str, statement: str, why: str) -> UnsupportedQueryError:
    shown = _norm(statement)
    if len(shown) > 160:
        shown = shown[:157] + "..."
    return UnsupportedQueryError(
        f"{where}: the in-memory fake cannot build this schema statement ({why}): {shown!r}; "
        "extend crm_infra.fakes or test against PostgreSQL"
    )


_IGNORED = re.compile(
    r"^(SET\s+ROLE\b|RESET\s+ROLE$|BEGIN$|COMMIT$|START\s+TRANSACTION$|COMMENT\s+ON\b|"
    r"CREATE\s+EXTENSION\s+IF\s+NOT\s+EXISTS\s+\"?(pgcrypto|uuid-ossp)\"?$|"
    # Ownership and schema usage: the fake has one schema and no owners to check.
    r"ALTER\s+TABLE\s+(IF\s+EXISTS\s+)?[\w.]+\s+OWNER\s+TO\s+\w+$|"
    r"(GRANT|REVOKE)\s+[\w\s,]+\s+ON\s+SCHEMA\s+\w+\s+(TO|FROM)\s+[\w\s,]+$)",
    re.IGNORECASE,
)
_CREATE = re.compile(r"^CREATE\s+(TABLE|INDEX|UNIQUE\s+INDEX)\b", re.IGNORECASE)
_ADD_COLUMN = re.compile(r"^ALTER\s+TABLE\s+.*\s+ADD\s+", re.IGNORECASE)
_ALTER_RLS = re.compile(
    r"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?:public\.)?(\w+)\s+"
    r"(ENABLE|FORCE|DISABLE|NO\s+FORCE)\s+ROW\s+LEVEL\s+SECURITY$",
    re.IGNORECASE,
)
_CREATE_POLICY = re.compile(
    r"^CREATE\s+POLICY\s+(\w+)\s+ON\s+(?:public\.)?(\w+)"
    r"(?:\s+AS\s+(PERMISSIVE|RESTRICTIVE))?(?:\s+FOR\s+(\w+))?(?:\s+TO\s+([\w\s,]+?))?"
    r"(\s+(?:USING|WITH\s+CHECK)\s*\(.*)?$",
    re.IGNORECASE | re.DOTALL,
)
_DROP_POLICY = re.compile(
    r"^DROP\s+POLICY\s+(IF\s+EXISTS\s+)?(\w+)\s+ON\s+(?:public\.)?(\w+)$", re.IGNORECASE
)
_GRANT = re.compile(
    r"^(GRANT|REVOKE)\s+([\w\s,]+?)\s+ON\s+(?:TABLE\s+)?([\w\s,.]+?)\s+(TO|FROM)\s+([\w\s,]+)$",
    re.IGNORECASE,
)


def _balanced(text: str, start: int) -> int:
    """Return the index just past the parenthesis group opening at ``start``."""
    depth = 0
    quoted = False
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError("unbalanced parentheses")


def _policy_clauses(text: str) -> dict[str, str]:
    clauses: dict[str, str] = {}
    rest = text.strip()
    while rest:
        m = re.match(r"^(USING|WITH\s+CHECK)\s*\(", rest, re.IGNORECASE)
        if not m:
            raise ValueError(f"unexpected policy text {rest[:40]!r}")
        key = "check" if m.group(1).upper().startswith("WITH") else "using"
        open_at = m.end() - 1
        close_at = _balanced(rest, open_at)
        clauses[key] = rest[open_at + 1 : close_at - 1]
        rest = rest[close_at:].strip()
    return clauses


class _Loader:
    def __init__(self) -> None:
        self.schema = Schema()

    def load(self, where: str, statement: str) -> None:
        text = _norm(statement)
        handlers: list[tuple[re.Pattern[str], Callable[[str, str, re.Match[str]], None]]] = [
            (_IGNORED, lambda *_: None),
            (_ALTER_RLS, self._alter_rls),
            (_CREATE_POLICY, self._create_policy),
            (_DROP_POLICY, self._drop_policy),
            (_GRANT, self._grant),
            (_CREATE, lambda w, s, _: self._create(w, s)),
            (_ADD_COLUMN, lambda w, s, _: self._add_columns(w, s)),
        ]
        for pattern, handle in handlers:
            if m := pattern.match(text):
                handle(where, statement, m)
                return
        raise _refuse(where, statement, "statement not understood")

    def _drop_policy(self, where: str, statement: str, m: re.Match[str]) -> None:
        table = self._table(where, statement, m.group(3).lower())
        name = m.group(2).lower()
        if name not in table.policies and not m.group(1):
            raise _refuse(where, statement, f"policy {name} does not exist")
        table.policies.pop(name, None)

    def _table(self, where: str, statement: str, name: str) -> Table:
        if name not in self.schema.tables:
            raise _refuse(where, statement, f"table {name} does not exist")
        return self.schema.tables[name]

    def _alter_rls(self, where: str, statement: str, m: re.Match[str]) -> None:
        table = self._table(where, statement, m.group(1).lower())
        action = m.group(2).upper()
        if action == "ENABLE":
            table.rls_enabled = True
        elif action == "DISABLE":
            table.rls_enabled = False
        # FORCE / NO FORCE bind the table owner; no user-facing role owns a table, and the
        # admin path bypasses RLS anyway, so for the fake's two paths they change nothing.

    def _create_policy(self, where: str, statement: str, m: re.Match[str]) -> None:
        name, table_name = m.group(1).lower(), m.group(2).lower()
        table = self._table(where, statement, table_name)
        if m.group(3) and m.group(3).upper() != "PERMISSIVE":
            raise _refuse(where, statement, "only permissive policies are supported")
        if m.group(4) and m.group(4).upper() != "ALL":
            raise _refuse(where, statement, "only policies FOR ALL are supported")
        roles = {r.strip().lower() for r in (m.group(5) or "public").split(",")}
        if not roles <= {"public", "crm_app"}:
            raise _refuse(where, statement, "only policies TO PUBLIC or crm_app are supported")
        try:
            clauses = _policy_clauses(m.group(6) or "")
            using, check = (
                sqlglot.parse_one(clauses[key], read="postgres") if key in clauses else None
                for key in ("using", "check")
            )
        except (ValueError, ParseError) as exc:
            raise _refuse(where, statement, f"cannot parse the policy: {exc}") from None
        if name in table.policies:
            raise _refuse(where, statement, f"policy {name} already exists")
        # PostgreSQL uses USING as WITH CHECK when the policy has no WITH CHECK.
        table.policies[name] = Policy(name, using, check if check is not None else using)

    def _grant(self, where: str, statement: str, m: re.Match[str]) -> None:
        verb = m.group(1).upper()
        privileges = {p.strip().upper() for p in m.group(2).split(",")}
        if privileges & {"ALL", "ALL PRIVILEGES"}:
            privileges = set(PRIVILEGES)
        unknown = privileges - PRIVILEGES - _IGNORED_PRIVILEGES
        if unknown or any("(" in p for p in privileges):
            raise _refuse(where, statement, f"privileges {sorted(unknown)} not modelled")
        tables = [t.strip().lower().removeprefix("public.") for t in m.group(3).split(",")]
        if any(t.startswith(("all tables", "schema", "sequence", "function")) for t in tables):
            raise _refuse(where, statement, "only table grants are modelled")
        roles = [r.strip().lower() for r in m.group(5).split(",")]
        if any(r.upper().startswith(("WITH", "GRANTED")) or " " in r for r in roles):
            raise _refuse(where, statement, "grant options are not modelled")
        for table in tables:
            self._table(where, statement, table)
            for role in roles:
                held = self.schema.grants.setdefault((role, table), set())
                if verb == "GRANT":
                    held |= privileges & PRIVILEGES
                else:
                    held -= privileges

    def _create(self, where: str, statement: str) -> None:
        try:
            parsed = sqlglot.parse_one(statement, read="postgres")
        except ParseError as exc:
            raise _refuse(where, statement, f"cannot parse: {exc}") from None
        if not isinstance(parsed, exp.Create):
            raise _refuse(where, statement, "statement not understood")
        kind = str(parsed.args.get("kind", "")).upper()
        if kind == "TABLE":
            self._create_table(where, statement, parsed)
        elif kind == "INDEX":
            index = parsed.this
            table_name = index.args["table"].name.lower() if isinstance(index, exp.Index) else ""
            self._table(where, statement, table_name).indexes.append(parsed)
        else:
            raise _refuse(where, statement, f"CREATE {kind} not understood")

    def _add_columns(self, where: str, statement: str) -> None:
        try:
            parsed = sqlglot.parse_one(statement, read="postgres")
        except ParseError as exc:
            raise _refuse(where, statement, f"cannot parse: {exc}") from None
        actions = parsed.args.get("actions") or [] if isinstance(parsed, exp.Alter) else []
        if not actions or not all(isinstance(a, exp.ColumnDef) for a in actions):
            raise _refuse(where, statement, "only ALTER TABLE ... ADD COLUMN is understood")
        table = self._table(where, statement, parsed.this.name.lower())
        for column_def in actions:
            name = column_def.name.lower()
            if name in table.columns:
                if column_def.args.get("exists"):
                    continue
                raise _refuse(where, statement, f"column {table.name}.{name} already exists")
            column_def.set("exists", False)
            table.columns[name] = self._column(where, statement, table.name, column_def)
            # Columns go before the table constraints, as in a CREATE TABLE.
            items = table.create.this.expressions
            last = max((i for i, e in enumerate(items) if isinstance(e, exp.ColumnDef)), default=-1)
            items = [*items[: last + 1], column_def, *items[last + 1 :]]
            table.create.this.set("expressions", items)

    def _column(
        self, where: str, statement: str, table: str, item: exp.ColumnDef
    ) -> Column:
        kind = item.args.get("kind")
        pg_type = pg_type_from_datatype(kind) if isinstance(kind, exp.DataType) else None
        if pg_type is None:
            raise _refuse(where, statement, f"column {table}.{item.name} has type {kind}")
        for constraint in item.args.get("constraints") or []:
            if not isinstance(
                constraint.kind,
                exp.NotNullColumnConstraint
                | exp.PrimaryKeyColumnConstraint
                | exp.UniqueColumnConstraint
                | exp.DefaultColumnConstraint
                | exp.CheckColumnConstraint
                | exp.Reference,
            ):
                what = f"column constraint {constraint.kind.key} on {table}.{item.name}"
                raise _refuse(where, statement, what)
        return Column(item.name.lower(), pg_type)

    def _create_table(self, where: str, statement: str, parsed: exp.Create) -> None:
        schema_node = parsed.this
        if not isinstance(schema_node, exp.Schema):
            raise _refuse(where, statement, "CREATE TABLE without a column list")
        name = schema_node.this.name.lower()
        if name in self.schema.tables:
            if parsed.args.get("exists"):
                return
            raise _refuse(where, statement, f"table {name} already exists")
        columns: dict[str, Column] = {}
        for item in schema_node.expressions:
            if isinstance(item, exp.ColumnDef):
                columns[item.name.lower()] = self._column(where, statement, name, item)
            elif not isinstance(
                item,
                exp.UniqueColumnConstraint
                | exp.PrimaryKey
                | exp.ForeignKey
                | exp.CheckColumnConstraint
                | exp.Constraint,
            ):
                raise _refuse(where, statement, f"table element {item.key} in {name}")
        self.schema.tables[name] = Table(name, columns, parsed)


def load_schema(files: Iterable[Path]) -> Schema:
    """Parse the numbered schema files, in order, into a :class:`Schema`.

    Raises:
        UnsupportedQueryError: a statement the fake cannot reproduce, named with its file.
    """
    loader = _Loader()
    for path in files:
        for statement in split_statements(path.read_text(encoding="utf-8")):
            loader.load(path.name, statement)
    return loader.schema
