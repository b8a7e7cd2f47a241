"""Supervisor listen, whisper and barge: the bridge rings supervisors into an answered call.

Theory of operation
-------------------
A supervision starts from an answered call (caller ↔ agent) through the HTTP API. The bridge
opens a new leg to the supervisor's phone itself, carrying the call's ticket headers, while the
caller and the agent go on talking: their media is not touched until the supervisor answers, so
a supervisor who is busy, away or unreachable leaves the call exactly as it was. On answer the
call's parties and every joined supervisor share the call's one conference, in which each
supervisor's mix mode says who hears them: ``listen`` is heard by no one, ``whisper`` by the
agent only (coaching), ``barge`` by everyone (a three-way call); a supervisor hears everyone
who is heard (the parties, a barging supervisor), never a listening one.

A call carries up to :data:`MAX_SUPERVISORS` supervisions at once (the 12345 and the 110
supervisor on a cross-agency call, a trainer and a quality monitor), each its own leg, mode and
state, told apart by the supervisor asked for. Asking again for a supervisor already on the
call, or still ringing into it, changes that supervision's mode on the same leg, without a
second phone call; asking for another starts another supervision. One supervisor failing or
hanging up leaves the others as they were: its ports are released, which takes it out of the
mix, and the conference goes on. When the last one hangs up, the parties go back to a plain
relay; when the call ends, all are hung up with it. A transfer may happen while supervised:
every supervisor stays on and, once the transfer is done, hears whoever then talks with the
caller (:meth:`SuperviseDesk.regroup` rebuilds the conference with all of them).

Every step is a call event (``supervise_requested``, ``supervise_failover`` when a destination
fails and the next one rings, ``supervisor_joined``, ``supervise_mode_changed``,
``supervisor_left``, ``supervise_failed``) naming the supervisor, its leg and its actor, in the
call's history, the audit log and the live events; a failover and a failure say why, with the
status and reason. Each supervision's own state changes only through :data:`TRANSITIONS`.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bridge.calls import legs
from bridge.calls.call import Call, CallState, Leg, LegRole, LegState
from bridge.calls.ports import Destination, MediaUnavailable, MixMode
from bridge.calls.transfer import TransferDesk, TransferState
from bridge.sip import offer_answer
from bridge.sip.errors import LocalProtocolError
from bridge.sip.message import Response

if TYPE_CHECKING:
    from bridge.calls.b2bua import B2BUA

SuperviseMode = Literal["listen", "whisper", "barge"]

_MIX: dict[SuperviseMode, MixMode] = {"listen": "listen", "whisper": "whisper", "barge": "full"}

MAX_SUPERVISORS = 4
"""Supervisions one call may carry at once, ringing or joined. Each is a leg with its own port
pair and a member of the call's mix (the mixer's work grows with the square of its members),
so the bound keeps one call from taking what many calls need; four covers both desks'
supervisors and a trainer and a quality monitor besides."""


class SupervisionState(enum.StrEnum):
    RINGING = "ringing"
    JOINED = "joined"
    LEFT = "left"
    FAILED = "failed"


class SupervisionInput(enum.StrEnum):
    PROGRESS = "progress"
    NEXT_DESTINATION = "next_destination"
    ANSWERED = "answered"
    EXHAUSTED = "exhausted"
    CHANGE_MODE = "change_mode"
    SUPERVISOR_LEFT = "supervisor_left"
    CALL_ENDED = "call_ended"


_S, _In = SupervisionState, SupervisionInput

TRANSITIONS: dict[tuple[SupervisionState, SupervisionInput], SupervisionState] = {
    (_S.RINGING, _In.PROGRESS): _S.RINGING,
    (_S.RINGING, _In.NEXT_DESTINATION): _S.RINGING,
    (_S.RINGING, _In.ANSWERED): _S.JOINED,
    (_S.RINGING, _In.EXHAUSTED): _S.FAILED,
    (_S.RINGING, _In.CALL_ENDED): _S.FAILED,
    (_S.RINGING, _In.CHANGE_MODE): _S.RINGING,  # the new mode applies when the phone answers
    (_S.JOINED, _In.CHANGE_MODE): _S.JOINED,
    (_S.JOINED, _In.SUPERVISOR_LEFT): _S.LEFT,
    (_S.JOINED, _In.CALL_ENDED): _S.LEFT,
}


@dataclass(slots=True, kw_only=True)
class Supervision:
    call_id: str
    supervisor: str
    """Who was asked for (a seat id or a platform key): what tells a call's supervisions
    apart (a request naming it again changes its mode), and safe to log, unlike numbers."""
    mode: SuperviseMode
    destinations: list[Destination]
    headers: tuple[tuple[str, str], ...]
    state: SupervisionState = SupervisionState.RINGING
    leg_id: str = ""
    mixed: bool = False
    """The supervisor's leg is in a conference (not so when it answered during an attended
    transfer's consultation: it joins when that ends)."""

    def apply(self, event: SupervisionInput) -> None:
        new_state = TRANSITIONS.get((self.state, event))
        if new_state is None:
            raise LocalProtocolError(f"supervision of {self.call_id}: {event} in {self.state}")
        self.state = new_state

    def summary(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "supervisor": self.supervisor,
            "mode": self.mode,
            "state": str(self.state),
            "leg": self.leg_id,
        }


class SuperviseDesk:
    """Runs the supervisions of one B2BUA; the core hands it the supervisor legs' SIP traffic
    and tells it when the call's parties change."""

    def __init__(self, core: B2BUA) -> None:
        self.core = core
        self.by_call: dict[str, dict[str, Supervision]] = {}
        """Call id → supervisor → its supervision, in the order they were asked for; a call
        with none has no entry."""

    def of_call(self, call_id: str) -> list[Supervision]:
        """The call's supervisions (ringing or joined), the earliest asked first."""
        return list(self.by_call.get(call_id, {}).values())

    def find(self, call_id: str, supervisor: str) -> Supervision | None:
        return self.by_call.get(call_id, {}).get(supervisor)

    def _of_leg(self, call: Call, leg: Leg) -> Supervision | None:
        return next((s for s in self.of_call(call.call_id) if s.leg_id == leg.leg_id), None)

    def _forget(self, call: Call, supervision: Supervision) -> None:
        supervisions = self.by_call.get(call.call_id, {})
        supervisions.pop(supervision.supervisor, None)
        if not supervisions:
            self.by_call.pop(call.call_id, None)

    # -- asking --------------------------------------------------------------------------

    def check_room(self, call_id: str) -> None:
        """Raise :class:`LocalProtocolError` (HTTP 409) when the call has as many supervisors
        as :data:`MAX_SUPERVISORS`: the API asks before it looks the new one up, so one too
        many is told so whether or not that supervisor could be rung."""
        if len(self.by_call.get(call_id, {})) >= MAX_SUPERVISORS:
            raise LocalProtocolError(
                f"the call already has {MAX_SUPERVISORS} supervisors, as many as a call may have"
            )

    def start(
        self,
        call_id: str,
        supervisor: str,
        mode: SuperviseMode,
        destinations: list[Destination],
        now: float,
        *,
        actor: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Supervision:
        """Ring the supervisor; raise :class:`LocalProtocolError` (HTTP 409) when the call
        cannot be supervised now, or by one more supervisor."""
        call = self.core.calls.get(call_id)
        if call is None:
            raise LookupError(call_id)
        if self.find(call_id, supervisor) is not None:
            raise LocalProtocolError(f"{supervisor} is already supervising the call")
        self.check_room(call_id)
        if (
            call.state is not CallState.ANSWERED
            or call.caller.state is not LegState.CONFIRMED
            or TransferDesk.agent_leg(call) is None
        ):
            raise LocalProtocolError("only an answered call can be supervised")
        if call_id in self.core.transfers.by_call:
            raise LocalProtocolError("a transfer is in progress for this call")
        if not destinations:
            raise LocalProtocolError("the supervisor has no destination")
        supervision = Supervision(
            call_id=call_id,
            supervisor=supervisor,
            mode=mode,
            destinations=list(destinations),
            headers=headers or _ticket_id_of(call),
        )
        self.by_call.setdefault(call_id, {})[supervisor] = supervision
        self._event(call, supervision, now, "supervise_requested", actor=actor)
        if not self._ring_next(call, supervision, now):
            self._fail(call, supervision, now, 503, "no media ports for the supervisor")
            raise LocalProtocolError("no media ports for the supervisor")
        return supervision

    def change_mode(
        self, call_id: str, supervisor: str, mode: SuperviseMode, now: float, *, actor: str
    ) -> Supervision:
        """A second request for a supervisor on the call: the same leg hears and is heard
        anew. One still ringing keeps the mode for when it answers: asking again while the
        phone rings is a change of mind, not a second phone call."""
        call = self.core.calls.get(call_id)
        if call is None:
            raise LookupError(call_id)
        supervision = self.find(call_id, supervisor)
        if supervision is None:
            raise LocalProtocolError(f"{supervisor} is not supervising the call")
        supervision.apply(SupervisionInput.CHANGE_MODE)
        previous, supervision.mode = supervision.mode, mode
        if supervision.mixed:
            self._set_mode(call, supervision)
        self._event(
            call, supervision, now, "supervise_mode_changed", actor=actor, previous=previous
        )
        return supervision

    # -- the supervisor's leg ------------------------------------------------------------

    def _ring_next(self, call: Call, supervision: Supervision, now: float) -> bool:
        core = self.core
        caller = call.caller
        assert caller.invite is not None
        while supervision.destinations:
            dest = supervision.destinations.pop(0)
            try:
                media = core.media.allocate(near=caller.media)
            except MediaUnavailable:
                return False
            leg_id = f"s{sum(1 for known in call.legs if known.startswith('s')) + 1}"
            leg = legs.outgoing_leg(leg_id, LegRole.SUPERVISOR, dest, media)
            call.legs[leg_id] = leg
            supervision.leg_id = leg_id
            offer = offer_answer.make_offer(
                address=media.host, port=media.port, session_id=secrets.randbelow(2**31)
            )
            leg.last_sdp = bytes(offer)
            leg.invite = legs.new_invite(
                core, caller.invite, leg, dest, headers=supervision.headers, body=leg.last_sdp
            )
            leg.client_key = core.txl.send_request(leg.invite, dest.address, dest.transport, now)
            legs.register_client(core, leg.client_key, call, leg)
            core.index_leg(call, leg)
            legs.ring_deadline(core, call, leg, now + dest.ring_timeout)
            return True
        return False

    def on_response(self, call: Call, leg: Leg, response: Response, now: float) -> None:
        supervision = self._of_leg(call, leg)
        if supervision is None or supervision.state is not SupervisionState.RINGING:
            legs.release_stray_leg(self.core, call, leg, response, now)
            return
        status = response.status
        if status < 200:
            if status > 100 and leg.state is LegState.CALLING:
                leg.state = LegState.EARLY
                supervision.apply(SupervisionInput.PROGRESS)
            return
        legs.clear_ring_deadline(self.core, call, leg)
        if status < 300 and legs.answers_offer(leg, response):
            self._joined(call, supervision, leg, response, now)
            return
        if status < 300:
            # A supervisor who could hear no one fails like a busy one (legs.answers_offer).
            legs.confirm_outgoing(self.core, call, leg, response, now)
            legs.end_answerless(self.core, call, leg, now)
            status, reason = legs.ANSWERLESS_2XX
        else:
            leg.state = LegState.TERMINATED
            self.core.release_media(leg)
            reason = legs.reason_of(response)
        if not self._move_on(call, supervision, leg, now, status, reason):
            self._fail(call, supervision, now, status, reason)

    def ring_timeout(self, call: Call, leg: Leg, now: float) -> None:
        """No answer within the ring timeout: CANCEL, and go on as for a 408; when no
        destination is left the supervision fails with the 480 a caller would hear."""
        legs.cancel_leg(self.core, call, leg, now)
        supervision = self._of_leg(call, leg)
        if supervision is None:
            return
        if not self._move_on(call, supervision, leg, now, 408, legs.NO_ANSWER):
            self._fail(call, supervision, now, 480, legs.NO_ANSWER)

    def _move_on(
        self,
        call: Call,
        supervision: Supervision,
        failed: Leg,
        now: float,
        status: int,
        reason: str,
    ) -> bool:
        """Ring the next destination after ``failed``; False when none could be rung. A move
        is a ``supervise_failover`` event with why, as the core notes its own failover, so
        supervisors and the audit log see why a phone was passed over, not only the end."""
        supervision.apply(SupervisionInput.NEXT_DESTINATION)
        if not self._ring_next(call, supervision, now):
            return False
        self._event(
            call, supervision, now, "supervise_failover", actor="bridge", leg=failed.leg_id,
            status=status, reason=reason,
        )  # fmt: skip
        return True

    def _joined(
        self, call: Call, supervision: Supervision, leg: Leg, response: Response, now: float
    ) -> None:
        legs.confirm_outgoing(self.core, call, leg, response, now)
        supervision.apply(SupervisionInput.ANSWERED)
        self._mix(call)
        self._event(call, supervision, now, "supervisor_joined", actor=supervision.supervisor)

    def _fail(
        self, call: Call, supervision: Supervision, now: float, status: int, reason: str
    ) -> None:
        supervision.apply(SupervisionInput.EXHAUSTED)
        self._forget(call, supervision)
        self._event(
            call, supervision, now, "supervise_failed", actor="bridge", status=status, reason=reason
        )

    # -- the call's parties change -------------------------------------------------------

    def leg_left(self, call: Call, leg: Leg, now: float) -> bool:
        """A supervisor leg hung up; True when ``leg`` was one (the call goes on). Its ports
        were released before this (which takes it out of the mix), so other supervisors in
        the conference are left as they are; after the last, the parties get back the plain
        relay they had."""
        if leg.role is not LegRole.SUPERVISOR:
            return False
        supervision = self._of_leg(call, leg)
        if supervision is None or supervision.state is not SupervisionState.JOINED:
            return True
        supervision.apply(SupervisionInput.SUPERVISOR_LEFT)
        self._forget(call, supervision)
        others_mixed = any(other.mixed for other in self.of_call(call.call_id))
        if not others_mixed and not self._consulting(call):
            parties = self.parties(call)
            if len(parties) == 2:
                self.core.media.connect(parties[0].media, parties[1].media)
            elif len(parties) > 2:
                self.core.media.conference([party.media for party in parties])
        self._event(
            call, supervision, now, "supervisor_left", actor=supervision.supervisor,
            reason="supervisor hung up",
        )  # fmt: skip
        return True

    def regroup(self, call: Call) -> bool:
        """The parties changed (a transfer completed, one of three left): every joined
        supervisor goes on hearing whoever now talks with the caller. True when the media was
        arranged here."""
        return self._mix(call)

    def call_ended(self, call: Call, now: float) -> None:
        """The call is being hung up; the core BYEs or CANCELs the supervisors' legs with the
        others."""
        for supervision in self.by_call.pop(call.call_id, {}).values():
            was_ringing = supervision.state is SupervisionState.RINGING
            supervision.apply(SupervisionInput.CALL_ENDED)
            kind = "supervise_failed" if was_ringing else "supervisor_left"
            self._event(call, supervision, now, kind, actor="bridge", reason="call ended")

    # -- media ---------------------------------------------------------------------------

    @staticmethod
    def parties(call: Call) -> list[Leg]:
        """Who talks on the call: the caller and the other answered legs, not supervisors."""
        return [
            leg
            for leg in call.legs.values()
            if leg.state is LegState.CONFIRMED and leg.role is not LegRole.SUPERVISOR
        ]

    def _consulting(self, call: Call) -> bool:
        """During an attended transfer's consultation the caller hears the hold tone and the
        agent talks with the target; that arrangement is the transfer's to undo."""
        transfer = self.core.transfers.by_call.get(call.call_id)
        return transfer is not None and transfer.state is TransferState.CONSULTING

    def _mix(self, call: Call) -> bool:
        """One conference of the parties and every joined supervisor, each in its mode; False
        (nothing done) with no supervisor joined, or no one to hear. The media port grows the
        conference those already in it share (no gap for them) or makes a new one when the
        parties changed; either way every supervisor's mode is set anew."""
        joined = [s for s in self.of_call(call.call_id) if s.state is SupervisionState.JOINED]
        parties = self.parties(call)
        if not joined or len(parties) < 2 or self._consulting(call):
            return False
        supervisors = [call.legs[supervision.leg_id].media for supervision in joined]
        self.core.media.conference([*(party.media for party in parties), *supervisors])
        for supervision in joined:
            supervision.mixed = True
            self._set_mode(call, supervision)
        return True

    def _set_mode(self, call: Call, supervision: Supervision) -> None:
        supervisor = call.legs[supervision.leg_id]
        agent = TransferDesk.agent_leg(call)
        if supervision.mode == "whisper" and agent is not None:
            self.core.media.set_mode(supervisor.media, "whisper", whisper_to=agent.media)
        elif supervision.mode == "whisper":
            self.core.media.set_mode(supervisor.media, "listen")
        else:
            self.core.media.set_mode(supervisor.media, _MIX[supervision.mode])

    def _event(
        self, call: Call, supervision: Supervision, now: float, kind: str, **data: Any
    ) -> None:
        if supervision.leg_id:  # none yet when the supervision is only requested
            data.setdefault("leg", supervision.leg_id)
        self.core._record(
            call.note(kind, now, supervisor=supervision.supervisor, mode=supervision.mode, **data)
        )


def _ticket_id_of(call: Call) -> tuple[tuple[str, str], ...]:
    """A call that arrived with a ticket (from the other desk's transfer) passes its id on."""
    invite = call.caller.invite
    ticket_id = invite.headers.get("X-Ticket-Id") if invite is not None else None
    if ticket_id:
        return (("X-Ticket-Id", ticket_id),)
    return (("X-Ticket-Id", call.ticket_id),) if call.ticket_id else ()
