"""Transfers and three-way calls: the bridge rings the target while the caller stays with the agent.

Theory of operation
-------------------
A transfer starts from an answered call (caller ↔ agent) by any trigger: the HTTP API, the
agent's DTMF transfer key, or a REFER from the agent's phone (RFC 3515). The bridge opens a new
leg to the target itself, carrying the ticket headers, while the caller keeps talking to the
agent: the caller's leg is never touched until the target has answered, which is what makes a
failed transfer harmless ("caller never lost"). When the target answers, a blind transfer
re-points the caller's media at the target and releases the agent's leg; a three-way call puts
all three in one conference; an attended transfer first lets the agent talk to the target while
the caller hears the hold tone, and completes when the agent hangs up (or is cancelled with the
cancel key, which gives the caller back to the agent). A caller the agent's phone had put on
hold is taken off it by a re-INVITE of the bridge's own when the transfer completes, since
the phone that held it no longer will. When the target fails (busy, rejected,
no answer before the ring timeout, unreachable), the next destination of the plan is tried,
and why the last one failed is noted in the call's history (``transfer_failover``, for the
audit log and the live events) and given on the ``trying`` event that follows; when none is
left the agent still has the caller and is told why (NOTIFY ``message/sipfrag`` for a REFER).
Every step is an event for the ticket's log.

The transfer's own state changes only through :data:`TRANSITIONS`.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.calls import legs
from bridge.calls.call import Call, Leg, LegRole, LegState
from bridge.calls.ports import Destination
from bridge.sip import offer_answer
from bridge.sip.errors import LocalProtocolError
from bridge.sip.ids import random_hex
from bridge.sip.message import REASONS, Request, Response
from bridge.sip.uri import NameAddr, SipUri

if TYPE_CHECKING:
    from bridge.calls.b2bua import B2BUA


class TransferState(enum.StrEnum):
    RINGING = "ringing"
    CONSULTING = "consulting"
    COMPLETED = "completed"
    FAILED = "failed"


class TransferInput(enum.StrEnum):
    TRYING = "trying"
    PROGRESS = "progress"
    ANSWERED = "answered"
    NEXT_DESTINATION = "next_destination"
    EXHAUSTED = "exhausted"
    CALLER_LEFT = "caller_left"
    CONSULT = "consult"
    AGENT_LEFT = "agent_left"
    ABANDONED = "abandoned"


_T, _In = TransferState, TransferInput

CALLER_HUNG_UP = "caller hung up"
CALL_ENDED = "call ended"
"""Why a transfer failed when the call it was for ended other than by the caller's BYE
(hung up by the bridge or through the API, or every leg gone)."""

TRANSITIONS: dict[tuple[TransferState, TransferInput], TransferState] = {
    (_T.RINGING, _In.TRYING): _T.RINGING,
    (_T.RINGING, _In.PROGRESS): _T.RINGING,
    (_T.RINGING, _In.NEXT_DESTINATION): _T.RINGING,
    (_T.RINGING, _In.ANSWERED): _T.COMPLETED,
    (_T.RINGING, _In.EXHAUSTED): _T.FAILED,
    (_T.RINGING, _In.CALLER_LEFT): _T.FAILED,
    (_T.RINGING, _In.CONSULT): _T.CONSULTING,
    (_T.CONSULTING, _In.AGENT_LEFT): _T.COMPLETED,
    (_T.CONSULTING, _In.ABANDONED): _T.FAILED,
    (_T.CONSULTING, _In.CALLER_LEFT): _T.FAILED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferEvent:
    """What a transfer did, for the ticket log and the live events."""

    at: float
    call_id: str
    transfer_id: str
    kind: str  # "ringing" | "transferred" | "failed" | "trying"
    ticket_id: str | None
    status: int | None = None
    reason: str = ""
    destination: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRequest:
    """A REFER or a transfer key: the engine resolves the target, stores the ticket, then
    starts the transfer (or refuses it with :meth:`B2BUA.fail_transfer_request`)."""

    call_id: str
    target: str
    mode: str
    requested_by: str
    refer_leg: str | None = None
    refer_id: int | None = None
    """The REFER's CSeq number: the ``id`` its NOTIFYs carry (RFC 3515 §2.4.6)."""


@dataclass(slots=True, kw_only=True)
class Transfer:
    transfer_id: str
    call_id: str
    mode: str  # "blind" | "three_way" | "attended"
    agent_leg: str
    destinations: list[Destination]
    headers: tuple[tuple[str, str], ...]
    ticket_id: str | None
    referred_by: str
    state: TransferState = TransferState.RINGING
    target_leg: str = ""
    refer_dialog_leg: str | None = None
    """The agent leg whose REFER started this (NOTIFYs go there), if any."""
    refer_id: int | None = None
    """That REFER's CSeq number, the ``id`` of its subscription (RFC 3515 §2.4.6)."""
    tried: list[str] = field(default_factory=list)

    def apply(self, event: TransferInput) -> None:
        new_state = TRANSITIONS.get((self.state, event))
        if new_state is None:
            raise LocalProtocolError(f"transfer {self.transfer_id}: {event} in {self.state}")
        self.state = new_state


class TransferDesk:
    """Runs the transfers of one B2BUA; the core hands it the target legs' SIP traffic."""

    def __init__(self, core: B2BUA) -> None:
        self.core = core
        self.by_call: dict[str, Transfer] = {}
        self.events: list[TransferEvent] = []

    # -- starting --------------------------------------------------------------------------

    def start(
        self,
        call_id: str,
        destinations: list[Destination],
        now: float,
        *,
        mode: str = "blind",
        headers: tuple[tuple[str, str], ...] = (),
        ticket_id: str | None = None,
        refer_leg: str | None = None,
        refer_id: int | None = None,
    ) -> Transfer:
        """Ring the first destination; raise :class:`LocalProtocolError` (HTTP 409) when the
        call cannot be transferred now. NOTIFYs go to ``refer_leg``, in the subscription of
        its REFER ``refer_id`` (RFC 3515 §2.4.6), by default that leg's latest: fixed now, so
        a later REFER on that leg does not take this transfer's NOTIFYs over."""
        call = self.core.calls.get(call_id)
        if call is None:
            raise LookupError(call_id)
        if call_id in self.by_call:
            raise LocalProtocolError("a transfer is already in progress for this call")
        agent = self.agent_leg(call)
        if agent is None or call.caller.state is not LegState.CONFIRMED:
            raise LocalProtocolError("only an answered call can be transferred")
        if not destinations:
            raise LocalProtocolError("the target has no destination")
        referrer = call.legs.get(refer_leg) if refer_leg is not None else None
        if refer_id is None and referrer is not None:
            refer_id = referrer.refer_id
        transfer = Transfer(
            transfer_id=f"X{random_hex(4)}",
            call_id=call_id,
            mode=mode,
            agent_leg=agent.leg_id,
            destinations=list(destinations),
            headers=headers,
            ticket_id=ticket_id,
            referred_by=f"<sip:{agent.peer}@{self.core.host}>",
            refer_dialog_leg=refer_leg,
            refer_id=refer_id,
        )
        self.by_call[call_id] = transfer
        if not self._ring_next(call, transfer, now):
            self._fail(call, transfer, now, 503, "no destination could be rung")
        return transfer

    @staticmethod
    def agent_leg(call: Call) -> Leg | None:
        """The party handing the caller over: the confirmed leg that is not the caller."""
        for leg in call.legs.values():
            if (
                leg.leg_id != call.caller_leg
                and leg.state is LegState.CONFIRMED
                and leg.role in (LegRole.CALLEE, LegRole.SEAT, LegRole.TARGET)
            ):
                return leg
        return None

    def _ring_next(
        self,
        call: Call,
        transfer: Transfer,
        now: float,
        *,
        status: int | None = None,
        reason: str = "",
    ) -> bool:
        """Ring the next destination left, if any; ``status`` and ``reason`` say why the one
        before it was given up on, for the ``trying`` event."""
        core = self.core
        while transfer.destinations:
            dest = transfer.destinations.pop(0)
            try:
                media = core.media.allocate(near=call.caller.media)
            except Exception:
                return False
            leg_id = f"t{len(transfer.tried) + 1}"
            while leg_id in call.legs:
                leg_id += "x"
            leg = legs.outgoing_leg(leg_id, LegRole.TARGET, dest, media)
            call.legs[leg_id] = leg
            transfer.target_leg = leg_id
            transfer.tried.append(f"{dest.address[0]}:{dest.address[1]}")
            leg.invite = self._target_invite(call, leg, dest, transfer)
            leg.client_key = core.txl.send_request(leg.invite, dest.address, dest.transport, now)
            legs.register_client(core, leg.client_key, call, leg)
            core.index_leg(call, leg)
            legs.ring_deadline(core, call, leg, now + dest.ring_timeout)
            self._event(
                call,
                transfer,
                now,
                "trying",
                destination=transfer.tried[-1],
                status=status,
                reason=reason,
            )
            return True
        return False

    def _target_invite(
        self, call: Call, leg: Leg, dest: Destination, transfer: Transfer
    ) -> Request:
        """§8.1.1 plus design.md's ticket headers: Call-Info, User-to-User (RFC 7433),
        X-Ticket-Id and Referred-By (RFC 3892) travel with the call."""
        caller = call.caller
        assert caller.invite is not None
        offer = offer_answer.make_offer(
            address=leg.media.host, port=leg.media.port, session_id=secrets.randbelow(2**31)
        )
        leg.last_sdp = bytes(offer)
        return legs.new_invite(
            self.core,
            caller.invite,
            leg,
            dest,
            headers=(("Referred-By", transfer.referred_by), *transfer.headers),
            body=leg.last_sdp,
        )

    # -- the target leg's responses --------------------------------------------------------

    def on_target_response(self, call: Call, leg: Leg, response: Response, now: float) -> None:
        transfer = self.by_call.get(call.call_id)
        if transfer is None or transfer.target_leg != leg.leg_id:
            legs.release_stray_leg(self.core, call, leg, response, now)
            return
        status = response.status
        if status < 200:
            if status > 100 and leg.state is LegState.CALLING:
                leg.state = LegState.EARLY
                transfer.apply(TransferInput.PROGRESS)
                self._event(call, transfer, now, "ringing", status=status)
                self._notify(call, transfer, now, status, response.reason)
            return
        legs.clear_ring_deadline(self.core, call, leg)
        reason = legs.reason_of(response)
        if status < 300 and legs.answers_offer(leg, response):
            self._answered(call, transfer, leg, response, now)
            return
        if status < 300:
            # A target that cannot hear the caller fails like a busy one (legs.answers_offer).
            legs.confirm_outgoing(self.core, call, leg, response, now)
            legs.end_answerless(self.core, call, leg, now)
            status, reason = legs.ANSWERLESS_2XX
        else:
            leg.state = LegState.TERMINATED
            self.core.release_media(leg)
        if not self._move_on(call, transfer, leg, now, status, reason):
            self._fail(call, transfer, now, status, reason)

    def ring_timeout(self, call: Call, leg: Leg, now: float) -> None:
        """No answer within the plan's ring timeout: CANCEL and go on as for a 408."""
        transfer = self.by_call.get(call.call_id)
        legs.cancel_leg(self.core, call, leg, now)
        if transfer is None or transfer.target_leg != leg.leg_id:
            return
        if not self._move_on(call, transfer, leg, now, 408, legs.NO_ANSWER):
            self._fail(call, transfer, now, 480, legs.NO_ANSWER)

    def _move_on(
        self, call: Call, transfer: Transfer, failed: Leg, now: float, status: int, reason: str
    ) -> bool:
        """Ring the next target after ``failed``; False when none could be rung. A move is
        noted in the call's history with why, as the core notes its own failover: the ticket
        log keeps only a transfer's ringing and its end, and supervisors and the audit log
        need to see why a target was passed over while the caller waited."""
        transfer.apply(TransferInput.NEXT_DESTINATION)
        if not self._ring_next(call, transfer, now, status=status, reason=reason):
            return False
        data = {"leg": failed.leg_id, "status": status, "reason": reason}
        self.core._record(call.note("transfer_failover", now, **data))
        return True

    def _answered(
        self, call: Call, transfer: Transfer, leg: Leg, response: Response, now: float
    ) -> None:
        core = self.core
        legs.confirm_outgoing(core, call, leg, response, now)
        caller = call.caller
        agent = call.legs.get(transfer.agent_leg)
        if transfer.mode == "attended" and agent is not None and agent.live:
            transfer.apply(TransferInput.CONSULT)
            core.media.hold(caller.media)
            core.media.connect(agent.media, leg.media)
            self._notify(call, transfer, now, response.status, response.reason)
            self._event(call, transfer, now, "consulting", status=response.status)
            return
        transfer.apply(TransferInput.ANSWERED)
        core.media.unhold(caller.media)
        if transfer.mode == "three_way" and agent is not None and agent.live:
            core.media.conference([caller.media, agent.media, leg.media])
        else:
            core.media.connect(caller.media, leg.media)
            # A phone that sent REFER hangs up itself on the final NOTIFY (RFC 3515 §2.4.5);
            # for the API and the transfer key the bridge releases the agent.
            if (
                agent is not None
                and agent.state is LegState.CONFIRMED
                and transfer.refer_dialog_leg is None
            ):
                core.send_bye(call, agent, now)
        call.callee_leg = leg.leg_id
        self._resume_caller(call, now)
        self._notify(call, transfer, now, response.status, response.reason, final=True)
        self._event(call, transfer, now, "transferred", status=response.status)
        del self.by_call[call.call_id]
        core.supervision.regroup(call)

    def _resume_caller(self, call: Call, now: float) -> None:
        """A caller the agent's phone put on hold (RFC 3264 §8.4) is still ``recvonly`` when
        the transfer completes: it would send the target nothing. The phone that held it is
        leaving (or, in a three-way call, not the one the caller now talks to), so the bridge
        resumes it with a re-INVITE of its own, which waits out any INVITE in progress on that
        dialog and retries after a 491 (RFC 3261 §14.1)."""
        if call.caller.held and call.caller.state is LegState.CONFIRMED:
            self.core.resume(call, call.caller, now)

    def _fail(self, call: Call, transfer: Transfer, now: float, status: int, reason: str) -> None:
        if transfer.state is TransferState.RINGING:
            transfer.apply(TransferInput.EXHAUSTED)
        self._notify(call, transfer, now, status, reason, final=True)
        self._event(call, transfer, now, "failed", status=status, reason=reason)
        self.by_call.pop(call.call_id, None)
        agent = call.legs.get(transfer.agent_leg)
        if agent is None or not agent.live:
            # The agent already left: nobody is there to take the caller back.
            self.core.hangup(call.call_id, now, reason="transfer failed after the agent left")

    def agent_left(self, call: Call, leg: Leg, now: float) -> bool:
        """The agent hung up during a consultation: that completes the attended transfer
        (the usual PBX convention). True when the hang-up was handled here."""
        transfer = self.by_call.get(call.call_id)
        if (
            transfer is None
            or transfer.state is not TransferState.CONSULTING
            or leg.leg_id != transfer.agent_leg
        ):
            return False
        target = call.legs[transfer.target_leg]
        transfer.apply(TransferInput.AGENT_LEFT)
        self.core.media.unhold(call.caller.media)
        self.core.media.connect(call.caller.media, target.media)
        call.callee_leg = target.leg_id
        self._resume_caller(call, now)
        self._event(call, transfer, now, "transferred", status=200)
        del self.by_call[call.call_id]
        self.core.supervision.regroup(call)
        return True

    def target_left(self, call: Call, leg: Leg, now: float) -> bool:
        """The target hung up during a consultation: the caller goes back to the agent."""
        transfer = self.by_call.get(call.call_id)
        if transfer is None or leg.leg_id != transfer.target_leg:
            return False
        if transfer.state is TransferState.CONSULTING:
            self._end_consultation(call, transfer, now, "target hung up")
        return True

    def _end_consultation(self, call: Call, transfer: Transfer, now: float, reason: str) -> None:
        transfer.apply(TransferInput.ABANDONED)
        agent = call.legs.get(transfer.agent_leg)
        self.core.media.unhold(call.caller.media)
        if agent is not None and agent.live:
            self.core.media.connect(call.caller.media, agent.media)
        if call.caller.held:
            # The agent's phone still holds the caller: the tone it heard before goes on.
            self.core.media.hold(call.caller.media)
        self._event(call, transfer, now, "failed", reason=reason)
        del self.by_call[call.call_id]
        self.core.supervision.regroup(call)

    def cancel(self, call: Call, now: float) -> None:
        """The agent's cancel key: stop ringing the target, or end the consultation; either
        way the caller is back with the agent."""
        transfer = self.by_call.get(call.call_id)
        if transfer is None:
            return
        if transfer.state is TransferState.CONSULTING:
            target = call.legs[transfer.target_leg]
            if target.state is LegState.CONFIRMED:
                self.core.send_bye(call, target, now)
            self._end_consultation(call, transfer, now, "cancelled by the agent")
            return
        leg = call.legs.get(transfer.target_leg)
        if leg is not None:
            legs.cancel_leg(self.core, call, leg, now)
        transfer.destinations.clear()
        self._fail(call, transfer, now, 487, "cancelled by the agent")

    def caller_left(self, call: Call, now: float, *, reason: str = CALLER_HUNG_UP) -> None:
        """The call is losing its caller (``reason`` :data:`CALL_ENDED` when the bridge hangs
        up or the call ends otherwise): a transfer still in progress fails, so that its ticket
        gets a final state and the transfer is not kept, or carried on to a next target, for
        a call that is gone."""
        transfer = self.by_call.pop(call.call_id, None)
        if transfer is not None:
            transfer.apply(TransferInput.CALLER_LEFT)
            self._event(call, transfer, now, "failed", reason=reason)

    # -- REFER (RFC 3515) ------------------------------------------------------------------

    def _notify(
        self,
        call: Call,
        transfer: Transfer,
        now: float,
        status: int,
        reason: str,
        *,
        final: bool = False,
    ) -> None:
        """Report progress to the phone that sent the REFER (RFC 3515 §2.4.5)."""
        if transfer.refer_dialog_leg is None:
            return
        leg = call.legs.get(transfer.refer_dialog_leg)
        if leg is None or leg.dialog is None or leg.state is not LegState.CONFIRMED:
            return
        reason = reason or REASONS.get(status, "")
        self.core.send_notify(call, leg, status, reason, final, now, transfer.refer_id)

    def _event(self, call: Call, transfer: Transfer, now: float, kind: str, **data: Any) -> None:
        self.events.append(
            TransferEvent(
                at=now,
                call_id=call.call_id,
                transfer_id=transfer.transfer_id,
                kind=kind,
                ticket_id=transfer.ticket_id,
                **data,
            )
        )


def parse_refer_to(value: str) -> SipUri:
    """Refer-To as phones send it: with or without <> (baresip omits them), with whatever
    follows ``?`` dropped when it is not a valid header list (RFC 3515 §2.1)."""
    text = value.strip()
    if text.startswith("<") or '"' in text:
        return NameAddr.parse(text).uri
    text = text.split(";", 1)[0] if "?" not in text else text
    try:
        return SipUri.parse(text)
    except Exception:
        return SipUri.parse(text.split("?", 1)[0])
