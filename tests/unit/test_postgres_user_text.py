"""The text of the user id the set-user statement sends: cached for exact UUIDs only."""

from __future__ import annotations

from types import SimpleNamespace
from uuid import UUID, uuid4

from crm_infra.adapters.postgres.base import PostgresBase


class _Liar(UUID):
    """A UUID subclass equal to every UUID, with the hash of one it was told."""

    def __init__(self, value: str, hash_of: UUID) -> None:
        super().__init__(value)
        object.__setattr__(self, "_hash_of", hash_of)

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash(object.__getattribute__(self, "_hash_of"))


def _set_user(uid: UUID, timeout: bytes | None = b"30000") -> list[bytes]:
    return PostgresBase._set_user(SimpleNamespace(_timeout_bytes=timeout), uid)  # type: ignore[arg-type]


def test_each_user_id_is_sent_as_its_own_text_with_the_timeout_beside_it() -> None:
    a, b = uuid4(), uuid4()
    for _ in range(2):  # the second time from the cache
        assert _set_user(a) == [str(a).encode(), b"30000"]
        assert _set_user(b, None) == [str(b).encode()]


def test_a_uuid_subclass_never_gets_the_cached_text_of_another_user() -> None:
    victim = uuid4()
    assert _set_user(victim) == [str(victim).encode(), b"30000"]  # now cached
    liar = _Liar(str(uuid4()), hash_of=victim)
    assert liar == victim
    assert hash(liar) == hash(victim)
    assert _set_user(liar) == [str(liar).encode(), b"30000"]
    assert str(liar) != str(victim)
