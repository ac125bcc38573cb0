"""Checks on the text of user-scoped SQL, made once per distinct text before any I/O.

:func:`changes_user_identity` finds SQL that would set the RLS user or switch roles;
:func:`leaves_session_state` finds SQL that would leave something on the pooled connection for
the next user. Both guard against mistakes in trusted domain SQL; neither is a sandbox.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "DOLLAR_OPEN",
    "LITERAL_OR_COMMENT",
    "QUOTED_NAME",
    "changes_user_identity",
    "leaves_session_state",
]

# String literals (plain and E'...') and comments. An opener left unclosed runs to the end of
# the text (as the server would read it), which also keeps a scan linear on hostile text.
LITERAL_OR_COMMENT = (
    r"""\b[Ee]'(?:[^'\\]|\\.|'')*(?:'|\Z)|'(?:[^']|'')*(?:'|\Z)|--[^\n]*|/\*.*?(?:\*/|\Z)"""
)
_QUOTED = r'(?:[^"]|"")*'
QUOTED_NAME = rf'"{_QUOTED}(?:"|\Z)'
# A dollar quote opens only where an identifier cannot go on (``cost$usd$`` is a name); close
# it with ``(?P=tag)``.
DOLLAR_OPEN = r"(?<![A-Za-z0-9_$])(?P<tag>\$[A-Za-z_][A-Za-z0-9_]*\$|\$\$)"


# What would let user-scoped SQL act as someone else: setting the RLS user itself, or taking
# on another role. (Reading current_setting('app.current_user_id', true) is fine.)
_STATEMENT_START = r"(?:^|;|\b(?:begin|then|else|elsif|loop)\b)\s*"
_SET = r"\b(?:set|reset)\s+(?:(?:session|local)\s+)?"
_IDENTITY_CHANGE = re.compile(
    r"\bset_config\s*\("
    # The RLS user or the session authorization, set anywhere (also the SET clause of a
    # function or a role): no column goes by those names.
    rf"|{_SET}(?:app\s*\.\s*current_user_id|session\s+authorization\b)"
    # SET ROLE as a statement, never the SET clause of an UPDATE of a column named role.
    rf"|{_STATEMENT_START}{_SET}role\b",
    re.IGNORECASE,
)
# In DDL (CREATE FUNCTION ... SET role = x, ALTER ROLE ... SET ROLE x) a role set anywhere counts.
_DDL = re.compile(r"\s*(?:create|alter)\b", re.IGNORECASE)
_SET_ROLE = re.compile(rf"{_SET}role\b", re.IGNORECASE)


# For the checks: string literals and comments go; a quoted identifier counts as its name
# ("set_config" calls set_config); a dollar-quoted body (a DO block, a function body) is code,
# so it is read like the rest.
_TOKENS = re.compile(
    rf'{LITERAL_OR_COMMENT}|"(?P<name>{_QUOTED})(?:"|\Z)|{DOLLAR_OPEN}(?P<body>.*?)(?:(?P=tag)|\Z)',
    re.DOTALL,
)
_MAX_DOLLAR_NESTING = 16
_DOLLAR_TAG = re.compile(DOLLAR_OPEN)


def _identity_code(
    query: str, depth: int = 0, *, bodies: bool = True, names: bool = True
) -> str:
    """``query`` with literals and comments blanked and quoted names unquoted. With ``bodies``
    each dollar-quoted body is read as code of its own (statements split off by ``;``);
    without, a body is blanked, so the statement it sits in stays whole. Without ``names`` a
    quoted name becomes a neutral ``_`` (``"h;x"`` holds no statement break)."""

    def replace(match: re.Match[str]) -> str:
        identifier, body = match.group("name"), match.group("body")
        if identifier is not None:
            return identifier.replace('""', '"') if names else " _ "
        if body is not None and bodies:
            if depth >= _MAX_DOLLAR_NESTING:  # deeper than real code nests: all of it is code
                inner = _DOLLAR_TAG.sub(" ; ", body)
            else:
                inner = _identity_code(body, depth + 1, names=names)
            return f" ; {inner} ; "
        return " "

    return _TOKENS.sub(replace, query)


def _ddl_sets_role(code: str) -> bool:
    return any(
        _DDL.match(statement) is not None and _SET_ROLE.search(statement) is not None
        for statement in code.split(";")
    )


@functools.lru_cache(maxsize=4096)
def changes_user_identity(query: str) -> bool:
    """Return True when ``query`` would set the RLS user or switch roles (outside literals).

    A guard against mistakes in trusted SQL, not a sandbox: SQL built to hide a call (text
    run by ``query_to_xml``, say) is not found.
    """
    code = _identity_code(query)
    if _IDENTITY_CHANGE.search(code) is not None or _ddl_sets_role(code):
        return True
    # CREATE FUNCTION ... AS $$...$$ LANGUAGE sql SET role = x: the clause after the body.
    return _ddl_sets_role(_identity_code(query, bodies=False))


# What user-scoped SQL would leave behind on the pooled connection for the next user: a
# temporary object or a cursor WITH HOLD (no row-level security; they outlive the call), a
# session-level setting, a LISTEN, a session-level advisory lock. Dynamic SQL gets past any
# of this; the start-up role check refuses a role that may create temporary tables.
_SESSION_STATE = re.compile(
    rf"{_STATEMENT_START}create\s+(?:(?:global|local)\s+)?(?:temp|temporary)\s"
    rf"|{_STATEMENT_START}create\s+(?:or\s+replace\s+)?(?:table|view|sequence)\s+pg_temp\s*\."
    rf"|{_STATEMENT_START}create\s+or\s+replace\s+(?:temp|temporary)\s"
    rf"|{_STATEMENT_START}select\b[^;]*\binto\s+(?:(?:temp|temporary)\b|pg_temp\s*\.)"
    # The client's own prepared statements live on the connection: another user's call
    # must find them as the client left them.
    rf"|{_STATEMENT_START}(?:prepare|deallocate)\b"
    rf"|\bupdate\s+(?:pg_catalog\s*\.\s*)?pg_settings\b"
    rf"|{_STATEMENT_START}alter\s+(?:role|user|database)\b[^;]*\b(?:set|reset)\b"
    rf"|{_STATEMENT_START}declare\b[^;]*?\bwith\s+hold\b"
    rf"|{_STATEMENT_START}listen\b"
    rf"|\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\("
    rf"|{_STATEMENT_START}set\s+(?!local\b)(?!transaction\b)(?!constraints\b)",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=4096)
def leaves_session_state(query: str) -> bool:
    """Return True when ``query`` would create temporary objects or change a session-level
    setting (``SET x``, not ``SET LOCAL x``), which the next borrower of the connection sees."""
    return _SESSION_STATE.search(_identity_code(query, names=False)) is not None
