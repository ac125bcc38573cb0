"""``crm-infra demo``: an end-to-end story a newcomer can read, on either backend.

Two users create contacts and tickets and each sees only their own rows; a session token is
stored with a TTL; a login rate limit trips. Every claim the story makes is checked, so the demo
doubles as a smoke test: it returns False (and the command exits 1) when one does not hold.

The demo talks to the ports only, as domain code would.
"""

from __future__ import annotations

import hashlib
import secrets as token_source
import uuid
from typing import TextIO

from crm_infra.composition import Infrastructure, build_infrastructure
from crm_infra.errors import (
    DatabaseError,
    MigrationError,
    MissingUserContextError,
    RowSecurityError,
)
from crm_infra.settings import Settings
from crm_infra.user_context import user_context

__all__ = ["LOGIN_LIMIT", "LOGIN_WINDOW_SECONDS", "Story", "migration_error", "run_demo"]

SESSION_TTL_SECONDS = 1800
LOGIN_LIMIT = 3
LOGIN_WINDOW_SECONDS = 60


class Story:
    """Print numbered steps and record whether every claim held."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failures: list[str] = []
        self.step_no = 0

    def step(self, title: str) -> None:
        self.step_no += 1
        print(f"\n{self.step_no}. {title}", file=self.out)

    def say(self, text: str) -> None:
        print(f"   {text}", file=self.out)

    def claim(self, holds: bool, text: str) -> None:
        mark = "ok  " if holds else "FAIL"
        print(f"   [{mark}] {text}", file=self.out)
        if not holds:
            self.failures.append(text)

    def finish(self, done: str) -> bool:
        """Print the verdict; return True when every claim held."""
        if self.failures:
            print(f"\nDemo FAILED: {len(self.failures)} claim(s) did not hold.", file=self.out)
            return False
        print(f"\n{done} (Demo users removed again.)", file=self.out)
        return True


def migration_error(pending: list[str]) -> MigrationError:
    """The error a demo raises on a real database with ``pending`` migrations."""
    return MigrationError(
        f"the database schema is not migrated ({len(pending)} migration(s) pending: "
        f"{', '.join(pending)}); run `crm-infra migrate` first"
    )


def run_demo(settings: Settings, out: TextIO) -> bool:
    """Run the story on the backend ``settings`` choose, printing it to ``out``.

    Returns:
        True when every claim held (isolation, TTL, rate limit).

    Raises:
        MigrationError: the real database's schema is not migrated (nothing was written).
        InfraError: the infrastructure could not be built or a backend failed mid-story.
    """
    print(f"crm-infra demo on the {settings.backend} backend", file=out)
    with build_infrastructure(settings) as infra:
        if settings.backend == "real":
            _require_migrated(infra)
        story = Story(out)
        run_id = uuid.uuid4().hex[:6]
        alice, bob = _sign_up(infra, story, run_id)
        try:
            _create_rows(infra, story, alice, bob)
            _show_isolation(infra, story, alice, bob)
            _session(infra, story, alice, run_id)
            _rate_limit(infra, story, bob, run_id)
        finally:
            # ON DELETE CASCADE removes their contacts and tickets too.
            infra.admin_db.execute_admin("DELETE FROM users WHERE id = ANY(%s)", [[alice, bob]])
    return story.finish("Done: each user saw only their own rows.")


def _require_migrated(infra: Infrastructure) -> None:
    from crm_infra.migrations import pending_migrations  # noqa: PLC0415  # real mode only

    pending = pending_migrations(infra.admin_db)
    if pending:
        raise migration_error(pending)


def _sign_up(infra: Infrastructure, story: Story, run_id: str) -> tuple[uuid.UUID, uuid.UUID]:
    story.step("Two users sign up (the admin path writes the account directory)")
    ids = []
    for name in ("alice", "bob"):
        email = f"{name}.{run_id}@example.com"
        row = infra.admin_db.execute_admin(
            "INSERT INTO users (email, display_name) VALUES (%s, %s) RETURNING id",
            [email, name.title()],
        )[0]
        ids.append(row["id"])
        story.say(f"{name:<5}  {email:<24}  id {row['id']}")
    return ids[0], ids[1]


def _create_rows(infra: Infrastructure, story: Story, alice: uuid.UUID, bob: uuid.UUID) -> None:
    story.step("Each creates contacts and a ticket, as themselves (row-level security applies)")
    data = {
        alice: ("alice", ["Ada Lovelace", "Alan Turing"], "Renewal quote for Ada"),
        bob: ("bob", ["Grace Hopper"], "Invoice 1043 is wrong"),
    }
    for user_id, (name, contacts, subject) in data.items():
        with user_context(user_id), infra.db.transaction() as tx:
            contact_ids = [
                tx.execute_scalar(
                    "INSERT INTO contacts (name, email) VALUES (%s, %s) RETURNING id",
                    [contact, contact.split()[0].lower() + "@example.org"],
                )
                for contact in contacts
            ]
            tx.execute(
                "INSERT INTO tickets (contact_id, subject) VALUES (%s, %s)",
                [contact_ids[0], subject],
            )
        story.say(f"{name:<5}  contacts: {', '.join(contacts)}; ticket: {subject!r}")


def _show_isolation(
    infra: Infrastructure, story: Story, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    story.step("Each lists contacts and tickets: only their own rows come back")
    seen: dict[str, set[str]] = {}
    for user_id, name in ((alice, "alice"), (bob, "bob")):
        with user_context(user_id):
            contacts = [
                r["name"] for r in infra.db.execute("SELECT name FROM contacts ORDER BY name")
            ]
            tickets = [
                f"{r['subject']} ({r['status']})"
                for r in infra.db.execute("SELECT subject, status FROM tickets ORDER BY subject")
            ]
        seen[name] = set(contacts)
        story.say(f"{name:<5}  sees contacts: {', '.join(contacts) or '(none)'}")
        story.say(f"{'':<5}  sees tickets:  {', '.join(tickets) or '(none)'}")
    story.claim(
        seen["alice"] == {"Ada Lovelace", "Alan Turing"} and seen["bob"] == {"Grace Hopper"},
        "each user sees exactly their own contacts",
    )

    bobs_ticket = infra.admin_db.execute_admin(
        "SELECT id FROM tickets WHERE user_id = %s", [bob]
    )[0]["id"]
    found = infra.db.execute_one("SELECT id FROM tickets WHERE id = %s", [bobs_ticket], alice)
    story.claim(found is None, "alice looks up bob's ticket by its id: not found")

    changed = infra.db.execute(
        "UPDATE tickets SET status = 'closed' WHERE id = %s RETURNING id", [bobs_ticket], alice
    )
    story.claim(changed == [], "alice tries to close bob's ticket: no row changed")

    try:
        infra.db.execute(
            "INSERT INTO contacts (user_id, name) VALUES (%s, %s)", [bob, "Planted"], alice
        )
        refused = False
    except RowSecurityError:
        refused = True
    except DatabaseError:
        refused = False
    story.claim(refused, "alice tries to create a contact owned by bob: refused by RLS")

    try:
        infra.db.execute("SELECT name FROM contacts")
        refused = False
    except MissingUserContextError:
        refused = True
    story.claim(refused, "a query with no user at all is refused before it reaches the database")

    total = infra.admin_db.execute_admin(
        "SELECT count(*) AS n FROM contacts WHERE user_id = ANY(%s)", [[alice, bob]]
    )[0]["n"]
    story.claim(total == 3, f"the admin path (RLS bypass) sees all {total} contacts")


def _session(infra: Infrastructure, story: Story, alice: uuid.UUID, run_id: str) -> None:
    story.step(f"A session token is stored with a TTL of {SESSION_TTL_SECONDS} s")
    token = token_source.token_urlsafe(32)
    # Keyed by a hash of the token: a leaked key listing does not leak usable tokens.
    key = f"demo:{run_id}:session:{hashlib.sha256(token.encode()).hexdigest()[:16]}"
    infra.kv.set_json(key, {"user_id": str(alice)}, expire_seconds=SESSION_TTL_SECONDS)
    ttl = infra.kv.ttl(key)
    session = infra.kv.get_json(key)
    story.say(f"key {key} (the token itself is not shown)")
    story.claim(
        session == {"user_id": str(alice)}, "the session resolves to alice"
    )
    story.claim(0 < ttl <= SESSION_TTL_SECONDS, f"it expires in {ttl} s")
    infra.kv.delete(key)


def _rate_limit(infra: Infrastructure, story: Story, bob: uuid.UUID, run_id: str) -> None:
    story.step(f"A login rate limit: {LOGIN_LIMIT} attempts per {LOGIN_WINDOW_SECONDS} s")
    key = f"demo:{run_id}:ratelimit:login:{bob}"
    outcomes = []
    for attempt in range(1, LOGIN_LIMIT + 2):
        count = infra.kv.hit(key, LOGIN_WINDOW_SECONDS)
        allowed = count <= LOGIN_LIMIT
        outcomes.append(allowed)
        story.say(f"bob's attempt {attempt}: {'allowed' if allowed else 'BLOCKED'} "
                  f"({count}/{LOGIN_LIMIT})")
    story.claim(outcomes == [True] * LOGIN_LIMIT + [False], "the attempt over the limit is blocked")
    story.claim(infra.kv.ttl(key) > 0, "the counter expires with its window")
    infra.kv.delete(key)
