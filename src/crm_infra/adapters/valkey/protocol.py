"""What every Valkey client does the same way, whatever the topology and however it waits.

The sync :class:`~crm_infra.adapters.valkey.ValkeyClient` (and its ``redis.asyncio`` twin) differ
only in how they call and sleep; the decisions live here, once:

- argument checks (keys, values, expiries) and JSON encoding, before any I/O;
- the rate-limit script, and how a ``NOSCRIPT`` reply is answered (``EVAL`` with the body:
  the script did not run, so running it now cannot count twice);
- which failures may be retried: idempotent commands after any transport failure, ``incr``
  and ``hit`` only after failures that prove the command never ran;
- the retry schedule (jittered exponential backoff, only while a whole attempt still fits in
  the per-call budget);
- the translation of every redis-py exception into a :class:`ValkeyError` that names the
  operation, the key and the endpoint that failed (:class:`Boundary`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, Final, Generic, NamedTuple, Protocol, TypeVar

import attrs
import redis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    NoPermissionError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from crm_infra.adapters.valkey.errors import (
    ValkeyDataError,
    ValkeyError,
    ValkeyInputError,
    ValkeyUnavailableError,
)
from crm_infra.errors import ConfigError
from crm_infra.ports import JSONValue
from crm_infra.redaction import raise_sanitized, sanitized_copy

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_RETRIES",
    "DEFAULT_SOCKET_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "HIT_SCRIPT",
    "HIT_SHA",
    "MAX_EXPIRE_SECONDS",
    "VENDOR_ERRORS",
    "Boundary",
    "ClosedClient",
    "Command",
    "RetryPolicy",
    "bad_seconds",
    "call_async",
    "call_sync",
    "decode_json",
    "encode_json",
    "is_seconds",
    "nothing_ran",
    "positive_seconds",
    "retryable",
]

# One round trip, atomic: the first hit of a window creates the counter and its expiry together.
# EXPIRE ... NX also gives a TTL to a counter that a plain INCR created without one, so after
# hit() the key always expires; it never extends a window that is already running. One key:
# on a cluster the script runs on the node of that key's slot.
HIT_SCRIPT: Final = """\
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1], 'NX')
return count
"""
HIT_SHA: Final = hashlib.sha1(HIT_SCRIPT.encode(), usedforsecurity=False).hexdigest()

DEFAULT_CONNECT_TIMEOUT: Final = 1.0
DEFAULT_SOCKET_TIMEOUT: Final = 2.0
DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_RETRIES: Final = 2
DEFAULT_BACKOFF: Final = 0.05
_BACKOFF_CAP: Final = 0.5
MAX_EXPIRE_SECONDS: Final = 2**31 - 1
"""The longest expiry or window accepted (about 68 years)."""

# "The transport failed": worth another attempt for idempotent commands. CLUSTERDOWN and an
# unreachable or uncovered slot map are the cluster's way of saying the same.
_TRANSIENT: Final = (redis.ConnectionError, redis.TimeoutError, ClusterDownError,
                     RedisClusterException)
# ConnectionError subclasses that another attempt cannot fix.
_PERMANENT: Final = (AuthenticationError, AuthorizationError, NoPermissionError)
# Replies that prove the command was refused before it ran: NOSCRIPT, a replica refusing a
# write (READONLY: the old primary of a failover), CLUSTERDOWN/MASTERDOWN, TRYAGAIN during
# resharding, LOADING; and a failure to reach any node, or to learn which node is primary.
_REFUSED: Final = (NoScriptError, ReadOnlyError, ClusterDownError, TryAgainError,
                   BusyLoadingError)
# redis-py's wording for "the connection could not be made", so nothing was sent on it; and
# Sentinel's connection when the primary it was talking to turned replica (READONLY).
_NOT_SENT_PREFIXES: Final = ("Timeout connecting to ", "Error connecting to ",
                             "No master found for ", "The previous master is now a slave")
# Everything redis-py raises: its cluster errors (slot map unreadable, no node reachable) are
# not RedisErrors.
VENDOR_ERRORS: Final = (RedisError, RedisClusterException)
_monotonic = time.monotonic


def nothing_ran(exc: BaseException) -> bool:
    """Return True when ``exc`` proves the command never ran on any server.

    Only such failures allow a retry of ``incr`` and ``hit``: after any other (a timeout
    waiting for the reply, a connection dropped after sending) the command may have run.
    """
    if isinstance(exc, _REFUSED):
        return True
    if isinstance(exc, RedisClusterException):
        # No node could be reached to route the command (SlotNotCoveredError, an unreachable
        # cluster); the "cannot be connected" error of a refresh is one too.
        return True
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        message = str(exc)
        if message.startswith(_NOT_SENT_PREFIXES):
            return True
        # redis-py: "Error 111 connecting to 127.0.0.1:6379. Connection refused."
        return message.startswith("Error ") and " connecting to " in message.split(".", 1)[0]
    return False


def retryable(exc: BaseException, idempotent: bool) -> bool:
    """Return True when a call that failed with ``exc`` may be attempted again."""
    if isinstance(exc, _PERMANENT) or isinstance(exc.__cause__, _PERMANENT):
        return False
    if idempotent and isinstance(exc, _TRANSIENT):
        return True
    return nothing_ran(exc)


@attrs.frozen
class RetryPolicy:
    """When to try again: ``retries`` more attempts, pausing ``backoff`` (doubling, capped at
    0.5 s, jittered), and only while a whole attempt (``attempt_s``) still fits in ``budget``.
    """

    retries: int
    backoff: float
    attempt_s: float
    budget: float

    def pauses(self, started: float) -> Iterator[float]:
        """Yield the pause before each further attempt of a call that began at ``started``;
        stop when none is left or the next could overrun the budget.
        """
        delay = self.backoff
        for _ in range(self.retries):
            # Jittered so that many clients do not reconnect in lockstep (not security).
            pause = delay * (0.5 + random.random() / 2)  # noqa: S311
            if _monotonic() - started + pause + self.attempt_s > self.budget:
                return
            yield pause
            delay = min(delay * 2, _BACKOFF_CAP)


def positive_seconds(name: str, value: object) -> float:
    """Return ``value`` as float seconds, or raise ConfigError naming the setting."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"ValkeyClient: {name} must be a number of seconds, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"ValkeyClient: {name} must be positive and finite, got {value!r}")
    return float(value)


def is_seconds(value: object) -> bool:
    """Return True for an expiry Valkey accepts: an int from 1 to MAX_EXPIRE_SECONDS."""
    # Bounded: Valkey refuses expiries past its clock's range only after hit's INCR has run,
    # which would leave a counter without expiry.
    return type(value) is int and 0 < value <= MAX_EXPIRE_SECONDS


def bad_seconds(op: str, key: str, arg: str, value: object) -> ValkeyInputError:
    """Return the error for a bad expiry argument (nothing was changed)."""
    return ValkeyInputError(
        f"Valkey {op} of key {key!r}: {arg} must be a positive int of seconds up to "
        f"{MAX_EXPIRE_SECONDS}, got {value!r}; nothing was changed"
    )


def encode_json(key: str, value: JSONValue) -> str:
    """Return ``value`` as compact UTF-8 JSON, or raise ValkeyInputError naming ``key``."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise_sanitized(
            ValkeyInputError(
                f"Valkey set_json of key {key!r}: JSON cannot hold the value "
                f"({type(exc).__name__}: {exc}); nothing was stored"
            ),
            None,
        )


def decode_json(key: str, raw: str | None) -> Any:
    """Return the decoded JSON ``raw`` (None for a missing key), or raise ValkeyDataError."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        # Not chained: the decode error carries the whole stored document (.doc).
        raise_sanitized(
            ValkeyDataError(
                f"Valkey get_json of key {key!r} failed: the stored value is not JSON "
                f"({exc.msg} at line {exc.lineno} column {exc.colno})"
            ),
            None,
        )


T = TypeVar("T")


class Command(NamedTuple, Generic[T]):
    """One call of the port, decided before any I/O: what the sync and async clients send.

    ``method`` names the redis-py method to call with ``args`` (``"hit"`` and ``"ping"``
    name the client's own rate-limit script call and health ping); ``finish`` turns the
    reply into the port's return value.
    """

    op: str
    key: str | None
    idempotent: bool
    method: str
    args: tuple[Any, ...]
    finish: Callable[[Any], T]


class ClientClosed(RedisError):
    """Raised by the stand-in client after close()."""


class ClosedClient:
    """Takes the redis client's place after close(), so the hot path needs no extra check."""

    def __getattr__(self, name: str) -> Any:
        def closed(*args: Any, **kwargs: Any) -> Any:
            raise ClientClosed(name)

        return closed


class Endpointed(Protocol):
    """A client that can say which server a failure came from."""

    def _endpoint_for(self, exc: BaseException, key: str | None) -> str: ...


class Boundary:
    """The one place where redis-py (and codec) exceptions become ValkeyErrors."""

    __slots__ = ("_client", "_key", "_op")

    def __init__(self, client: Endpointed, op: str, key: str | None) -> None:
        self._client = client
        self._op = op
        self._key = key

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, VENDOR_ERRORS):
            raise_sanitized(self._translate(exc), sanitized_copy(exc))
        if isinstance(exc, UnicodeError):
            # The codec error holds the whole value (.object); do not chain it.
            where = self._where()
            if isinstance(exc, UnicodeDecodeError):
                raise_sanitized(
                    ValkeyDataError(f"{where} failed: the stored value is not UTF-8 text"), None
                )
            raise_sanitized(
                ValkeyInputError(
                    f"{where} failed: the value cannot be encoded as UTF-8 (lone surrogate?)"
                ),
                None,
            )

    def _where(self) -> str:
        if self._key is None:
            return f"Valkey {self._op}"
        return f"Valkey {self._op} of key {self._key!r}"

    def _translate(self, exc: Exception) -> ValkeyError:
        cls: type[ValkeyError] = ValkeyError
        why = f"{type(exc).__name__}: {exc}"
        if why.startswith("MasterNotFoundError: No master found"):
            # redis-py lists every Sentinel's client repr; the endpoint already names them.
            why = "MasterNotFoundError: no Sentinel named a reachable primary"
        if isinstance(exc, ClientClosed):
            return cls(f"{self._where()} failed: the client is closed")
        endpoint = self._client._endpoint_for(exc, self._key)
        if isinstance(exc, _PERMANENT) or isinstance(exc.__cause__, _PERMANENT):
            why = (
                f"Valkey at {endpoint} refused the credentials; check the user and password "
                f"in the connection URL ({type(exc).__name__})"
            )
        elif isinstance(exc, redis.TimeoutError):
            cls = ValkeyUnavailableError
            why = f"Valkey at {endpoint} did not answer in time ({why})"
        elif isinstance(exc, redis.ConnectionError | ReadOnlyError | ClusterDownError
                        | TryAgainError | RedisClusterException):
            cls, why = ValkeyUnavailableError, f"Valkey at {endpoint} is unavailable ({why})"
        elif isinstance(exc, ResponseError):
            message = str(exc)
            if "not an integer" in message or "overflow" in message:
                cls, why = ValkeyDataError, "the stored value is not an integer in range"
            elif message.startswith("WRONGTYPE"):
                cls, why = ValkeyDataError, "the key holds a non-string type"
        elif isinstance(exc, redis.DataError):
            cls = ValkeyInputError
        return cls(f"{self._where()} failed: {why}")


def call_sync(
    policy: RetryPolicy,
    idempotent: bool,
    method: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    started: float,
    error: Exception,
) -> Any:
    """Retry ``method(*args)`` after ``error`` while ``policy`` and :func:`retryable` allow;
    raise the last error otherwise. (The async twin awaits the same decisions.)
    """
    for pause in policy.pauses(started):
        if not retryable(error, idempotent):
            break
        time.sleep(pause)
        try:
            return method(*args)
        except VENDOR_ERRORS as exc:
            error = exc
    raise error


async def call_async(
    policy: RetryPolicy,
    idempotent: bool,
    method: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    *,
    started: float,
    error: Exception,
) -> Any:
    """:func:`call_sync` for ``redis.asyncio``: the same decisions, awaited."""
    for pause in policy.pauses(started):
        if not retryable(error, idempotent):
            break
        await asyncio.sleep(pause)
        try:
            return await method(*args)
        except VENDOR_ERRORS as exc:
            error = exc
    raise error
