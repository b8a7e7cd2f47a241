"""Calls through the bridge: the legs it owns and the call's state machine.

Theory of operation
-------------------
The bridge is a B2BUA (RFC 3261 §6 "back-to-back user agent"): every party is reached through a
dialog the bridge itself owns, called a *leg*. A call starts with the caller's leg (an incoming
INVITE), is routed, and grows an outgoing leg per attempt; failover replaces a failed outgoing
leg with the next destination while the caller's leg stays up. Transfers and three-way calls are
later rearrangements of legs, which is why legs are first-class and the caller's leg is never
torn down by anything but the caller, the agent's explicit hang-up, or a shutdown.

The call's state changes only through :data:`TRANSITIONS`, keyed by (state, input). An input
not in the table for the current state is a local error: the orchestration asked for something
the call cannot do now, and the HTTP API maps it to 409.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from bridge.sip.dialog import Dialog
from bridge.sip.errors import LocalProtocolError
from bridge.sip.message import Request

Address = tuple[str, int]


class CallState(enum.StrEnum):
    ROUTING = "routing"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDING = "ending"
    ENDED = "ended"


class CallInput(enum.StrEnum):
    ROUTED = "routed"
    NO_ROUTE = "no_route"
    PROGRESS = "progress"
    ANSWERED = "answered"
    ATTEMPT_FAILED = "attempt_failed"
    FAILOVER = "failover"
    CALLER_CANCELLED = "caller_cancelled"
    HANGUP = "hangup"
    LEGS_GONE = "legs_gone"


_S, _I = CallState, CallInput

TRANSITIONS: dict[tuple[CallState, CallInput], CallState] = {
    (_S.ROUTING, _I.ROUTED): _S.RINGING,
    (_S.ROUTING, _I.NO_ROUTE): _S.ENDED,
    (_S.ROUTING, _I.CALLER_CANCELLED): _S.ENDED,
    (_S.RINGING, _I.PROGRESS): _S.RINGING,
    (_S.RINGING, _I.FAILOVER): _S.RINGING,
    (_S.RINGING, _I.ANSWERED): _S.ANSWERED,
    (_S.RINGING, _I.ATTEMPT_FAILED): _S.ENDED,
    (_S.RINGING, _I.CALLER_CANCELLED): _S.ENDING,
    (_S.RINGING, _I.HANGUP): _S.ENDING,
    (_S.ANSWERED, _I.PROGRESS): _S.ANSWERED,
    (_S.ANSWERED, _I.HANGUP): _S.ENDING,
    (_S.ANSWERED, _I.LEGS_GONE): _S.ENDED,
    (_S.ENDING, _I.HANGUP): _S.ENDING,
    (_S.ENDING, _I.ATTEMPT_FAILED): _S.ENDING,
    (_S.ENDING, _I.ANSWERED): _S.ENDING,
    (_S.ENDING, _I.PROGRESS): _S.ENDING,
    (_S.ENDING, _I.LEGS_GONE): _S.ENDED,
}


class LegRole(enum.StrEnum):
    CALLER = "caller"
    CALLEE = "callee"
    SEAT = "seat"
    TARGET = "target"
    SUPERVISOR = "supervisor"


class Cancel(enum.StrEnum):
    """The bridge's CANCEL of an outgoing leg's INVITE (RFC 3261 §9.1)."""

    NONE = "none"
    HELD = "held"  # given up on before any provisional response: sent when the first arrives
    SENT = "sent"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reoffer:
    """What a re-INVITE of the bridge's own is to bring a party's session to (RFC 3264 §8):
    on hold or not, and, when ``sdp`` is set, that session description again (the media in
    force before a change that was cancelled on the other side)."""

    held: bool
    sdp: bytes = b""
    refused: bytes = b""
    """Set on the retry of a resume the party refused: the offer it refused, whose o= version
    this one's follows, so the party never sees one version for two descriptions (§8)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaTarget:
    """Where the bridge sends a party's audio and as which payload types, as its session in
    force says: what a mirrored offer that then fails must leave in place (RFC 3261 §14.1)."""

    host: str
    port: int
    payload_type: int | None
    telephone_event_pt: int | None
    """The session's RFC 4733 event payload type, None when it has none: each new offer may
    number it afresh (RFC 3264 §8.3.2), so it is pointed with the address, not fixed once."""
    sdp: bytes = b""
    """The party's own SDP that says so (its offer or its answer): the codecs it accepted, for
    an offer the bridge makes it later (RFC 3264 §8)."""


class LegState(enum.StrEnum):
    INCOMING = "incoming"  # INVITE received, not yet answered
    CALLING = "calling"  # INVITE sent, no response with a tag yet
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


@dataclass(slots=True, kw_only=True)
class Leg:
    leg_id: str
    role: LegRole
    incoming: bool
    state: LegState
    remote: Address
    transport: str
    peer: str
    """Who is at the far end (a trunk or seat name): safe to log, unlike numbers."""
    invite: Request | None = None
    """The INVITE that opened the leg (received, or sent by the bridge); once the leg is
    answered only what the call still reads of it (:func:`~bridge.calls.legs.settled_invite`)."""
    server_key: str | None = None
    client_key: str | None = None
    dialog: Dialog | None = None
    local_tag: str = ""
    media: Any = None
    answered_at: float | None = None
    held: bool = False
    """The party was put on hold by the other side (its phone was told we stopped sending)."""
    media_target: MediaTarget | None = None
    """Where the bridge last pointed this party's audio (:meth:`B2BUA._point_media`)."""
    last_sdp: bytes = b""
    """The SDP the bridge last sent this party: the o= line its next one follows (RFC 3264 §8)."""
    cancel: Cancel = Cancel.NONE
    """Not NONE once the bridge gave up on this leg's INVITE: its responses only end the leg."""
    awaiting_answer: bool = False
    """The bridge's 2xx to this party's INVITE carried an offer: its ACK must bring the answer
    (RFC 3261 §13.2.2.4, §13.3.1)."""
    reoffer: Reoffer | None = None
    """The session the bridge wants this party in, while its own re-INVITE for that is pending
    or waits out a 491 (RFC 3261 §14.1); None once the party's session follows the other
    party's offers again, so a late retry sends what is wanted then, or nothing."""
    refer_id: int | None = None
    """The CSeq number of this party's latest REFER: the ``id`` of the implicit subscription
    it created (RFC 3515 §2.4.6), for a transfer started for this leg naming no REFER."""
    refers_ended: frozenset[int | None] = frozenset()
    """The REFERs (by ``id``) whose implicit subscription a failed NOTIFY ended
    (RFC 6665 §4.2.2): no further NOTIFY goes for them; a later REFER's is its own."""
    bye_deferred: bool = False
    """The bridge hung up on this party before its ACK for the bridge's 2xx came: the BYE
    waits for that ACK, or for the 2xx to be given up on (RFC 3261 §15, §13.3.1.4)."""

    @property
    def live(self) -> bool:
        return self.state not in (LegState.TERMINATING, LegState.TERMINATED)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEvent:
    """One line of a call's audit trail."""

    at: float
    call_id: str
    kind: str
    state: CallState
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class Call:
    call_id: str
    created_at: float
    origin: str
    state: CallState = CallState.ROUTING
    legs: dict[str, Leg] = field(default_factory=dict)
    caller_leg: str = ""
    callee_leg: str = ""
    ticket_id: str | None = None
    agent_seat: str | None = None
    """The seat of the agent who handed the call over (its transfer ticket's sending seat):
    whose screen is told what goes wrong with the caller afterwards, when that agent's phone
    may have left the call already."""
    ended_reason: str = ""
    history: list[CallEvent] = field(default_factory=list)

    def apply(self, event: CallInput, now: float, **data: Any) -> CallEvent:
        new_state = TRANSITIONS.get((self.state, event))
        if new_state is None:
            raise LocalProtocolError(f"call {self.call_id}: {event} not allowed in {self.state}")
        self.state = new_state
        record = CallEvent(
            at=now, call_id=self.call_id, kind=str(event), state=new_state, data=data
        )
        self.history.append(record)
        return record

    def note(self, kind: str, now: float, **data: Any) -> CallEvent:
        """A step of something riding on the call (a supervisor joining) that leaves the
        call's own state as it is."""
        record = CallEvent(at=now, call_id=self.call_id, kind=kind, state=self.state, data=data)
        self.history.append(record)
        return record

    def leg(self, leg_id: str) -> Leg:
        return self.legs[leg_id]

    @property
    def caller(self) -> Leg:
        return self.legs[self.caller_leg]

    @property
    def callee(self) -> Leg | None:
        return self.legs.get(self.callee_leg)

    def other(self, leg: Leg) -> Leg | None:
        if leg.leg_id == self.caller_leg:
            return self.callee
        return self.caller if self.caller_leg in self.legs else None

    def summary(self) -> dict[str, Any]:
        """What the HTTP API shows: no numbers, only roles, peers and states."""
        return {
            "id": self.call_id,
            "state": str(self.state),
            "origin": self.origin,
            "created_at": self.created_at,
            "ticket_id": self.ticket_id,
            "legs": [
                {
                    "id": leg.leg_id,
                    "role": str(leg.role),
                    "state": str(leg.state),
                    "peer": leg.peer,
                    "transport": leg.transport,
                }
                for leg in self.legs.values()
            ],
        }
