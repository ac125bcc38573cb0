"""``traced_block``: a context manager's block as one span, ``with`` and ``async with``; its
opening and closing under suppressed instrumentation, its body not; a failure in the body or
in the closing recorded by class."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import SpanKind, StatusCode

from crm_infra.telemetry import Call, CallSpec, traced, traced_block
from tests.fixtures.telemetry import Telemetry


class _Spec(CallSpec):
    def __init__(self, name: str, *, client: bool) -> None:
        self._name = name
        self._client = client

    def describe(self, owner: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Call:
        attributes = {"crm.operation": self._name}
        return Call(self._name, attributes, attributes, client=self._client)


def _suppressed() -> bool:
    return bool(otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY))


class _Owner:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    @traced_block(_Spec("block", client=False))
    @contextmanager
    def block(self, fail_on_exit: bool = False) -> Iterator[str]:
        self.seen.append(("enter", _suppressed()))
        yield "handle"
        self.seen.append(("exit", _suppressed()))
        if fail_on_exit:
            raise KeyError("planted")

    @traced_block(_Spec("block", client=False))
    @asynccontextmanager
    async def async_block(self) -> AsyncIterator[str]:
        self.seen.append(("enter", _suppressed()))
        yield "handle"
        self.seen.append(("exit", _suppressed()))

    @traced(_Spec("statement", client=True))
    def statement(self) -> int:
        return 1


def test_a_block_is_one_span_and_its_calls_are_its_children(telemetry: Telemetry) -> None:
    owner = _Owner()
    with owner.block() as handle:
        assert handle == "handle"
        owner.seen.append(("body", _suppressed()))
        owner.statement()
    assert owner.seen == [("enter", True), ("body", False), ("exit", True)]
    statement, block = telemetry.ours()
    assert (block.name, block.kind, statement.kind) == ("block", SpanKind.INTERNAL, SpanKind.CLIENT)
    assert statement.parent is not None
    assert block.context is not None
    assert statement.parent.span_id == block.context.span_id
    assert not trace.get_current_span().get_span_context().is_valid  # nothing left attached


@pytest.mark.asyncio
async def test_an_async_block_is_one_span_too(telemetry: Telemetry) -> None:
    owner = _Owner()
    async with owner.async_block():
        owner.statement()
    assert owner.seen == [("enter", True), ("exit", True)]
    assert [s.name for s in telemetry.ours()] == ["statement", "block"]


def test_a_failure_in_the_body_fails_the_block_by_its_class(telemetry: Telemetry) -> None:
    owner = _Owner()
    with pytest.raises(ZeroDivisionError), owner.block():
        _ = 1 / 0
    (block,) = telemetry.ours()
    assert block.status.status_code is StatusCode.ERROR
    assert block.status.description == "ZeroDivisionError"
    assert (block.attributes or {})["error.type"] == "builtins.ZeroDivisionError"


def test_a_failure_while_closing_fails_the_block_without_its_message(
    telemetry: Telemetry,
) -> None:
    owner = _Owner()
    with pytest.raises(KeyError), owner.block(fail_on_exit=True):
        pass
    (block,) = telemetry.ours()
    assert block.status.description == "KeyError"
    assert "planted" not in block.to_json()


def test_without_an_sdk_the_block_is_the_methods_own_manager() -> None:
    from tests.fixtures.telemetry import reset_globals

    reset_globals()
    manager = _Owner().block()
    assert type(manager).__name__ == "_GeneratorContextManager"
