"""docs/testing.md's FastAPI example runs as written: each request sees only its own user's
contacts, on the in-memory default backend, with requests of two users interleaved."""

from __future__ import annotations

import re
import types
from pathlib import Path
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from crm_infra import AsyncInfrastructure

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
BLOCK = re.compile(r"<!-- example: fastapi-app -->\n```python\n(.*?)```", re.DOTALL)


@pytest.fixture
def app_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    monkeypatch.delenv("CRM_BACKEND", raising=False)
    found = BLOCK.search(DOC.read_text())
    assert found, "the example block is in docs/testing.md"
    module = types.ModuleType("docs_fastapi_example")
    exec(compile(found.group(1), str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own doc
    return module


def test_each_request_sees_only_its_own_users_contacts(app_module: types.ModuleType) -> None:
    with TestClient(app_module.app) as client:
        infra: AsyncInfrastructure = app_module.app.state.infra

        async def sign_up(email: str) -> UUID:
            rows = await infra.admin_db.execute_admin(
                "INSERT INTO users (email) VALUES (%s) RETURNING id", [email]
            )
            return UUID(str(rows[0]["id"]))

        assert client.portal is not None  # the app's event loop, where its ports live
        alice = client.portal.call(sign_up, "alice@example.com")
        bob = client.portal.call(sign_up, "bob@example.com")
        for user, name in [(alice, "Ada"), (bob, "Grace"), (alice, "Alan")]:
            added = client.post(
                "/contacts", params={"name": name}, headers={"X-User-Id": str(user)}
            )
            assert added.status_code == 201, added.text
        as_alice = client.get("/contacts", headers={"X-User-Id": str(alice)})
        as_bob = client.get("/contacts", headers={"X-User-Id": str(bob)})
        assert as_alice.json() == ["Ada", "Alan"]
        assert as_bob.json() == ["Grace"]


def test_a_request_without_a_user_is_refused_before_any_query(
    app_module: types.ModuleType,
) -> None:
    with TestClient(app_module.app) as client:
        response = client.get("/contacts")
        assert response.status_code == 422  # the header is required
