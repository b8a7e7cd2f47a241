"""The bridge's own re-INVITEs: a resume, a hold, or a session description put back.

Theory of operation
-------------------
Besides mirroring one party's offers onto the other (:mod:`bridge.calls.reinvite`), the bridge
sends re-INVITEs of its own (RFC 3264 §8): it resumes a party nobody else will resume (a caller
whose agent's phone held it and then left in a transfer), and it puts a party back as the
other one believes it is when a CANCEL crossed a 2xx. What the bridge wants a party's session
to be while such a re-INVITE is pending or waits out a 491 is kept on the leg
(``Leg.reoffer``), and a mirrored exchange the party accepts supersedes it: a re-INVITE that
meets a 491 goes again after §14.1's random delay, and sends what is wanted when it goes, or
nothing.
These functions are part of :class:`~bridge.calls.b2bua.B2BUA`, split out to keep modules small.
"""

from __future__ import annotations

import heapq
import secrets
from typing import TYPE_CHECKING

from bridge.calls import reinvite, sdpmap
from bridge.calls.call import Call, Leg, LegState, Reoffer
from bridge.sip import offer_answer, sdp
from bridge.sip.errors import RemoteProtocolError
from bridge.sip.message import Request, Response

if TYPE_CHECKING:
    from bridge.calls.b2bua import B2BUA
    from bridge.calls.reinvite import PendingReinvite


MAX_REINVITE_ATTEMPTS = 3
"""How often the bridge sends a re-INVITE of its own that keeps meeting glare (491)."""

RESUME_RETRY_S = 2.0
"""How long after a party refused the bridge's resume it is offered once more."""

MAX_RETRY_AFTER_S = 10.0
"""The longest a 500 or 503's Retry-After makes that retry wait: §14.2 has a party answer a
second offer with 0 to 10 s, and a caller listening to one side of a call cannot wait longer."""


def resume(core: B2BUA, call: Call, leg: Leg, now: float) -> None:
    """Take a party off hold with a re-INVITE of the bridge's own (RFC 3264 §8.4): after a
    phone's attended transfer nobody else will, since the phone that held it has left."""
    reoffer(core, call, leg, now, hold=False)


def reoffer(
    core: B2BUA, call: Call, leg: Leg, now: float, *, hold: bool, restore: bytes = b""
) -> None:
    """A re-INVITE of the bridge's own that resumes ``leg`` or, with ``hold``, holds it:
    ``sendonly``, since the bridge plays it the hold tone (RFC 3264 §8.4); with ``restore``,
    one that offers that session description again. Resume and hold offer the party's own
    codecs (:func:`_party_codecs`): §8 has a new offer in a session keep the formats the
    answerer accepted, and a phone that speaks only PCMU may refuse the bridge's PCMA-first
    defaults with 488. What it asks for becomes the leg's
    :attr:`~bridge.calls.call.Leg.reoffer`, replacing any older wish still waiting."""
    leg.reoffer = Reoffer(held=hold, sdp=restore)
    _send_reoffer(core, call, leg, now, 1)


def _send_reoffer(core: B2BUA, call: Call, leg: Leg, now: float, attempt: int) -> None:
    """Send the leg's :attr:`~bridge.calls.call.Leg.reoffer`. While an INVITE is in progress
    on that dialog, or on the one mirrored onto it, it waits as after a 491, instead of
    sending one the phone would have to refuse (§14.1)."""
    wanted = leg.reoffer
    assert wanted is not None
    if reinvite.busy(core, leg):
        _retry_later(core, call, leg, now, attempt)
        return
    offer = _restored(wanted.sdp)
    if offer is None:
        offer = offer_answer.make_offer(
            address=leg.media.host,
            port=leg.media.port,
            session_id=secrets.randbelow(2**31),
            codecs=_party_codecs(leg),
            direction=sdp.Direction.SENDONLY if wanted.held else sdp.Direction.SENDRECV,
        )
    was_sdp = leg.last_sdp
    leg.last_sdp = sdpmap.toward(offer, wanted.refused or leg.last_sdp)
    key, sent = reinvite.send_reinvite(core, leg, "INVITE", leg.last_sdp, now)
    core._reinvites[key] = reinvite.PendingReinvite(
        call_id=call.call_id,
        to_leg=leg,
        method="INVITE",
        was_held=leg.held,
        was_sdp=was_sdp,
        attempt=attempt,
        sent=sent,
        reoffer=wanted,
    )
    leg.held = wanted.held


def _restored(body: bytes) -> sdp.SessionDescription | None:
    """The session description to offer again, as the bridge sent it (anchored on this leg's
    media already); its o= line then follows the last one sent (:func:`sdpmap.toward`)."""
    if not body:
        return None
    try:
        return sdpmap.parse(body)
    except RemoteProtocolError:
        return None


def own_reinvite_done(
    core: B2BUA, pending: PendingReinvite, response: Response, now: float
) -> None:
    """§14.1: a refused re-INVITE leaves the session as it was. A refused hold takes the hold
    tone off again, since that party still sends and expects to be heard. A refused resume
    leaves the party counted as held but its audio as it is: the bridge resumes a party only
    once it is connected to someone who talks to it (the transfer target, or the agent whose
    hold was cancelled), and a phone on hold still receives, so it goes on hearing them
    rather than a tone laid over them. That party is then half in the call, which
    :func:`_resume_refused` does not leave unsaid, nor :func:`_resume_failed` for a resume
    given up after :data:`MAX_REINVITE_ATTEMPTS` 491s."""
    leg = pending.to_leg
    wanted = pending.reoffer
    call = core.calls.get(pending.call_id)
    status = response.status
    retry = status == 491 and call is not None and pending.attempt < MAX_REINVITE_ATTEMPTS
    a_resume = (
        wanted is not None
        and leg.reoffer is wanted
        and not wanted.held
        and not wanted.sdp
        and leg.live
    )
    refused = a_resume and status >= 300 and status != 491 and status not in reinvite.DIALOG_LOST
    given_up = a_resume and status == 491 and not retry
    if leg.reoffer is wanted and (status < 300 or not retry):
        leg.reoffer = None
    if status < 300:
        return
    leg.held = pending.was_held
    if wanted is not None and wanted.held and not pending.was_held and leg.live:
        core.media.unhold(leg.media)
    if retry and call is not None:
        _retry_later(core, call, leg, now, pending.attempt + 1)
    elif refused and call is not None and wanted is not None and pending.sent is not None:
        _resume_refused(core, call, leg, wanted, pending.sent, response, now)
    elif given_up and call is not None:
        _resume_failed(core, call, leg, response, now, attempt=pending.attempt)


def _resume_refused(
    core: B2BUA,
    call: Call,
    leg: Leg,
    wanted: Reoffer,
    sent: Request,
    response: Response,
    now: float,
) -> None:
    """A party refused the bridge's resume with a final response that keeps its dialog
    (a 488 for the codecs, a 403, a 500): it stays as the session in force has it, typically
    hearing the other party without being heard. Product rule: a caller is never lost
    without anyone knowing. The refusal is a ``resume_refused`` call event; the first one is
    followed by one more offer after :data:`RESUME_RETRY_S`, or the Retry-After of a 500 or
    503 (§21.5.1, §21.5.4, §20.33), of the party's own codecs as the first was
    (:func:`_party_codecs`), for a refusal that was momentary (busy, overloaded).
    After that one a ``resume_failed`` event says who hears what, for the agent's screen
    and the supervisor console; the call stays up, as hanging up is the agent's decision."""
    attempt = 2 if wanted.refused else 1
    data = {"leg": leg.leg_id, "party": str(leg.role), "status": response.status}
    data |= {"reason": response.reason, "attempt": attempt}
    core._record(call.note("resume_refused", now, **data))
    if wanted.refused:
        _resume_failed(core, call, leg, response, now, attempt=attempt)
        return
    leg.reoffer = Reoffer(held=False, refused=sent.body)
    entry = (now + _retry_delay(response), next(core._retry_ids), call.call_id, leg, 1)
    heapq.heappush(core._reinvite_retries, entry)


def _resume_failed(
    core: B2BUA, call: Call, leg: Leg, response: Response, now: float, *, attempt: int
) -> None:
    """The bridge stops trying to resume the party: refused twice, or met with 491 on every
    one of :data:`MAX_REINVITE_ATTEMPTS`. Either way the party is left half in the call, and
    only a ``resume_failed`` event (routed to the agent's seat) lets anyone know."""
    data = {"leg": leg.leg_id, "party": str(leg.role), "status": response.status}
    data |= {"reason": response.reason, "attempt": attempt}
    other = call.other(leg)
    hears, heard = _hearing(leg)
    data |= {"peer": leg.peer, "hears": hears, "heard": heard}
    data["other_party"] = str(other.role) if other is not None else None
    core._record(call.note("resume_failed", now, **data))


def _retry_delay(response: Response) -> float:
    """RESUME_RETRY_S, or what a 500 or 503 asks with Retry-After (§20.33: seconds, then an
    optional comment and parameters), at most MAX_RETRY_AFTER_S."""
    value = response.headers.get("Retry-After")
    if response.status not in (500, 503) or value is None:
        return RESUME_RETRY_S
    seconds = value.split(";", 1)[0].split("(", 1)[0].strip()
    if not seconds.isdigit():
        return RESUME_RETRY_S
    return min(float(seconds), MAX_RETRY_AFTER_S)


def _party_codecs(leg: Leg) -> tuple[sdp.Codec, ...]:
    """The codecs of the party's own SDP in force (its last offer or answer the session
    settled on), in its order and under its payload types, those the bridge's media takes:
    RFC 3264 §5 lets an offer name any, and §8 has a new offer keep the formats the answerer
    accepted: a party is not offered codecs it may refuse with 488. The bridge's defaults when
    the party's SDP is unknown or leaves none."""
    target = leg.media_target
    try:
        audio = sdpmap.parse(target.sdp).audio if target is not None and target.sdp else None
    except RemoteProtocolError:
        audio = None
    if audio is None:
        return sdp.DEFAULT_CODECS
    ours = sdp.DEFAULT_CODECS
    codecs = tuple(c for c in audio.codecs if any(c.same_format(d) for d in ours))
    return codecs if any(c.carries_audio for c in codecs) else ours


def _hearing(leg: Leg) -> tuple[bool, bool]:
    """Whether the party hears the call and whether it is heard, as the session in force
    says: the directions of what the bridge last sent it and of the party's own SDP
    (RFC 3264 §6.1: each side sends only where both directions allow)."""
    ours = _direction(leg.last_sdp)
    theirs = _direction(leg.media_target.sdp if leg.media_target is not None else b"")
    return ours.sends and theirs.receives, ours.receives and theirs.sends


def _direction(body: bytes) -> sdp.Direction:
    if not body:
        return sdp.Direction.SENDRECV
    try:
        description = sdpmap.parse(body)
    except RemoteProtocolError:
        return sdp.Direction.SENDRECV
    audio = description.audio
    if audio is None:
        return sdp.Direction.SENDRECV
    direction = description.direction_for(audio)
    connection = description.connection_for(audio)
    if connection is not None and connection.is_hold:
        return sdp.Direction.from_flags(sends=direction.sends, receives=False)
    return direction


def _retry_later(core: B2BUA, call: Call, leg: Leg, now: float, attempt: int) -> None:
    """§14.1: the re-INVITE goes again after a random delay in units of 10 ms, 2.1 to 4 s on a
    dialog whose Call-ID the bridge chose (its outgoing legs), 0 to 2 s on one the phone
    chose, so that the two ends of a glare do not collide again. What it then sends is the
    leg's :attr:`~bridge.calls.call.Leg.reoffer` at that time."""
    hundredths = secrets.randbelow(201) if leg.incoming else 210 + secrets.randbelow(191)
    entry = (now + hundredths / 100, next(core._retry_ids), call.call_id, leg, attempt)
    heapq.heappush(core._reinvite_retries, entry)


def retry_reinvites(core: B2BUA, now: float) -> None:
    """Re-INVITEs of the bridge's own whose delay is over. What goes is what the bridge wants
    of the party now, not what it wanted when the 491 came: nothing when the party left, its
    dialog ended, or an exchange since (the other party's hold or resume, mirrored and
    accepted) set the session, which the other party now believes in; nothing either when
    the party is already held or resumed as wanted."""
    heap = core._reinvite_retries
    while heap and heap[0][0] <= now:
        _, _, call_id, leg, attempt = heapq.heappop(heap)
        call = core.calls.get(call_id)
        wanted = leg.reoffer
        if (
            call is None
            or call.legs.get(leg.leg_id) is not leg
            or leg.state is not LegState.CONFIRMED
            or leg.dialog is None
            or wanted is None
        ):
            leg.reoffer = None
            continue
        if not wanted.sdp and leg.held == wanted.held:
            leg.reoffer = None
            continue
        if wanted.held:
            core.media.hold(leg.media)
        _send_reoffer(core, call, leg, now, attempt)
