"""The B2BUA core: SIP in, SIP out, calls in between. Sans-IO.

Theory of operation
-------------------
Bytes come in through :meth:`B2BUA.receive` with their source and the current time. They are
parsed, handed to the transaction layer (RFC 3261 §17), and what the layer passes up is
dispatched here: new INVITEs become calls, responses advance the outgoing leg of their call,
in-dialog requests are matched to a leg by (Call-ID, our tag) and mirrored on the other leg.
Nothing here touches a socket or a clock: bytes to send collect in the transaction layer's
outbox (:meth:`take_outgoing`), timers are exposed through :meth:`next_deadline`, and every
state change of a call is appended to :attr:`events` for the audit log and live events.

Each party is reached through a dialog the bridge owns (a leg); SDP is rewritten on the way
through so both parties send RTP to the bridge's anchored media ports.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.calls import indialog, legs, outgoing, reinvite, reoffer, sdpmap, teardown, unreachable
from bridge.calls.admission import Admission, Refusal
from bridge.calls.call import (
    Call,
    CallEvent,
    CallInput,
    CallState,
    Cancel,
    Leg,
    LegRole,
    LegState,
    MediaTarget,
)
from bridge.calls.keys import KeyBuffer
from bridge.calls.legs import ALLOW
from bridge.calls.ports import Destination, Media, MediaUnavailable, Origin, Routing
from bridge.calls.reinvite import PendingReinvite
from bridge.calls.supervise import SuperviseDesk
from bridge.calls.transfer import TransferDesk, TransferEvent, TransferRequest
from bridge.sip import transaction as tx
from bridge.sip.checks import check_request, check_response
from bridge.sip.dialog import Dialog
from bridge.sip.errors import RemoteProtocolError
from bridge.sip.ids import random_hex
from bridge.sip.message import (
    Request,
    Response,
    error_response,
    make_response,
    parse_message,
)

log = logging.getLogger("bridge.calls")

Address = tuple[str, int]

# §8.2.1: methods we know but do not accept get 405; anything else is 501.
_KNOWN_NOT_ALLOWED = frozenset({"SUBSCRIBE", "PUBLISH", "MESSAGE", "PRACK"})
SUPPORTED: frozenset[str] = frozenset()
"""Option tags we implement (§19.2); a Require naming anything else gets 420."""


def new_tag() -> str:
    return random_hex(5)


@dataclass(slots=True)
class Counters:
    parse_errors: int = 0
    dropped_responses: int = 0
    calls_started: int = 0
    calls_answered: int = 0
    calls_failed: int = 0
    calls_refused: int = 0
    unknown_dialog: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class B2BUA:
    """Routes calls between trunks and seats; owns every leg and its dialog."""

    def __init__(
        self,
        *,
        local: Address,
        advertised_host: str,
        routing: Routing,
        media: Media,
        transactions: tx.TransactionLayer | None = None,
        user_agent: str = "bridge",
        authenticate_seat: Callable[[Request, Address, float], Response | Origin] | None = None,
        handle_register: Callable[[Request, Address, str, float], Response] | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.local = local
        self.host = advertised_host
        self.routing = routing
        self.media = media
        self.txl = transactions if transactions is not None else tx.TransactionLayer()
        self.user_agent = user_agent
        self.authenticate_seat = authenticate_seat
        self.handle_register = handle_register
        self.calls: dict[str, Call] = {}
        self.events: list[CallEvent] = []
        self.counters = Counters()
        self.accepting = True
        self.admission = admission if admission is not None else Admission()
        self._ids = itertools.count(1)
        self._by_dialog: dict[tuple[str, str], tuple[str, str]] = {}
        self._by_client: dict[str, tuple[str, str]] = {}
        self._by_server: dict[str, tuple[str, str]] = {}
        self._reinvites: dict[str, PendingReinvite] = {}
        self._ring_deadlines: dict[tuple[str, str], float] = {}
        self._ring_heap: list[tuple[float, str, str]] = []
        self._pending_destinations: dict[str, list[Destination]] = {}
        self._reinvite_retries: list[tuple[float, int, str, Leg, int]] = []
        self._retry_ids = itertools.count()
        self._notifies: dict[str, tuple[str, Leg, int | None]] = {}
        """NOTIFYs for a REFER still waiting for their final response: the call, the leg
        and the REFER (its ``id``) whose implicit subscription each belongs to."""
        self.transfers = TransferDesk(self)
        self.supervision = SuperviseDesk(self)
        self._keys: dict[str, KeyBuffer] = {}
        self.transfer_requests: list[TransferRequest] = []
        """Transfers asked for by a REFER or a key press, waiting for the engine to store
        their ticket first (store first, then signal) and call ``transfers.start``."""

    # -- I/O boundary ------------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, transport: str, now: float) -> None:
        try:
            message = parse_message(data, stream=transport != "UDP")
        except RemoteProtocolError as exc:
            self.counters.parse_errors += 1
            reply = error_response(data, exc, to_tag=new_tag())
            if reply is not None:
                self.txl.send_stateless(reply, source, transport)
            return
        if isinstance(message, Response) and check_response(message) is not None:
            self.counters.dropped_responses += 1
            return
        for event in self.txl.receive(message, source, transport, now):
            self._dispatch(event, now)

    def handle_timers(self, now: float) -> None:
        for event in self.txl.handle_timers(now):
            self._dispatch(event, now)
        heap = self._ring_heap
        while heap and heap[0][0] <= now:
            deadline, call_id, leg_id = heapq.heappop(heap)
            if self._ring_deadlines.get((call_id, leg_id)) == deadline:
                del self._ring_deadlines[(call_id, leg_id)]
                teardown.ring_timeout(self, call_id, leg_id, now)
        reoffer.retry_reinvites(self, now)

    def transport_error(self, destination: Address, transport: str, now: float) -> None:
        """The transport could not reach ``destination`` (a refused TCP connect): the
        transactions sending there end now and each client one reads as a 503 (RFC 3261
        §8.1.3.1, §18.4), so an INVITE fails over at once instead of after Timer B; a server
        one means its party is gone (§17.2.4, :mod:`bridge.calls.unreachable`)."""
        for event in self.txl.transport_error(destination, transport, now):
            self._dispatch(event, now)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self.txl.next_deadline(),) if d is not None]
        heap = self._ring_heap
        while heap and self._ring_deadlines.get((heap[0][1], heap[0][2])) != heap[0][0]:
            heapq.heappop(heap)  # cancelled: lazy deletion keeps every change O(log n)
        if heap:
            deadlines.append(heap[0][0])
        if self._reinvite_retries:
            deadlines.append(self._reinvite_retries[0][0])
        return min(deadlines) if deadlines else None

    def take_outgoing(self) -> list[tx.Outgoing]:
        return self.txl.take_outgoing()

    def take_events(self) -> list[CallEvent]:
        events, self.events = self.events, []
        return events

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch(self, event: object, now: float) -> None:
        if isinstance(event, tx.RequestReceived):
            self._on_request(event.request, event.source, event.transport, event.server_key, now)
        elif isinstance(event, tx.ResponseReceived):
            self._on_response(event.response, event.client_key, now)
        elif isinstance(event, tx.ClientTimeout):
            timeout = make_response(event.request, 408, "Request Timeout")
            self._on_response(timeout, event.client_key, now)
        elif isinstance(event, tx.ClientTransportError):
            failed = make_response(event.request, 503, "Unreachable")
            self._on_response(failed, event.client_key, now)
        elif isinstance(event, tx.AckTimeout):
            teardown.ack_timeout(self, event.server_key, now)
        elif isinstance(event, tx.ServerTransportError):
            unreachable.on_server_transport_error(self, event, now)

    def _on_request(
        self, request: Request, source: Address, transport: str, key: str | None, now: float
    ) -> None:
        refusal = check_request(request, supported=SUPPORTED)
        if refusal is not None:
            if key is not None:
                if refusal.to.tag is None:
                    refusal.headers.set("To", str(refusal.to.with_tag(new_tag())))
                self.txl.send_response(key, refusal, now)
            return
        if request.method == "ACK":
            self._on_ack(request, now)
            return
        assert key is not None
        if request.to.tag is not None and request.method == "CANCEL":
            reinvite.on_cancel(self, request, key, now)
            return
        if request.to.tag is not None:
            indialog.on_in_dialog(self, request, key, now)
            return
        method = request.method
        if method == "INVITE":
            self._on_invite(request, source, transport, key, now)
        elif method == "CANCEL":
            teardown.on_cancel(self, request, key, now)
        elif method == "OPTIONS":
            response = make_response(request, 200, to_tag=new_tag())
            self._decorate(response)
            response.headers.add("Accept", "application/sdp")
            self.txl.send_response(key, response, now)
        elif method == "REGISTER" and self.handle_register is not None:
            self.txl.send_response(key, self.handle_register(request, source, transport, now), now)
        elif method in ("BYE", "UPDATE", "INFO", "REFER", "NOTIFY", "PRACK"):
            self.counters.unknown_dialog += 1
            self._respond(request, key, 481, now)
        elif method in _KNOWN_NOT_ALLOWED or method == "REGISTER":
            response = make_response(request, 405, to_tag=new_tag())
            self._decorate(response)
            self.txl.send_response(key, response, now)
        else:
            self._respond(request, key, 501, now)

    def _respond(
        self, request: Request, key: str, status: int, now: float, reason: str | None = None
    ) -> None:
        response = make_response(request, status, reason, to_tag=new_tag())
        self._decorate(response)
        self.txl.send_response(key, response, now)

    def _decorate(self, response: Response) -> None:
        response.headers.add("Allow", ALLOW)
        response.headers.add("Server", self.user_agent)

    # -- new calls ---------------------------------------------------------------------------

    def _on_invite(
        self, request: Request, source: Address, transport: str, key: str, now: float
    ) -> None:
        if not self.accepting:
            self._respond(request, key, 503, now, "Shutting Down")
            return
        origin = self.routing.identify(request, source)
        if origin is None:
            if self.authenticate_seat is None:
                self._respond(request, key, 403, now)
                return
            verdict = self.authenticate_seat(request, source, now)
            if isinstance(verdict, Response):
                self.txl.send_response(key, verdict, now)
                return
            origin = verdict
        route = self.routing.route(request, origin, now)
        if route is not None and route.destinations:
            refusal = self.admission.admit(
                now=now, in_progress=len(self.calls), urgent=route.urgent
            )
            if refusal is not None:
                self._refuse(request, key, origin, refusal, now)
                return
        call_id = f"C{next(self._ids):06d}-{random_hex(3)}"
        call = Call(call_id=call_id, created_at=now, origin=origin.platform)
        caller = Leg(
            leg_id="a",
            role=LegRole.CALLER,
            incoming=True,
            state=LegState.INCOMING,
            remote=source,
            transport=transport,
            peer=origin.name,
            invite=request,
            server_key=key,
            local_tag=new_tag(),
        )
        call.legs["a"] = caller
        call.caller_leg = "a"
        self.calls[call_id] = call
        self.counters.calls_started += 1
        self.index_leg(call, caller)
        self.txl.send_response(key, make_response(request, 100), now)
        if route is None or not route.destinations:
            self._record(call.apply(CallInput.NO_ROUTE, now, reason="no route"))
            outgoing.fail_caller(self, call, 404, "No Route", now)
            return
        self._pending_destinations[call_id] = list(route.destinations)
        try:
            caller.media = self.media.allocate()
        except MediaUnavailable:
            self._record(call.apply(CallInput.NO_ROUTE, now, reason="no media ports"))
            outgoing.fail_caller(self, call, 503, "Media Ports Exhausted", now)
            return
        self._record(call.apply(CallInput.ROUTED, now, reason=route.reason))
        outgoing.try_next(self, call, now)

    def _refuse(
        self, request: Request, key: str, origin: Origin, refusal: Refusal, now: float
    ) -> None:
        """503 with Retry-After (RFC 3261 §21.5.4) before any call, leg or port exists: under
        overload a refusal must cost far less than the call it sheds. The audit trail still
        gets its line, under a call id of its own."""
        response = make_response(request, 503, None, to_tag=new_tag())
        response.headers.add("Retry-After", str(refusal.retry_after))
        self.txl.send_response(key, response, now)
        self.counters.calls_refused += 1
        call_id = f"C{next(self._ids):06d}-{random_hex(3)}"
        data = {"reason": refusal.reason, "origin": origin.platform}
        self._record(
            CallEvent(at=now, call_id=call_id, kind="refused", state=CallState.ENDED, data=data)
        )

    def via(self, transport: str) -> str:
        return f"SIP/2.0/{transport} {self.host}:{self.local[1]};branch={tx.new_branch()};rport"

    def contact(self, transport: str) -> str:
        params = ";transport=tcp" if transport == "TCP" else ""
        return f"<sip:bridge@{self.host}:{self.local[1]}{params}>"

    # -- responses on outgoing legs ----------------------------------------------------------

    def _on_response(self, response: Response, key: str | None, now: float) -> None:
        if key is None:
            self._reack(response)
            return
        if key in self._notifies:
            indialog.on_notify_response(self, response, key, now)
            return
        found = self._by_client.get(key)
        if found is None:
            reinvite.on_reinvite_response(self, response, key, now)
            return
        call = self.calls.get(found[0])
        if call is None:
            if response.status >= 200:
                self._by_client.pop(key, None)
            return
        leg = call.legs[found[1]]
        if response.cseq.method == "INVITE" and leg.cancel is not Cancel.NONE:
            legs.on_cancelled_response(self, call, leg, response, now)
        elif response.cseq.method == "INVITE" and leg.role in (LegRole.TARGET, LegRole.SUPERVISOR):
            if response.status >= 200:
                self._by_client.pop(key, None)
            if leg.role is LegRole.TARGET:
                self.transfers.on_target_response(call, leg, response, now)
            else:
                self.supervision.on_response(call, leg, response, now)
        elif response.cseq.method == "INVITE":
            outgoing.on_invite_response(self, call, leg, response, now)
        elif response.cseq.method == "BYE" and response.status >= 200:
            self._by_client.pop(key, None)
            teardown.leg_gone(self, call, leg, now)

    def _reack(self, response: Response) -> None:
        """A 2xx to our INVITE retransmitted after its transaction ended: its ACK was lost, so
        the UAC core sends it again (§13.2.2.4); anything else is a stray and is dropped."""
        tag = response.from_.tag
        found = self._by_dialog.get((response.call_id, tag or ""))
        call = self.calls.get(found[0]) if found else None
        if found is None or call is None or not 200 <= response.status < 300:
            self.counters.dropped_responses += 1
            return
        leg = call.legs[found[1]]
        if leg.dialog is None or response.cseq.method != "INVITE":
            self.counters.dropped_responses += 1
            return
        ack = leg.dialog.create_ack(response.cseq.seq)
        ack.headers.prepend("Via", self.via(leg.transport))
        self.txl.send_stateless(ack, self._next_hop(leg.dialog, leg), leg.transport)

    # -- requests on established legs --------------------------------------------------------

    def _on_ack(self, request: Request, now: float) -> None:
        found = self._find_leg(request)
        if found is not None and not teardown.send_deferred_bye(self, *found, now):
            indialog.on_ack(self, found[0], found[1], request, now)

    def _find_leg(self, request: Request) -> tuple[Call, Leg] | None:
        tag = request.to.tag
        if tag is None:
            return None
        found = self._by_dialog.get((request.call_id, tag))
        if found is None:
            return None
        call = self.calls.get(found[0])
        if call is None:
            return None
        return call, call.legs[found[1]]

    # -- transfers (the SIP side is in transfer.py, in-dialog handling in indialog.py) ----------

    def on_digit(self, media_leg: object, digit: str, now: float) -> None:
        indialog.on_digit(self, media_leg, digit, now)

    def fail_transfer_request(self, request: TransferRequest, status: int, now: float) -> None:
        indialog.fail_transfer_request(self, request, status, now)

    def send_notify(
        self,
        call: Call,
        leg: Leg,
        status: int,
        reason: str,
        final: bool,
        now: float,
        refer_id: int | None = None,
    ) -> None:
        indialog.send_notify(self, call, leg, status, reason, final, now, refer_id)

    def resume(self, call: Call, leg: Leg, now: float) -> None:
        reoffer.resume(self, call, leg, now)

    def take_transfer_events(self) -> list[TransferEvent]:
        events, self.transfers.events = self.transfers.events, []
        return events

    def take_transfer_requests(self) -> list[TransferRequest]:
        requests, self.transfer_requests = self.transfer_requests, []
        return requests

    # -- hang-ups (CANCEL, BYE and teardown are in teardown.py) -------------------------------

    def hangup(self, call_id: str, now: float, reason: str = "hung up by the bridge") -> None:
        teardown.hangup(self, call_id, now, reason=reason)

    def media_timeout(self, media_leg: object, now: float, reason: str = "media timeout") -> None:
        """A party sent no RTP or RTCP for the media timeout: its phone lost power or network
        and will never send BYE. The bridge hangs up on it and goes on as if it had hung up, so
        a silent transfer target gives the caller back to the agent rather than ending the
        call, while in a two-party call the other party is hung up too. The same holds when the
        leg's media is gone for another ``reason`` (its media worker process died)."""
        found = indialog.find_media_leg(self, media_leg)
        if found is None:
            return
        call, leg = found
        if leg.dialog is None or not leg.live:
            return
        data = {"leg": leg.leg_id, "party": str(leg.role), "reason": reason}
        self._record(call.note("media_timeout", now, **data))
        teardown.hang_up_on(self, call, leg, now, reason=reason)

    def leg_left(self, call: Call, leg: Leg, now: float, *, reason: str | None = None) -> None:
        indialog.after_leg_left(self, call, leg, now, reason=reason)

    def _hangup(self, call_id: str, now: float, *, reason: str) -> None:
        teardown.hangup(self, call_id, now, reason=reason)

    def caller_cancelled(self, call: Call, now: float, *, reason: str) -> None:
        teardown.caller_cancelled(self, call, now, reason=reason)

    def send_bye(self, call: Call, leg: Leg, now: float) -> None:
        teardown.send_bye(self, call, leg, now)

    def _try_next(self, call: Call, now: float) -> bool:
        return outgoing.try_next(self, call, now)

    def _fail_caller(self, call: Call, status: int, reason: str | None, now: float) -> None:
        outgoing.fail_caller(self, call, status, reason, now)

    def _maybe_finished(self, call: Call, now: float) -> None:
        teardown.maybe_finished(self, call, now)

    def release_media(self, leg: Leg) -> None:
        teardown.release_media(self, leg)

    # -- helpers -----------------------------------------------------------------------------

    def index_leg(self, call: Call, leg: Leg) -> None:
        where = call.call_id, leg.leg_id  # one tuple for both indices: it lives as long as the leg
        self._by_dialog[(self._sip_call_id(leg), leg.local_tag)] = where
        if leg.server_key:
            self._by_server[leg.server_key] = where

    @staticmethod
    def _sip_call_id(leg: Leg) -> str:
        return leg.invite.call_id if leg.invite is not None else ""

    def _next_hop(self, dialog: Dialog, leg: Leg) -> Address:
        """§12.2.1.1 / §8.1.2: the first Route if any, else the remote target."""
        uri = dialog.route_set[0].uri if dialog.route_set else dialog.remote_target
        host, port = uri.hostport
        if not _is_ip(host):
            return leg.remote
        return host, port

    def _point_media(self, leg: Leg, sdp: bytes, negotiated: bytes | None = None) -> None:
        """Send this leg's audio where its SDP says. The payload type is the first codec of
        the answer that settled the leg's session (RFC 3264 §6.1), which for the party that
        made the offer is ``negotiated``, not its own offer's preference. So is the
        telephone-event payload type: events are in the session only if the answer kept them
        (RFC 4733 §2.5.1.1)."""
        remote = sdpmap.remote_of(sdp)
        if remote is None or leg.media is None or isinstance(leg.media, teardown.Released):
            return
        host, port, payload_type, event_type = remote
        if negotiated is not None:
            settled = sdpmap.remote_of(negotiated)
            if settled is not None:
                event_type = settled[3]
                if settled[2] is not None:
                    payload_type = settled[2]
        target = MediaTarget(
            host=host, port=port, payload_type=payload_type, telephone_event_pt=event_type, sdp=sdp
        )
        self._point_to(leg, target)

    def _point_to(self, leg: Leg, target: MediaTarget) -> None:
        """Send this leg's audio to ``target``, and remember it as the session in force, which
        a mirrored offer that fails puts back (RFC 3261 §14.1)."""
        if leg.media is None or isinstance(leg.media, teardown.Released):
            return
        self.media.point(
            leg.media,
            target.host,
            target.port,
            target.payload_type,
            telephone_event_pt=target.telephone_event_pt,
        )
        leg.media_target = target

    def _record(self, event: CallEvent) -> None:
        self.events.append(event)
        log.debug("call %s %s -> %s", event.call_id, event.kind, event.state)


def _is_ip(host: str) -> bool:
    if host.startswith("["):
        return True
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)
