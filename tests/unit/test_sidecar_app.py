"""The HTTP sidecar end to end over a real socket: routes, auth, links, feedback, WebSocket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from bridge.sidecar.app import MAX_BODY_BYTES, create_app
from bridge.sidecar.auth import AuthConfig
from bridge.sidecar.control import CallStateConflict
from bridge.sidecar.events import EventHub
from bridge.sidecar.fakes import FakeCallControl
from bridge.sidecar.links import LinkSigner
from bridge.sidecar.metrics import MetricsRegistry
from bridge.tickets import lifecycle
from bridge.tickets.model import TicketState
from bridge.tickets.sqlite_store import SqliteTicketStore
from bridge.tickets.store import TicketQuery

NOW = 1_700_000_000.0
BASE_URL = "http://bridge.test:8080"
TOKENS = {
    "agent": {"token": "agent-token-1001-xx", "name": "alice", "role": "agent",
              "seat": "seat-1001", "platform": "12345"},
    "agent2": {"token": "agent-token-1002-xx", "name": "bob", "role": "agent",
               "seat": "seat-1002", "platform": "12345"},
    "supervisor": {"token": "supervisor-token-xx", "name": "sue", "role": "supervisor"},
    "admin": {"token": "admin-token-xxxxxxx", "name": "root", "role": "admin"},
    "peer110": {"token": "peer-110-token-xxxx", "name": "110-pbx", "role": "peer",
                "platform": "110"},
    "peer12313": {"token": "peer-12313-token-xx", "name": "12313", "role": "peer"},
}  # fmt: skip

DRAFT: dict[str, Any] = {
    "origin": "12345",
    "category": "public_order",
    "caller_number": "13800000000",
    "callback_number": "13800000001",
    "summary": "fight outside the market",
    "location": "Market St 5",
    "urgent": True,
    "notes": "caller hears shouting",
    "destination": "110",
}


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    client: TestClient[Any, Any]
    store: SqliteTicketStore
    control: FakeCallControl
    hub: EventHub
    clock: FakeClock
    signer: LinkSigner
    metrics: MetricsRegistry

    async def call(
        self, method: str, path: str, *, who: str | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {TOKENS[who]['token']}"
        async with self.client.request(method, path, headers=headers, **kwargs) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def new_ticket(self, who: str = "agent", **overrides: Any) -> dict[str, Any]:
        status, body = await self.call(
            "POST", "/api/v1/tickets", who=who, json={**DRAFT, **overrides}
        )
        assert status == 201, body
        ticket: dict[str, Any] = body["ticket"]
        return ticket

    async def transferred_ticket(self) -> str:
        """A ticket the bridge has handed to 110 (what the engine would record)."""
        ticket_id: str = (await self.new_ticket())["id"]
        status, body = await self.call(
            "POST", "/api/v1/calls/c1/transfer", who="agent",
            json={"target": "110", "mode": "blind", "ticket_id": ticket_id},
        )  # fmt: skip
        assert status == 202, body
        await self.store.update(
            ticket_id, lambda t: lifecycle.mark_ringing(t, actor="bridge", now=NOW)
        )
        await self.store.update(
            ticket_id, lambda t: lifecycle.mark_transferred(t, actor="bridge", now=NOW)
        )
        return ticket_id


def answered_calls() -> dict[str, dict[str, Any]]:
    return {
        "c1": {"call_id": "c1", "state": "answered", "seat": "seat-1001"},
        "c2": {"call_id": "c2", "state": "ringing", "seat": "seat-1002"},
    }


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = await SqliteTicketStore.open(tmp_path / "tickets.sqlite3")
    clock = FakeClock(NOW)
    metrics = MetricsRegistry()
    hub = EventHub(metrics=metrics, queue_size=4)
    signer = LinkSigner("link-secret-for-tests-0123456789", ttl_seconds=600)
    control = FakeCallControl(
        calls=answered_calls(),
        store=store,
        clock=clock,
        known_targets=frozenset({"110", "12313", "sip:110@pbx.test"}),
        suggestions=[{"category": "public_order", "destination": "110"}],
    )
    app = create_app(
        store=store,
        control=control,
        auth=AuthConfig.model_validate({"tokens": list(TOKENS.values())}),
        signer=signer,
        hub=hub,
        base_url=BASE_URL,
        clock=clock,
        metrics=metrics,
    )
    try:
        async with TestClient(TestServer(app)) as client:
            yield Harness(client, store, control, hub, clock, signer, metrics)
    finally:
        await store.close()


def link_path(url: str) -> str:
    assert url.startswith(BASE_URL)
    return url[len(BASE_URL) :]


# -- plain routes --------------------------------------------------------------------------


async def test_healthz_needs_no_token(harness: Harness) -> None:
    assert await harness.call("GET", "/healthz") == (200, {"status": "ok"})


async def test_metrics_are_prometheus_text_and_count_requests(harness: Harness) -> None:
    await harness.call("GET", "/healthz")
    await harness.call("GET", "/api/v1/calls")
    async with harness.client.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await response.text()
    assert "# TYPE bridge_http_requests_total counter\n" in text
    assert 'bridge_http_requests_total{method="GET",route="/healthz",status="200"} 1\n' in text
    assert 'route="/api/v1/calls",status="401"} 1\n' in text
    assert "# TYPE bridge_event_subscribers gauge\nbridge_event_subscribers 0\n" in text
    assert "13800000000" not in text


async def test_console_page_is_served(harness: Harness) -> None:
    async with harness.client.get("/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert "/api/v1/events" in page
    assert "<script>" in page


async def test_unknown_route_and_wrong_method_use_the_error_shape(harness: Harness) -> None:
    status, body = await harness.call("GET", "/api/v1/nothing")
    assert status == 404
    assert set(body) == {"error", "detail"}
    status, body = await harness.call("DELETE", "/api/v1/tickets", who="admin")
    assert status == 405
    assert body["error"] == "method_not_allowed"


# -- authentication and roles ----------------------------------------------------------------


async def test_no_token_is_401_with_a_bearer_challenge(harness: Harness) -> None:
    async with harness.client.post("/api/v1/tickets", json=DRAFT) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        assert (await response.json())["error"] == "unauthorized"


@pytest.mark.parametrize(
    "authorization", ["Bearer not-a-configured-token", "Basic YWxpY2U6eA==", "Bearer "]
)
async def test_unknown_or_malformed_token_is_401(harness: Harness, authorization: str) -> None:
    status, body = await harness.call(
        "GET", "/api/v1/calls", headers={"Authorization": authorization}
    )
    assert status == 401
    assert body["error"] in {"invalid_token", "unauthorized"}


@pytest.mark.parametrize(
    ("who", "method", "path", "payload"),
    [
        ("peer110", "POST", "/api/v1/tickets", DRAFT),
        ("peer110", "GET", "/api/v1/calls", None),
        ("peer110", "POST", "/api/v1/calls/c1/transfer", {"target": "110", "ticket": DRAFT}),
        ("agent", "POST", "/api/v1/calls/c1/supervise", {"supervisor": "s", "mode": "listen"}),
        ("supervisor", "POST", "/api/v1/admin/dialplan/reload", None),
        ("peer110", "POST", "/api/v1/route/suggest", {"text": "noise"}),
    ],
)
async def test_wrong_role_is_403(
    harness: Harness, who: str, method: str, path: str, payload: Any
) -> None:
    status, body = await harness.call(method, path, who=who, json=payload)
    assert status == 403
    assert body["error"] == "forbidden"
    assert harness.control.transfers == []
    assert harness.control.reloads == 0


# -- tickets ---------------------------------------------------------------------------------


async def test_create_ticket_stores_it_and_returns_a_working_link(harness: Harness) -> None:
    async with harness.client.post(
        "/api/v1/tickets",
        json=DRAFT,
        headers={"Authorization": f"Bearer {TOKENS['agent']['token']}"},
    ) as response:
        assert response.status == 201
        body = await response.json()
        location = response.headers["Location"]
    ticket = body["ticket"]
    assert ticket["state"] == "draft"
    assert ticket["sending_seat"] == "seat-1001"
    assert ticket["urgent"] is True
    assert body["event"]["kind"] == "created"
    assert body["event"]["actor"] == "alice"
    assert location == f"/api/v1/tickets/{ticket['id']}"
    assert body["ticket_url"].startswith(f"{BASE_URL}/api/v1/tickets/{ticket['id']}?token=")

    status, fetched = await harness.call("GET", link_path(body["ticket_url"]))
    assert status == 200
    assert fetched["ticket"] == ticket
    assert [e["kind"] for e in fetched["events"]] == ["created"]
    stored = await harness.store.get(ticket["id"])
    assert stored is not None
    assert stored.caller_number == "13800000000"


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (b"{not json", None),
        (b"", None),
        (b'{"origin": "12345"}', "category"),
        (b'{"origin": "12345", "category": "criminal", "colour": "red"}', "colour"),
        (b'{"origin": "12345", "category": "criminal", "urgent": [1]}', "urgent"),
        (b"[]", None),
    ],
)
async def test_bad_ticket_bodies_are_400(harness: Harness, payload: bytes, where: str) -> None:
    status, body = await harness.call(
        "POST", "/api/v1/tickets", who="agent", data=payload,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 400
    assert body["error"] == "bad_request"
    if where is not None:
        assert any(where in map(str, item["loc"]) for item in body["detail"])
    assert await harness.store.list_tickets(TicketQuery()) == []


async def test_oversize_body_is_413_and_the_service_keeps_going(harness: Harness) -> None:
    huge = {**DRAFT, "notes": "x" * (MAX_BODY_BYTES + 1)}
    status, body = await harness.call("POST", "/api/v1/tickets", who="agent", json=huge)
    assert status == 413
    assert set(body) == {"error", "detail"}
    assert (await harness.call("GET", "/healthz"))[0] == 200


async def test_list_tickets_filters(harness: Harness) -> None:
    first = await harness.new_ticket(category="criminal")
    harness.clock.now += 60
    second = await harness.new_ticket(origin="110", category="health", destination="12345")

    async def ids(query: str, who: str = "supervisor") -> list[str]:
        status, body = await harness.call("GET", f"/api/v1/tickets{query}", who=who)
        assert status == 200, body
        return [t["id"] for t in body["tickets"]]

    assert await ids("") == [second["id"], first["id"]]
    assert await ids("?origin=12345") == [first["id"]]
    assert await ids("?category=health") == [second["id"]]
    assert await ids("?state=draft&limit=1") == [second["id"]]
    assert await ids(f"?since={NOW + 30}") == [second["id"]]
    assert await ids("?state=accepted") == []


@pytest.mark.parametrize(
    "query", ["?colour=red", "?limit=0", "?limit=100000", "?state=lost", "?origin=a&origin=b"]
)
async def test_bad_list_queries_are_400(harness: Harness, query: str) -> None:
    status, body = await harness.call("GET", f"/api/v1/tickets{query}", who="agent")
    assert status == 400
    assert body["error"] == "bad_request"


async def test_peers_read_only_tickets_sent_to_their_platform(harness: Harness) -> None:
    to_110 = await harness.new_ticket()
    to_12313 = await harness.new_ticket(category="tobacco", destination="12313")

    status, body = await harness.call("GET", "/api/v1/tickets", who="peer110")
    assert status == 200
    assert [t["id"] for t in body["tickets"]] == [to_110["id"]]
    status, _ = await harness.call("GET", "/api/v1/tickets?destination=12313", who="peer110")
    assert status == 403

    assert (await harness.call("GET", f"/api/v1/tickets/{to_110['id']}", who="peer110"))[0] == 200
    status, body = await harness.call("GET", f"/api/v1/tickets/{to_12313['id']}", who="peer110")
    assert status == 403
    assert body["error"] == "forbidden"
    assert (await harness.call("GET", f"/api/v1/tickets/{to_12313['id']}", who="peer12313"))[
        0
    ] == 200


async def test_ticket_read_needs_a_token_or_a_link(harness: Harness) -> None:
    ticket = await harness.new_ticket()
    status, body = await harness.call("GET", f"/api/v1/tickets/{ticket['id']}")
    assert status == 401
    assert body["error"] == "unauthorized"
    status, body = await harness.call("GET", f"/api/v1/tickets/{ticket['id']}", who="agent2")
    assert status == 200
    assert body["ticket"]["id"] == ticket["id"]


async def test_forged_links_are_refused(harness: Harness) -> None:
    ticket_id = (await harness.new_ticket())["id"]
    other_id = (await harness.new_ticket())["id"]
    good = harness.signer.token(ticket_id, NOW)
    expires, signature = good.split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    forged = [
        f"{expires}.{flipped}",  # tampered signature
        f"{int(expires) + 3600}.{signature}",  # extended expiry
        harness.signer.token(other_id, NOW),  # another ticket's link
        LinkSigner("some-other-secret-0123456789").token(ticket_id, NOW),
        "garbage",
        "",
    ]
    for token in forged:
        status, body = await harness.call("GET", f"/api/v1/tickets/{ticket_id}?token={token}")
        assert status == 401, token
        assert body["error"] == "invalid_token"
    assert (await harness.call("GET", f"/api/v1/tickets/{ticket_id}?token={good}"))[0] == 200


async def test_expired_link_is_403(harness: Harness) -> None:
    ticket_id = (await harness.new_ticket())["id"]
    path = link_path(harness.signer.url_for(BASE_URL, ticket_id, harness.clock()))
    harness.clock.now += 599
    assert (await harness.call("GET", path))[0] == 200
    harness.clock.now += 1
    status, body = await harness.call("GET", path)
    assert status == 403
    assert body["error"] == "link_expired"


async def test_valid_link_to_a_missing_ticket_is_404(harness: Harness) -> None:
    token = harness.signer.token("T404", NOW)
    status, body = await harness.call("GET", f"/api/v1/tickets/T404?token={token}")
    assert status == 404
    assert body["error"] == "ticket_not_found"


# -- the feedback flow -----------------------------------------------------------------------


async def test_receiver_accepts_then_posts_feedback_seen_by_the_sender(harness: Harness) -> None:
    ticket_id = await harness.transferred_ticket()
    async with harness.client.ws_connect(
        "/api/v1/events?seat=seat-1001",
        headers={"Authorization": f"Bearer {TOKENS['agent']['token']}"},
    ) as sender:
        assert (await sender.receive_json(timeout=5))["type"] == "subscribed"

        early = await harness.call(
            "POST", f"/api/v1/tickets/{ticket_id}/feedback", who="peer110",
            json={"outcome": "too early"},
        )  # fmt: skip
        assert early[0] == 409
        assert early[1]["error"] == "invalid_transition"

        status, body = await harness.call(
            "POST", f"/api/v1/tickets/{ticket_id}/accept", who="peer110"
        )
        assert status == 201
        assert body["ticket"]["state"] == "accepted"
        assert body["ticket"]["accepted_by"] == "110-pbx"

        status, body = await harness.call(
            "POST", f"/api/v1/tickets/{ticket_id}/feedback", who="peer110",
            json={"outcome": "patrol sent, dispute settled"},
        )  # fmt: skip
        assert status == 201
        assert body["event"]["kind"] == "feedback"

        accepted = await sender.receive_json(timeout=5)
        feedback = await sender.receive_json(timeout=5)
    assert accepted["kind"] == "accepted"
    assert feedback["kind"] == "feedback"
    assert feedback["ticket"]["feedback"][0]["outcome"] == "patrol sent, dispute settled"
    assert feedback["ticket"]["feedback"][0]["by"] == "110-pbx"

    status, body = await harness.call("GET", f"/api/v1/tickets/{ticket_id}", who="agent")
    assert status == 200
    assert [e["kind"] for e in body["events"]] == [
        "created",
        "transfer_requested",
        "ringing",
        "transferred",
        "accepted",
        "feedback",
    ]
    assert [e["seq"] for e in body["events"]] == [1, 2, 3, 4, 5, 6]
    assert "bridge_ticket_feedback_total 1\n" in harness.metrics.render()


async def test_feedback_errors(harness: Harness) -> None:
    ticket_id = await harness.transferred_ticket()
    path = f"/api/v1/tickets/{ticket_id}/feedback"
    assert (await harness.call("POST", path, who="peer12313", json={"outcome": "x"}))[0] == 403
    assert (await harness.call("POST", path, who="peer110", json={"outcome": ""}))[0] == 400
    assert (await harness.call("POST", path, who="peer110", json={"result": "x"}))[0] == 400
    status, body = await harness.call(
        "POST", "/api/v1/tickets/T404/feedback", who="peer110", json={"outcome": "x"}
    )
    assert status == 404
    assert body["error"] == "ticket_not_found"
    stored = await harness.store.get(ticket_id)
    assert stored is not None
    assert stored.state is TicketState.TRANSFERRED


async def test_reject_and_ownership_after_a_three_way_call(harness: Harness) -> None:
    ticket_id = await harness.transferred_ticket()
    base = f"/api/v1/tickets/{ticket_id}"
    status, body = await harness.call(
        "POST", f"{base}/ownership", who="agent", json={"platform": "110", "rule": "first_contact"}
    )
    assert status == 422
    assert body["error"] == "invalid_ticket"
    status, body = await harness.call(
        "POST",
        f"{base}/ownership",
        who="agent",
        json={"platform": "12345", "rule": "first_contact"},
    )
    assert status == 201
    assert body["ticket"]["ownership"]["platform"] == "12345"
    status, body = await harness.call("POST", f"{base}/reject", who="peer110", json={"reason": ""})
    assert status == 400
    status, body = await harness.call(
        "POST", f"{base}/reject", who="peer110", json={"reason": "stays with 12345"}
    )
    assert status == 201
    assert body["ticket"]["state"] == "rejected"
    assert (await harness.call("POST", f"{base}/accept", who="peer110"))[0] == 409


# -- calls -----------------------------------------------------------------------------------


async def test_list_and_get_calls(harness: Harness) -> None:
    status, body = await harness.call("GET", "/api/v1/calls", who="agent")
    assert status == 200
    assert {c["call_id"] for c in body["calls"]} == {"c1", "c2"}
    assert await harness.call("GET", "/api/v1/calls/c1", who="agent") == (
        200,
        {"call": {**answered_calls()["c1"], "supervisions": []}},
    )
    status, body = await harness.call("GET", "/api/v1/calls/nope", who="agent")
    assert status == 404
    assert body["error"] == "call_not_found"


async def test_transfer_stores_the_ticket_before_the_engine_acts(harness: Harness) -> None:
    status, body = await harness.call(
        "POST", "/api/v1/calls/c1/transfer", who="agent",
        json={"target": "110", "mode": "attended", "ticket": DRAFT},
    )  # fmt: skip
    assert status == 202
    assert body["call"]["state"] == "transferring"
    ticket = body["ticket"]
    assert ticket["state"] == "transfer_requested"
    assert ticket["call_id"] == "c1"
    assert ticket["transfer_mode"] == "attended"
    assert body["ticket_url"].startswith(f"{BASE_URL}/api/v1/tickets/{ticket['id']}?token=")
    assert harness.control.transfers == [
        {"call_id": "c1", "target": "110", "mode": "attended", "ticket_id": ticket["id"],
         "actor": "alice"}
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("call_id", "payload", "status", "error"),
    [
        ("nope", {"target": "110", "ticket": DRAFT}, 404, "call_not_found"),
        ("c2", {"target": "110", "ticket": DRAFT}, 409, "call_state"),
        ("c1", {"target": "999", "ticket": DRAFT}, 422, "unprocessable"),
        ("c1", {"target": "110", "mode": "teleport", "ticket": DRAFT}, 400, "bad_request"),
        ("c1", {"target": "110"}, 400, "bad_request"),
        ("c1", {"target": "110", "ticket": DRAFT, "ticket_id": "T1"}, 400, "bad_request"),
        ("c1", {"target": "110", "ticket_id": "T404"}, 404, "ticket_not_found"),
    ],
)
async def test_transfer_errors(
    harness: Harness, call_id: str, payload: dict[str, Any], status: int, error: str
) -> None:
    got, body = await harness.call(
        "POST", f"/api/v1/calls/{call_id}/transfer", who="agent", json=payload
    )
    assert (got, body["error"]) == (status, error)
    assert harness.control.transfers == []
    if status in (400, 404):
        assert await harness.store.list_tickets(TicketQuery()) == []


async def test_transfer_reuses_a_stored_draft_but_not_a_transferred_ticket(
    harness: Harness,
) -> None:
    draft_id = (await harness.new_ticket())["id"]
    status, body = await harness.call(
        "POST", "/api/v1/calls/c1/transfer", who="agent",
        json={"target": "110", "ticket_id": draft_id},
    )  # fmt: skip
    assert status == 202
    assert body["ticket"]["id"] == draft_id
    harness.control.calls["c1"]["state"] = "answered"
    status, body = await harness.call(
        "POST", "/api/v1/calls/c1/transfer", who="agent",
        json={"target": "110", "ticket_id": draft_id},
    )  # fmt: skip
    assert status == 409
    assert body["error"] == "invalid_transition"


async def test_engine_conflict_during_transfer_is_409(harness: Harness) -> None:
    harness.control.fail_next = CallStateConflict("seat leg is on hold")
    status, body = await harness.call(
        "POST", "/api/v1/calls/c1/transfer", who="agent", json={"target": "110", "ticket": DRAFT}
    )
    assert status == 409
    assert body == {"error": "call_state", "detail": "seat leg is on hold"}


async def test_supervise_rings_then_changes_the_mode(harness: Harness) -> None:
    path = "/api/v1/calls/c1/supervise"
    status, body = await harness.call(
        "POST", path, who="supervisor", json={"supervisor": "seat-9001", "mode": "listen"}
    )
    assert status == 202, body
    assert body["supervision"] == {
        "call_id": "c1", "supervisor": "seat-9001", "mode": "listen", "state": "ringing",
    }  # fmt: skip
    status, body = await harness.call(
        "POST", path, who="admin", json={"supervisor": "seat-9001", "mode": "whisper"}
    )
    assert status == 200, body
    assert (body["supervision"]["mode"], body["supervision"]["state"]) == ("whisper", "joined")
    assert [s["actor"] for s in harness.control.supervisions] == ["sue", "root"]


async def test_several_supervisors_on_one_call_up_to_the_bound(harness: Harness) -> None:
    """Each supervisor asked for starts their own supervision, shown with the call; asking
    again for one changes only theirs; one more than the bound is 409."""
    path = "/api/v1/calls/c1/supervise"
    bound = harness.control.max_supervisors
    for n in range(bound):
        status, body = await harness.call(
            "POST", path, who="supervisor", json={"supervisor": f"seat-900{n}", "mode": "listen"}
        )
        assert (status, body["supervision"]["supervisor"]) == (202, f"seat-900{n}"), body
    status, body = await harness.call(
        "POST", path, who="admin", json={"supervisor": "seat-9001", "mode": "barge"}
    )
    assert (status, body["supervision"]["state"]) == (200, "joined"), body
    status, body = await harness.call(
        "POST", path, who="supervisor", json={"supervisor": "seat-9999", "mode": "listen"}
    )
    assert status == 409
    assert body == {
        "error": "call_state",
        "detail": f"the call already has {bound} supervisors, as many as a call may have",
    }
    status, body = await harness.call("GET", "/api/v1/calls/c1", who="supervisor")
    shown = [(s["supervisor"], s["mode"]) for s in body["call"]["supervisions"]]
    assert shown == [(f"seat-900{n}", "barge" if n == 1 else "listen") for n in range(bound)]


@pytest.mark.parametrize(
    "payload",
    [
        {"supervisor": "seat-9001", "mode": "shout"},
        {"supervisor": "seat-9001"},
        {"supervisor": "", "mode": "listen"},
        {"supervisor": "seat-9001", "mode": "listen", "extra": 1},
        ["seat-9001", "listen"],
    ],
)
async def test_supervise_with_a_bad_body_is_400(harness: Harness, payload: Any) -> None:
    status, body = await harness.call(
        "POST", "/api/v1/calls/c1/supervise", who="supervisor", json=payload
    )
    assert status == 400, body
    assert set(body) == {"error", "detail"}
    assert harness.control.supervisions == []


async def test_supervise_unknown_or_unanswered_call(harness: Harness) -> None:
    payload = {"supervisor": "seat-9001", "mode": "listen"}
    status, body = await harness.call(
        "POST", "/api/v1/calls/nope/supervise", who="admin", json=payload
    )
    assert (status, body["error"]) == (404, "call_not_found")
    status, body = await harness.call(
        "POST", "/api/v1/calls/c2/supervise", who="supervisor", json=payload
    )
    assert (status, body["error"]) == (409, "call_state")
    harness.control.fail_next = CallStateConflict("the supervisor's phone is still ringing")
    status, body = await harness.call(
        "POST", "/api/v1/calls/c1/supervise", who="supervisor", json=payload
    )
    assert status == 409
    assert body == {"error": "call_state", "detail": "the supervisor's phone is still ringing"}


@pytest.mark.parametrize("who", ["agent", "peer110"])
async def test_supervise_needs_the_supervise_permission(harness: Harness, who: str) -> None:
    status, body = await harness.call(
        "POST", "/api/v1/calls/c1/supervise", who=who,
        json={"supervisor": "seat-9001", "mode": "barge"},
    )  # fmt: skip
    assert (status, body["error"]) == (403, "forbidden")
    status, _ = await harness.call(
        "POST", "/api/v1/calls/c1/supervise", json={"supervisor": "seat-9001", "mode": "barge"}
    )
    assert status == 401
    assert harness.control.supervisions == []


async def test_dialplan_reload(harness: Harness) -> None:
    status, body = await harness.call("POST", "/api/v1/admin/dialplan/reload", who="admin")
    assert (status, body) == (200, {"ok": True})
    harness.control.reload_result = {"ok": False, "errors": ["plan.toml:3: unknown key 'x'"]}
    status, body = await harness.call("POST", "/api/v1/admin/dialplan/reload", who="admin")
    assert status == 422
    assert body == {"error": "invalid_dialplan", "detail": ["plan.toml:3: unknown key 'x'"]}
    assert harness.control.reloads == 2


async def test_route_suggestion(harness: Harness) -> None:
    status, body = await harness.call(
        "POST", "/api/v1/route/suggest", who="agent", json={"text": "people fighting"}
    )
    assert status == 200
    assert body == {"suggestions": [{"category": "public_order", "destination": "110"}]}
    assert (await harness.call("POST", "/api/v1/route/suggest", who="agent", json={}))[0] == 400


# -- live events -----------------------------------------------------------------------------


async def connect(harness: Harness, who: str, query: str = "") -> aiohttp.ClientWebSocketResponse:
    ws = await harness.client.ws_connect(
        f"/api/v1/events{query}", headers={"Authorization": f"Bearer {TOKENS[who]['token']}"}
    )
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "subscribed"
    return ws


async def test_subscribers_get_only_their_events(harness: Harness) -> None:
    alice = await connect(harness, "agent", "?seat=seat-1001")
    bob = await connect(harness, "agent2", "?seat=seat-1002")
    console = await connect(harness, "supervisor")
    peer = await connect(harness, "peer110")
    try:
        harness.hub.publish({"n": 1}, seats=["seat-1002"])
        harness.hub.publish({"n": 2}, seats=["seat-1001"])
        harness.hub.publish({"n": 3}, platforms=["110"])
        harness.hub.publish({"n": 4}, seats=["seat-1001", "seat-1002"], platforms=["110"])

        async def received(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[int]:
            return [(await ws.receive_json(timeout=5))["n"] for _ in range(count)]

        assert await received(alice, 2) == [2, 4]
        assert await received(bob, 2) == [1, 4]
        assert await received(peer, 2) == [3, 4]
        assert await received(console, 4) == [1, 2, 3, 4]
    finally:
        for ws in (alice, bob, console, peer):
            await ws.close()


async def test_ticket_changes_reach_the_seat_and_platforms(harness: Harness) -> None:
    alice = await connect(harness, "agent")
    peer = await connect(harness, "peer110")
    try:
        ticket = await harness.new_ticket()
        for ws in (alice, peer):
            message = await ws.receive_json(timeout=5)
            assert message["type"] == "ticket"
            assert message["kind"] == "created"
            assert message["ticket"]["id"] == ticket["id"]
    finally:
        await alice.close()
        await peer.close()


@pytest.mark.parametrize(
    ("who", "query", "status"),
    [
        ("agent", "?seat=seat-1002", 403),
        ("agent", "?platform=110", 403),
        ("peer110", "?platform=12345", 403),
        ("peer110", "?seat=seat-1001", 403),
        ("supervisor", "?colour=red", 400),
        (None, "", 401),
    ],
)
async def test_subscription_limits(
    harness: Harness, who: str | None, query: str, status: int
) -> None:
    got, body = await harness.call("GET", f"/api/v1/events{query}", who=who)
    assert got == status
    assert set(body) == {"error", "detail"}


async def test_access_token_in_the_query_for_browsers(harness: Harness) -> None:
    token = TOKENS["supervisor"]["token"]
    async with harness.client.ws_connect(f"/api/v1/events?access_token={token}") as ws:
        hello = await ws.receive_json(timeout=5)
    assert hello == {"type": "subscribed", "seats": [], "platforms": [], "everything": True}
    status, _ = await harness.call("GET", f"/api/v1/calls?access_token={token}")
    assert status == 401


async def test_a_subscriber_that_falls_behind_is_cut_off(harness: Harness) -> None:
    console = await connect(harness, "supervisor")
    healthy = await connect(harness, "agent", "?seat=seat-1001")
    # No await between publishes: the console's handler cannot drain its queue (size 4).
    for n in range(6):
        harness.hub.publish({"n": n})
    harness.hub.publish({"n": "for alice"}, seats=["seat-1001"])
    closing = await console.receive(timeout=5)
    assert closing.type is WSMsgType.CLOSE
    assert closing.data == aiohttp.WSCloseCode.TRY_AGAIN_LATER
    assert (await healthy.receive_json(timeout=5))["n"] == "for alice"
    await healthy.close()
    assert "bridge_event_subscribers_cut_off_total 1\n" in harness.metrics.render()


async def test_server_shutdown_closes_subscribers(harness: Harness) -> None:
    ws = await connect(harness, "supervisor")
    harness.hub.close()
    closing = await ws.receive(timeout=5)
    assert closing.type is WSMsgType.CLOSE
    assert closing.data == aiohttp.WSCloseCode.GOING_AWAY


async def test_a_ticket_link_still_works_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "tickets.sqlite3"
    auth = AuthConfig.model_validate({"tokens": list(TOKENS.values())})

    def app_for(store: SqliteTicketStore) -> Any:
        return create_app(
            store=store,
            control=FakeCallControl(calls=answered_calls(), store=store),
            auth=auth,
            signer=LinkSigner("link-secret-for-tests-0123456789"),
            hub=EventHub(),
            base_url=BASE_URL,
            clock=FakeClock(NOW),
        )

    store = await SqliteTicketStore.open(path)
    try:
        async with (
            TestClient(TestServer(app_for(store))) as client,
            client.post(
                "/api/v1/calls/c1/transfer",
                json={"target": "110", "ticket": DRAFT},
                headers={"Authorization": f"Bearer {TOKENS['agent']['token']}"},
            ) as response,
        ):
            assert response.status == 202
            url = (await response.json())["ticket_url"]
    finally:
        await store.close()

    store = await SqliteTicketStore.open(path)
    try:
        async with (
            TestClient(TestServer(app_for(store))) as client,
            client.get(link_path(url)) as response,
        ):
            assert response.status == 200
            body = await response.json()
    finally:
        await store.close()
    assert body["ticket"]["state"] == "transfer_requested"
    assert body["ticket"]["summary"] == DRAFT["summary"]
    assert [e["kind"] for e in body["events"]] == ["created", "transfer_requested"]
