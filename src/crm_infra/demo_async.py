"""``crm-infra demo --async``: the isolation story on asyncio, where it is hardest to keep.

Many requests run at once in one thread, each as its own user: every task opens its own
``user_context``, and asyncio copies the context into each task, so one request's user never
reaches another's queries. A request cancelled mid-transaction leaves nothing behind; a rate
limit counts concurrent hits exactly. Every claim is checked, as in ``crm-infra demo``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TextIO

from crm_infra.async_composition import AsyncInfrastructure, build_async_infrastructure
from crm_infra.demo import LOGIN_LIMIT, LOGIN_WINDOW_SECONDS, Story, migration_error
from crm_infra.settings import Settings
from crm_infra.user_context import get_current_user_id, user_context

__all__ = ["run_demo_async"]

REQUESTS = 40  # concurrent requests, alternating between the two users
CONCURRENT_HITS = 10


async def run_demo_async(settings: Settings, out: TextIO) -> bool:
    """Run the asyncio story on the backend ``settings`` choose, printing it to ``out``.

    Returns:
        True when every claim held.

    Raises:
        MigrationError: the real database's schema is not migrated (nothing was written).
        InfraError: the infrastructure could not be built or a backend failed mid-story.
    """
    print(f"crm-infra demo on asyncio, on the {settings.backend} backend", file=out)
    story = Story(out)
    async with await build_async_infrastructure(settings) as infra:
        if settings.backend == "real":
            await _require_migrated(infra)
        run_id = uuid.uuid4().hex[:6]
        users = await _sign_up(infra, story, run_id)
        try:
            await _concurrent_requests(infra, story, users)
            await _cancelled_request(infra, story, users[0])
            await _concurrent_hits(infra, story, users[1], run_id)
        finally:
            # ON DELETE CASCADE removes their contacts too.
            await infra.admin_db.execute_admin("DELETE FROM users WHERE id = ANY(%s)", [users])
    return story.finish("Done: every concurrent request saw only its own user's rows.")


async def _require_migrated(infra: AsyncInfrastructure) -> None:
    from crm_infra.migrations import MIGRATIONS_TABLE  # noqa: PLC0415
    from crm_infra.schema_files import migration_files  # noqa: PLC0415

    recorded = await infra.admin_db.execute_admin(
        "SELECT to_regclass(%s) IS NOT NULL AS recorded", (MIGRATIONS_TABLE,)
    )
    applied: set[str] = set()
    if recorded[0]["recorded"]:
        rows = await infra.admin_db.execute_admin(f"SELECT filename FROM {MIGRATIONS_TABLE}")
        applied = {str(row["filename"]) for row in rows}
    pending = [path.name for path in migration_files() if path.name not in applied]
    if pending:
        raise migration_error(pending)


async def _sign_up(infra: AsyncInfrastructure, story: Story, run_id: str) -> list[uuid.UUID]:
    story.step("Two users sign up (the admin path writes the account directory)")
    ids: list[uuid.UUID] = []
    for name in ("alice", "bob"):
        email = f"{name}.{run_id}@example.com"
        rows = await infra.admin_db.execute_admin(
            "INSERT INTO users (email, display_name) VALUES (%s, %s) RETURNING id",
            [email, name.title()],
        )
        ids.append(rows[0]["id"])
        story.say(f"{name:<5}  {email:<24}  id {rows[0]['id']}")
    return ids


async def _concurrent_requests(
    infra: AsyncInfrastructure, story: Story, users: list[uuid.UUID]
) -> None:
    story.step(f"{REQUESTS} requests at once, half as alice and half as bob, each in its task")

    async def request(number: int, user: uuid.UUID) -> tuple[uuid.UUID, set[str], bool]:
        # What a web framework's per-request dependency does: open the request's user.
        with user_context(user):
            async with infra.db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO contacts (name) VALUES (%s)", [f"contact {number} of {user}"]
                )
            await asyncio.sleep(0)  # let every other request run in between
            rows = await infra.db.execute("SELECT name FROM contacts")
            return user, {row["name"] for row in rows}, get_current_user_id() == user

    results = await asyncio.gather(
        *(request(number, users[number % 2]) for number in range(REQUESTS))
    )
    foreign = sum(
        1 for user, names, _ in results for name in names if not name.endswith(str(user))
    )
    story.say(f"{len(results)} requests answered; rows of the other user seen: {foreign}")
    story.claim(foreign == 0, "no request saw a row of the other user")
    story.claim(
        all(same for _, _, same in results), "each request's user stayed its own across awaits"
    )
    counts = [len(names) for _, names, _ in results]
    story.claim(max(counts) <= REQUESTS // 2, "each user sees at most their own contacts")


async def _cancelled_request(infra: AsyncInfrastructure, story: Story, alice: uuid.UUID) -> None:
    story.step("A request is cancelled in the middle of its transaction")
    inserted = asyncio.Event()

    async def slow_request() -> None:
        with user_context(alice):
            async with infra.db.transaction() as tx:
                await tx.execute("INSERT INTO contacts (name) VALUES ('never committed')")
                inserted.set()
                await asyncio.Event().wait()  # the client went away

    task = asyncio.create_task(slow_request())
    await inserted.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    left = await infra.db.execute(
        "SELECT name FROM contacts WHERE name = 'never committed'", user_id=alice
    )
    story.say(f"cancelled: {task.cancelled()}; its row after the cancel: {len(left)}")
    story.claim(task.cancelled() and left == [], "the cancelled transaction left nothing behind")


async def _concurrent_hits(
    infra: AsyncInfrastructure, story: Story, bob: uuid.UUID, run_id: str
) -> None:
    story.step(
        f"{CONCURRENT_HITS} login attempts at once against a limit of {LOGIN_LIMIT} per "
        f"{LOGIN_WINDOW_SECONDS} s"
    )
    key = f"demo:{run_id}:ratelimit:login:{bob}"
    counts = await asyncio.gather(
        *(infra.kv.hit(key, LOGIN_WINDOW_SECONDS) for _ in range(CONCURRENT_HITS))
    )
    allowed = sum(1 for count in counts if count <= LOGIN_LIMIT)
    story.say(f"allowed {allowed}, blocked {CONCURRENT_HITS - allowed}")
    story.claim(
        sorted(counts) == list(range(1, CONCURRENT_HITS + 1)),
        "every attempt was counted exactly once",
    )
    story.claim(allowed == LOGIN_LIMIT, f"exactly {LOGIN_LIMIT} attempts were allowed")
    await infra.kv.delete(key)
