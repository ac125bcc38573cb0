"""The contract suite's sync facade over the asyncio twins behaves as one asyncio task would.

What the facade promises (``tests/contract/async_facade.py``) decides what the contract suite
proves about the async backends: every call in one task, the caller's user, every exception
unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from uuid import UUID, uuid4

import pytest

from crm_infra import MissingUserContextError, get_current_user_id, user_context
from tests.contract.async_facade import Driver


@pytest.fixture
def driver() -> Iterator[Driver]:
    made = Driver()
    yield made
    made.close(_current_task)  # a second close is harmless: the test may have closed it


async def _current_task() -> asyncio.Task[object] | None:
    return asyncio.current_task()


async def _user() -> UUID:
    return get_current_user_id()


def test_every_call_runs_in_the_same_task(driver: Driver) -> None:
    tasks = {driver.call(_current_task) for _ in range(3)}
    with driver.entered(_block([])):
        tasks.add(driver.call(_current_task))
    assert len(tasks) == 1


def test_each_call_sees_the_callers_user_and_no_other(driver: Driver) -> None:
    alice, bob = uuid4(), uuid4()
    with user_context(alice):
        assert driver.call(_user) == alice
        with user_context(bob):
            assert driver.call(_user) == bob
    with pytest.raises(MissingUserContextError):
        driver.call(_user)


def test_an_exception_comes_out_unchanged(driver: Driver) -> None:
    error = KeyError("the async object's own")

    async def fail() -> None:
        raise error

    with pytest.raises(KeyError) as caught:
        driver.call(fail)
    assert caught.value is error


@asynccontextmanager
async def _block(seen: list[BaseException | None]) -> AsyncIterator[str]:
    try:
        yield "inside"
    except BaseException as exc:
        seen.append(exc)
        raise
    seen.append(None)


def test_a_block_gets_the_with_bodys_exception_and_passes_it_on(driver: Driver) -> None:
    seen: list[BaseException | None] = []
    with driver.entered(_block(seen)) as value:
        assert value == "inside"
    with pytest.raises(ValueError, match="body"), driver.entered(_block(seen)):
        raise ValueError("body")
    assert seen[0] is None
    assert isinstance(seen[1], ValueError)


def test_a_closed_facade_still_answers_on_a_loop_of_its_own(driver: Driver) -> None:
    """After close, a call (which a closed object answers by raising) still reaches it."""
    driver.close(_current_task)
    alice = uuid4()
    with user_context(alice):
        assert driver.call(_user) == alice
