"""The current user, as seen by user-scoped database work.

Built on :mod:`contextvars`, so each thread and each asyncio task sees its own user: a value set
in one request never shows in another. ``user_context`` is the only way to set it, and it always
restores the previous value on exit, exceptions included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from uuid import UUID

from crm_infra.errors import InvalidUserIdError, MissingUserContextError

__all__ = ["UserId", "coerce_user_id", "get_current_user_id", "resolve_user_id", "user_context"]

UserId = UUID | str
"""A user id: a :class:`uuid.UUID`, or a string in any form :class:`uuid.UUID` accepts."""

_current_user_id: ContextVar[UUID | None] = ContextVar("crm_infra_current_user_id", default=None)


def coerce_user_id(user_id: object) -> UUID:
    """Return ``user_id`` as a UUID, or raise :class:`InvalidUserIdError` naming what was wrong.

    The offending value is not echoed: user ids may arrive from untrusted input.
    """
    if isinstance(user_id, UUID):
        return user_id
    if isinstance(user_id, str):
        try:
            return UUID(user_id)
        except ValueError:
            shown = "the empty string" if user_id == "" else f"a string of {len(user_id)} chars"
            raise InvalidUserIdError(f"user id must be a UUID; got {shown}") from None
    raise InvalidUserIdError(
        f"user id must be a UUID or a UUID string; got {type(user_id).__name__}"
    )


def get_current_user_id() -> UUID:
    """Return the user set by the innermost active :func:`user_context`.

    Raises:
        MissingUserContextError: no ``user_context`` is active in this thread or task.
    """
    user_id = _current_user_id.get()
    if user_id is None:
        raise MissingUserContextError(
            "no current user: pass user_id=... or run inside `with user_context(user_id):`"
        )
    return user_id


def resolve_user_id(user_id: UserId | None) -> UUID:
    """Return ``user_id`` validated, or the current user when it is ``None``.

    This is what every user-scoped operation calls before any I/O.

    Raises:
        InvalidUserIdError: ``user_id`` is not a UUID.
        MissingUserContextError: ``user_id`` is ``None`` and no user is set.
    """
    if type(user_id) is UUID:  # the common case, told first
        return user_id
    if user_id is None:
        return get_current_user_id()
    return coerce_user_id(user_id)


@contextmanager
def user_context(user_id: UserId) -> Iterator[UUID]:
    """Set the current user for the duration of the block; yield it as a UUID.

    Nesting is allowed (the inner user wins until its block ends). Each thread and asyncio
    task has its own current user; new tasks start with a copy of their creator's.

    Raises:
        InvalidUserIdError: ``user_id`` is not a UUID; nothing is changed.
    """
    uid = coerce_user_id(user_id)
    token = _current_user_id.set(uid)
    try:
        yield uid
    finally:
        _current_user_id.reset(token)
