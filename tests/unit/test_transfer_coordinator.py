"""The coordinator of tickets and transfers over a long run: the B2BUA core with raw SIP and a
fake clock under it, a SQLite ticket store, and an engine reduced to its flush. A bridge runs
for months; what it keeps per transfer or per call must go when the call does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_b2bua import CALLEE, CALLER, SDP, Harness, answer, invite, request_in_dialog
from test_transfer import TARGET, dest

from bridge.calls.call import CallEvent
from bridge.calls.ports import Destination
from bridge.calls.transfer import TransferRequest
from bridge.sidecar.events import EventHub
from bridge.sidecar.links import LinkSigner
from bridge.sip.message import Request, Response
from bridge.tickets import lifecycle
from bridge.tickets.model import TicketDraft, TicketState, new_ticket_id
from bridge.tickets.sqlite_store import SqliteTicketStore
from bridge.transfers import TransferCoordinator

TRANSFERS = 6


class TransferRouting:
    def resolve_target(self, target: str, now: float) -> tuple[str, list[Destination]]:
        return "110", [dest(TARGET)]

    def seat_platform(self, seat: str) -> str | None:
        return None


class NoSeats:
    def known(self, peer: str) -> bool:
        return False


class FlushingEngine:
    """What the coordinator uses of :class:`bridge.engine.Engine`: its core, and a flush that
    hands the core's call events to the event listeners before calling the flush listeners,
    as the engine's does."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.core = h.core
        self.routing = TransferRouting()
        self.seats = NoSeats()
        self.event_listeners: list[Callable[[list[CallEvent]], None]] = []
        self.flush_listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        return self.h.now

    def flush(self) -> None:
        events = self.core.take_events()
        if events:
            for listener in self.event_listeners:
                listener(events)
        for listener in self.flush_listeners:
            listener()

    def feed(self, data: bytes, source: tuple[str, int]) -> None:
        self.h.feed(data, source)
        self.flush()


def establish(engine: FlushingEngine, n: int) -> tuple[str, Response]:
    """Call number ``n`` answered by the agent (its own Call-ID and branches): the core's call
    id and the bridge's 200 OK to the caller."""
    h = engine.h
    engine.feed(invite(call_id=f"c{n}", branch=f"z9hG4bKinv{n}"), CALLER)
    inv = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    engine.feed(answer(inv, 200, sdp=SDP), CALLEE)
    ok = next(m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status == 200)
    engine.feed(request_in_dialog("ACK", ok, 1, f"z9hG4bKack{n}"), CALLER)
    (call,) = (c for c in h.core.calls.values() if c.caller.invite.call_id == f"c{n}")
    return call.call_id, ok


def answer_byes(engine: FlushingEngine) -> None:
    for destination, message in engine.h.sent():
        if isinstance(message, Request) and message.method == "BYE":
            engine.feed(answer(message, 200, tag=""), destination)


async def drained(coordinator: TransferCoordinator) -> None:
    await asyncio.wait_for(coordinator.settled(), 10)


async def started(
    tmp_path: Path,
) -> tuple[Harness, FlushingEngine, SqliteTicketStore, TransferCoordinator]:
    """A core harness, its engine stand-in, a SQLite store and the coordinator running on them."""
    h = Harness()
    engine = FlushingEngine(h)
    store = await SqliteTicketStore.open(tmp_path / "tickets.sqlite3")
    signer = LinkSigner("link-secret-for-tests-0123456789", ttl_seconds=600)
    coordinator = TransferCoordinator(engine, store, EventHub(), signer)  # type: ignore[arg-type]
    coordinator.start()
    return h, engine, store, coordinator


async def stored_ticket(store: SqliteTicketStore) -> Any:
    now = time.time()
    draft = TicketDraft(origin="12345", category="criminal", sending_seat="agent2001")
    transition = lifecycle.create(draft, ticket_id=new_ticket_id(now), actor="agent", now=now)
    await store.create(transition)
    return transition.ticket


async def test_nothing_is_kept_of_transfers_whose_calls_ended(tmp_path: Path) -> None:
    """Transfers from the API and from the agent's phone complete, their calls end; one more
    call is hung up through the API while its target rings. Afterwards the coordinator and
    the core's transfer desk keep nothing of any of them, and every ticket reached a final
    state."""
    h, engine, store, coordinator = await started(tmp_path)
    tickets = []
    try:
        for n in range(TRANSFERS + 1):
            call_id, ok = establish(engine, n)
            h.sent()
            if n % 2:
                request = TransferRequest(
                    call_id=call_id, target="110", mode="blind", requested_by="agent2001"
                )
                await coordinator._from_phone(request)
                tickets.append(coordinator._ticket_of_call[call_id])
            else:
                ticket = await stored_ticket(store)
                await coordinator.begin(call_id, "110", "blind", ticket, actor="agent2001")
                tickets.append(ticket.id)
            target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
            engine.feed(answer(target_invite, 180, tag="t1"), TARGET)
            await drained(coordinator)
            if n == TRANSFERS:
                h.core.hangup(call_id, h.now)
                engine.flush()
                for destination, message in h.sent():
                    if isinstance(message, Request) and message.method in ("BYE", "CANCEL"):
                        engine.feed(answer(message, 200, tag=""), destination)
                engine.feed(answer(target_invite, 487, tag="t1"), TARGET)
            else:
                contact = "sip:t@127.0.0.1:5090"
                engine.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact=contact), TARGET)
                answer_byes(engine)
                engine.feed(request_in_dialog("BYE", ok, 2, f"z9hG4bKbye{n}"), CALLER)
                answer_byes(engine)
            await drained(coordinator)
            assert call_id not in h.core.calls
        assert h.core.transfers.by_call == {}
        assert coordinator._platform_of_ticket == {}
        assert coordinator._ticket_of_call == {}
        assert coordinator._ended == {}
        states = [ticket.state for ticket in [await store.get(t) for t in tickets] if ticket]
        assert states == [TicketState.TRANSFERRED] * TRANSFERS + [TicketState.FAILED]
    finally:
        await coordinator.close()
        await store.close()


async def test_closing_stores_the_transfer_steps_still_queued(tmp_path: Path) -> None:
    h, engine, store, coordinator = await started(tmp_path)
    try:
        call_id, _ = establish(engine, 0)
        ticket = await stored_ticket(store)
        await coordinator.begin(call_id, "110", "blind", ticket, actor="agent2001")
        target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
        contact = "sip:t@127.0.0.1:5090"
        engine.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact=contact), TARGET)
        await coordinator.close()  # the service stops right after the target answered
        stored = await store.get(ticket.id)
    finally:
        await store.close()
    assert stored is not None
    assert stored.state is TicketState.TRANSFERRED
