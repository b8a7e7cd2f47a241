"""Transfers as users see them: a ticket is stored before any INVITE leaves, travels with the
call, and records every step.

The call core runs the SIP side (:mod:`bridge.calls.transfer`); this module is its asyncio
partner. Every trigger (the HTTP API, a REFER from the agent's phone, the DTMF transfer key)
ends in :meth:`TransferCoordinator.begin`, which resolves the target through the dial plan,
appends ``transfer_requested`` to the ticket in the store, and only then asks the core to ring
the target with the ticket headers of design.md. The core's transfer events come back through
one ordered queue and become the ticket's ``ringing``/``transferred``/``failed`` events, each
stored first and then pushed to the subscribed seats (screen pop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.calls.call import Call, CallEvent
from bridge.calls.transfer import (
    CALL_ENDED,
    CALLER_HUNG_UP,
    TransferDesk,
    TransferEvent,
    TransferRequest,
)
from bridge.sidecar.control import CallNotFound, CallStateConflict, UnprocessableRequest
from bridge.sidecar.events import EventHub, publish_ticket
from bridge.sidecar.links import LinkSigner
from bridge.sip.errors import LocalProtocolError
from bridge.tickets import lifecycle
from bridge.tickets.lifecycle import Transition
from bridge.tickets.model import Ticket, TicketDraft, TransferMode, new_ticket_id
from bridge.tickets.store import TicketStore

if TYPE_CHECKING:
    from bridge.engine import Engine

CLOSE_S = 5.0
"""Seconds close() waits for queued transfer steps to be stored."""

log = logging.getLogger("bridge.transfers")

UNCLASSIFIED = "unclassified"
"""Category of a ticket the bridge opens itself for a REFER or key press with no draft."""

_FAILURE_CODES = {486: "busy", 600: "busy", 603: "rejected", 403: "rejected", 480: "no_answer"}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Destined:
    """Where a ticket's transfer in progress rings, so that its ringing and transferred
    events reach the receiving platform's seats; kept until that transfer's final event,
    and only for the transfer that set it, since a new transfer of the same ticket may have
    begun before the last one's final event was recorded."""

    call_id: str
    transfer_id: str
    platform: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _CallEnded:
    """Queued behind the call's last transfer events, so what the coordinator keeps for the
    call is dropped only once they are recorded."""

    call_id: str


def ticket_headers(ticket: Ticket, url: str) -> tuple[tuple[str, str], ...]:
    """The headers design.md puts on every INVITE the bridge sends for a transfer."""
    headers = [
        ("Call-Info", f"<{url}>;purpose=ticket"),
        ("User-to-User", f"{ticket.id.encode().hex()};encoding=hex"),
        ("X-Ticket-Id", ticket.id),
    ]
    if ticket.urgent:
        headers.append(("Priority", "emergency"))
    return tuple(headers)


class TransferCoordinator:
    def __init__(
        self, engine: Engine, store: TicketStore, hub: EventHub, signer: LinkSigner
    ) -> None:
        self.engine = engine
        self.store = store
        self.hub = hub
        self.signer = signer
        self._queue: asyncio.Queue[TransferEvent | _CallEnded] = asyncio.Queue()
        self._requests: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._platform_of_ticket: dict[str, _Destined] = {}
        self._ticket_of_call: dict[str, str] = {}
        """The ticket a key press or REFER opened for a call, offered again to its next one
        while the call lasts."""
        self._ended: dict[str, None] = {}
        """Calls gone since the last flush, in order."""

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())
        self.engine.event_listeners.append(self._on_call_events)
        self.engine.flush_listeners.append(self._collect)

    async def close(self) -> None:
        """Record the steps still queued, then stop: a ticket's last state change is not lost
        with the process, and a store that no longer answers cannot hold the stop up."""
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.settled(), CLOSE_S)
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def _collect(self) -> None:
        core = self.engine.core
        for request in core.take_transfer_requests():
            # A key press must not wait behind other calls' ticket updates: it goes at once.
            task = asyncio.get_running_loop().create_task(self._guarded(request))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
        for event in core.take_transfer_events():
            self._queue.put_nowait(event)
        for call_id in self._ended:
            self._queue.put_nowait(_CallEnded(call_id=call_id))
        self._ended.clear()

    def _on_call_events(self, events: list[CallEvent]) -> None:
        """Note the calls that are gone (the core drops a call once all its legs ended).
        The engine calls this before :meth:`_collect` in the same flush, which queues them
        after that flush's transfer events."""
        calls = self.engine.core.calls
        for event in events:
            if event.call_id not in calls:
                self._ended[event.call_id] = None

    async def _guarded(self, request: TransferRequest) -> None:
        try:
            await self._from_phone(request)
        except Exception:
            log.exception("transfer request failed")

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, _CallEnded):
                    self._forget(item.call_id)
                else:
                    await self._record(item)
            except Exception:
                log.exception("transfer step failed")
            finally:
                self._queue.task_done()

    async def settled(self) -> None:
        """Every step queued so far is recorded (its ticket stored, its events published)."""
        await self._queue.join()

    # -- triggers --------------------------------------------------------------------------

    async def begin(
        self,
        call_id: str,
        target: str,
        mode: TransferMode,
        ticket: Ticket,
        *,
        actor: str,
        refer_leg: str | None = None,
        refer_id: int | None = None,
        fresh: Transition | None = None,
    ) -> dict[str, Any]:
        """``fresh`` is a ticket not stored yet (a key press with no draft): it is stored
        together with its transfer request, in one transaction."""
        engine = self.engine
        call = engine.core.calls.get(call_id)
        if call is None:
            raise CallNotFound(f"no call {call_id}")
        platform, destinations = engine.routing.resolve_target(target, engine.now())
        if not destinations:
            raise UnprocessableRequest(f"no destination for target {target!r}")

        def requested(t: Ticket) -> Transition:
            return lifecycle.request_transfer(
                t,
                target=target,
                mode=mode,
                actor=actor,
                now=time.time(),
                call_id=call_id,
                destination=platform,
            )

        if fresh is not None:
            transition = await self.store.create_then(fresh, requested)
        else:
            transition = await self.store.update(ticket.id, requested)
        headers = ticket_headers(transition.ticket, self.signer.ticket_url(ticket.id, time.time()))
        try:
            transfer = engine.core.transfers.start(
                call_id,
                destinations,
                engine.now(),
                mode=mode,
                headers=headers,
                ticket_id=ticket.id,
                refer_leg=refer_leg,
                refer_id=refer_id,
            )
            refusal: Exception | None = None
            self._platform_of_ticket[ticket.id] = _Destined(
                call_id=call_id, transfer_id=transfer.transfer_id, platform=platform
            )
            # Whoever joins the call later (a supervisor) gets this ticket's headers too.
            call.ticket_id = ticket.id
            call.agent_seat = transition.ticket.sending_seat or self._agent_seat(call)
        except (LookupError, LocalProtocolError) as exc:
            refusal = exc
        engine.flush()  # the INVITE leaves before anyone is told
        if fresh is not None:
            publish_ticket(self.hub, fresh)
        publish_ticket(self.hub, transition)
        if isinstance(refusal, LookupError):
            raise CallNotFound(f"no call {call_id}") from refusal
        if isinstance(refusal, LocalProtocolError):
            await self._fail_ticket(ticket.id, "refused", None)
            raise CallStateConflict(refusal.detail) from refusal
        summary = engine.core.calls[call_id].summary() if call_id in engine.core.calls else {}
        return {**summary, "transfer": {"target": target, "destination": platform, "mode": mode}}

    def _agent_seat(self, call: Call) -> str | None:
        """The seat of the agent handing the call over when its ticket names none: the agent's
        leg when it reaches a seat (not a trunk), else the one the call already has."""
        agent = TransferDesk.agent_leg(call)
        if agent is not None and self.engine.seats.known(agent.peer):
            return agent.peer
        return call.agent_seat

    async def _from_phone(self, request: TransferRequest) -> None:
        """A REFER or a transfer key: use the call's draft ticket, or open one."""
        core = self.engine.core
        call = core.calls.get(request.call_id)
        if call is None:
            return
        # The ticket belongs to the desk whose agent pressed the key, not to the caller's trunk.
        origin = self.engine.routing.seat_platform(request.requested_by) or call.origin
        ticket, fresh = await self._ticket_for_call(request, origin)
        try:
            await self.begin(
                request.call_id,
                request.target,
                "three_way" if request.mode == "three_way" else "blind",
                ticket,
                actor=request.requested_by,
                refer_leg=request.refer_leg,
                refer_id=request.refer_id,
                fresh=fresh,
            )
        except (UnprocessableRequest, CallStateConflict, CallNotFound) as exc:
            log.warning("transfer from a phone refused: %s", exc.detail)
            core.fail_transfer_request(request, 404, self.engine.now())
            self.engine.flush()

    async def _ticket_for_call(
        self, request: TransferRequest, origin: str
    ) -> tuple[Ticket, Transition | None]:
        """The ticket opened for this call's earlier key press or REFER, if it may be retried;
        else a new one (the agent's desktop completes its category and summary later)."""
        known = self._ticket_of_call.get(request.call_id)
        if known is not None:
            ticket = await self.store.get(known)
            allowed = lifecycle.allowed_events(ticket.state) if ticket else frozenset()
            if ticket is not None and lifecycle.EventKind.TRANSFER_REQUESTED in allowed:
                return ticket, None
        draft = TicketDraft(
            origin=origin,
            category=UNCLASSIFIED,
            sending_seat=request.requested_by,
            summary="坐席话机发起转接（待补充诉求）",
        )
        now = time.time()
        transition = lifecycle.create(
            draft, ticket_id=new_ticket_id(now), actor=request.requested_by, now=now
        )
        if request.call_id in self.engine.core.calls:
            # Else the call ended during the awaits above and its _CallEnded is queued already.
            self._ticket_of_call[request.call_id] = transition.ticket.id
        return transition.ticket, transition

    # -- the core's transfer events --------------------------------------------------------

    async def _record(self, event: TransferEvent) -> None:
        if event.ticket_id is None:
            return
        destined = self._platform_of_ticket.get(event.ticket_id)
        ours = destined is not None and destined.transfer_id == event.transfer_id
        if ours and event.kind in ("transferred", "failed"):
            del self._platform_of_ticket[event.ticket_id]
        platform = destined.platform if destined is not None else ""
        now = time.time()
        if event.kind == "ringing":
            transition = await self.store.update(
                event.ticket_id,
                lambda t: lifecycle.mark_ringing(
                    t, actor="bridge", now=now, status=event.status or 180
                ),
            )
        elif event.kind == "transferred":
            transition = await self.store.update(
                event.ticket_id, lambda t: lifecycle.mark_transferred(t, actor="bridge", now=now)
            )
        elif event.kind == "failed":
            code = _FAILURE_CODES.get(event.status or 0, "unreachable")
            if event.reason in (CALLER_HUNG_UP, CALL_ENDED):
                code = "cancelled"
            await self._fail_ticket(event.ticket_id, code, event.status)
            return
        else:
            return
        # Screen pop: the receiving platform's seats see the ticket as the call rings.
        publish_ticket(self.hub, transition, platforms=(platform,))

    def _forget(self, call_id: str) -> None:
        """The call is gone: no key press or REFER will reuse its ticket, and a transfer
        whose final event never came will send none now."""
        self._ticket_of_call.pop(call_id, None)
        if self._platform_of_ticket:
            for ticket_id, destined in list(self._platform_of_ticket.items()):
                if destined.call_id == call_id:
                    del self._platform_of_ticket[ticket_id]

    async def _fail_ticket(self, ticket_id: str, reason: str, status: int | None) -> None:
        transition = await self.store.update(
            ticket_id,
            lambda t: lifecycle.mark_failed(
                t, reason=reason, actor="bridge", now=time.time(), sip_status=status
            ),
        )
        publish_ticket(self.hub, transition)
