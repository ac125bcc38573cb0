"""The current-user context: validation, nesting, and isolation across threads and tasks."""

from __future__ import annotations

import asyncio
import threading
from uuid import UUID, uuid4

import pytest

from crm_infra import InfraError, InvalidUserIdError, MissingUserContextError
from crm_infra.user_context import (
    coerce_user_id,
    get_current_user_id,
    resolve_user_id,
    user_context,
)


def test_no_context_raises_missing_user_context() -> None:
    with pytest.raises(MissingUserContextError, match="user_context"):
        get_current_user_id()


def test_missing_context_is_infra_error_and_lookup_error() -> None:
    with pytest.raises(InfraError):
        get_current_user_id()
    with pytest.raises(LookupError):
        get_current_user_id()


def test_context_sets_and_restores_user() -> None:
    uid = uuid4()
    with user_context(uid) as seen:
        assert seen == uid
        assert get_current_user_id() == uid
    with pytest.raises(MissingUserContextError):
        get_current_user_id()


def test_string_uuid_is_accepted_and_returned_as_uuid() -> None:
    uid = uuid4()
    with user_context(str(uid)):
        assert get_current_user_id() == uid
        assert isinstance(get_current_user_id(), UUID)


def test_nested_context_inner_wins_then_outer_returns() -> None:
    outer, inner = uuid4(), uuid4()
    with user_context(outer):
        with user_context(inner):
            assert get_current_user_id() == inner
        assert get_current_user_id() == outer


def test_context_is_restored_after_exception() -> None:
    uid = uuid4()
    with pytest.raises(RuntimeError), user_context(uid):
        raise RuntimeError("boom")
    with pytest.raises(MissingUserContextError):
        get_current_user_id()


@pytest.mark.parametrize("bad", ["", "not-a-uuid", "123", " ", "DROP TABLE users"])
def test_non_uuid_strings_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidUserIdError, match="must be a UUID"):
        coerce_user_id(bad)


@pytest.mark.parametrize("bad", [123, 1.5, b"\x00" * 16, object()])
def test_non_string_non_uuid_values_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidUserIdError):
        coerce_user_id(bad)


def test_invalid_user_id_is_infra_error_and_value_error() -> None:
    with pytest.raises(InfraError):
        coerce_user_id("x")
    with pytest.raises(ValueError, match="UUID"):
        coerce_user_id("x")


def test_invalid_user_id_message_does_not_echo_the_value() -> None:
    with pytest.raises(InvalidUserIdError) as info:
        coerce_user_id("secret-looking-value")
    assert "secret-looking-value" not in str(info.value)


def test_empty_string_is_rejected_even_in_context_manager() -> None:
    with pytest.raises(InvalidUserIdError, match="empty"), user_context(""):
        pass  # pragma: no cover - never entered


def test_resolve_prefers_explicit_user_over_context() -> None:
    ctx, explicit = uuid4(), uuid4()
    with user_context(ctx):
        assert resolve_user_id(explicit) == explicit
        assert resolve_user_id(None) == ctx


def test_resolve_none_without_context_raises() -> None:
    with pytest.raises(MissingUserContextError):
        resolve_user_id(None)


def test_threads_do_not_see_each_others_user() -> None:
    seen: dict[int, UUID] = {}
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        uid = uuid4()
        with user_context(uid):
            barrier.wait()
            seen[i] = get_current_user_id()
            assert seen[i] == uid

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen.values())) == 8


def test_new_thread_starts_without_a_user() -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            get_current_user_id()
        except MissingUserContextError as exc:
            errors.append(exc)

    with user_context(uuid4()):
        t = threading.Thread(target=work)
        t.start()
        t.join()
    assert len(errors) == 1


def test_asyncio_tasks_each_see_their_own_user() -> None:
    async def one(uid: UUID) -> UUID:
        with user_context(uid):
            await asyncio.sleep(0.01)
            return get_current_user_id()

    async def main() -> list[UUID]:
        return list(await asyncio.gather(*(one(uuid4()) for _ in range(10))))

    results = asyncio.run(main())
    assert len(set(results)) == 10
