"""Placeholders as psycopg reads them: ``%s``, ``%(name)s`` and ``%%``, anywhere in the text.

Shared by ``PostgresClient`` (which sends the ``$n`` text and the values as protocol
parameters) and the in-memory fake, so both accept and refuse the same placeholders with the
same errors as psycopg. psycopg does not look inside string literals either, so ``'100%'``
needs ``%%`` on both backends. The query is rewritten to PostgreSQL's own ``$1``, ``$2``...
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from crm_infra.errors import DatabaseError

__all__ = [
    "ClientSideError",
    "ParamsShapeError",
    "SplitQuery",
    "bind_order",
    "split_placeholders",
    "verbatim",
]

_PLACEHOLDER = re.compile(r"%(?:\((?P<name>[^)]*)\))?(?P<fmt>.?)", re.DOTALL)


class ClientSideError(DatabaseError):
    """Placeholders or parameters psycopg refuses before sending anything.

    ``PostgresClient`` treats psycopg's refusal like a failed statement: inside
    ``transaction()`` it aborts the transaction (or the savepoint it is in).
    """


class ParamsShapeError(ClientSideError, TypeError):
    """Parameters of the wrong kind for the placeholders (a str, a mapping for ``%s``...).

    psycopg raises ``TypeError`` for these, which ``PostgresClient`` passes through without
    aborting the transaction; so is this error a ``TypeError`` that leaves it going on.
    """


@attrs.frozen
class SplitQuery:
    """A query with psycopg placeholders replaced by ``$n``, and what each ``$n`` takes."""

    text: str
    keys: tuple[int | str, ...]  # for $1, $2...: a position in the sequence, or a mapping key
    named: bool
    count: int  # placeholders in the original text (a name used twice counts once per use)


def verbatim(query: str) -> SplitQuery:
    """Return ``query`` as sent without parameters: no placeholder processing, ``%%`` stays."""
    return SplitQuery(query, (), named=False, count=0)


@functools.lru_cache(maxsize=4096)  # once per distinct text, not per call
def split_placeholders(query: str, *, spaced: bool = False) -> SplitQuery:
    """Rewrite psycopg placeholders to ``$n``, as psycopg itself validates them.

    Args:
        query: the caller's SQL.
        spaced: put a space after each ``$n`` (sqlglot cannot tokenize ``$1,``); the text
            PostgreSQL gets has none, exactly as psycopg writes it.

    Raises:
        ClientSideError: a malformed or mixed placeholder (psycopg's ProgrammingError).
    """
    tail = " " if spaced else ""
    out: list[str] = []
    keys: list[int | str] = []
    name_slot: dict[str, int] = {}
    kinds: set[str] = set()
    count = 0
    last = 0
    for match in _PLACEHOLDER.finditer(query):
        out.append(query[last : match.start()])
        last = match.end()
        name, fmt = match.group("name"), match.group("fmt")
        if fmt == "%" and name is None:
            out.append("%")
            continue
        if fmt == "":
            raise ClientSideError(f"incomplete placeholder: {match.group(0)!r}")
        if fmt not in "sbt":
            raise ClientSideError(
                f"only '%s', '%b', '%t' are allowed as placeholders, got {match.group(0)!r}"
            )
        count += 1
        if name is None:
            kinds.add("positional")
            keys.append(len(keys))
            out.append(f"${len(keys)}{tail}")
        else:
            kinds.add("named")
            if name not in name_slot:
                keys.append(name)
                name_slot[name] = len(keys)
            out.append(f"${name_slot[name]}{tail}")
    out.append(query[last:])
    if len(kinds) > 1:
        raise ClientSideError("positional and named placeholders cannot be mixed")
    return SplitQuery("".join(out), tuple(keys), "named" in kinds, count)


def bind_order(split: SplitQuery, params: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
    """Return the values for ``$1``, ``$2``... from the caller's params, checked as psycopg does.

    Raises:
        ClientSideError: the params do not fit the placeholders.
    """
    if type(params) in (tuple, list) and not split.named:  # the common case, checked fast
        if len(params) != len(split.keys):
            raise ClientSideError(
                f"the query has {len(split.keys)} placeholders but {len(params)} parameters "
                "were passed"
            )
        return list(params)
    if isinstance(params, str | bytes):
        raise ParamsShapeError(
            f"query parameters should be a sequence or a mapping, got {type(params).__name__}"
        )
    if isinstance(params, Mapping):
        if split.count and not split.named:
            raise ParamsShapeError("positional placeholders (%s) require a sequence of parameters")
        values = []
        for key in split.keys:
            if not isinstance(key, str) or key not in params:
                raise ClientSideError(f"query parameter missing: {key}")
            values.append(params[key])
        return values
    if split.named:
        raise ParamsShapeError("named placeholders (%(name)s) require a mapping of parameters")
    if len(params) != len(split.keys):
        raise ClientSideError(
            f"the query has {len(split.keys)} placeholders but {len(params)} parameters "
            "were passed"
        )
    return list(params)
