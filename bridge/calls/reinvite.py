"""Re-INVITE and UPDATE inside established dialogs: mirrored from one party to the other.

Theory of operation
-------------------
A re-INVITE or UPDATE (hold, resume, codec change, RFC 3264 §8) is mirrored on the other leg
with the SDP re-anchored, and its answer mirrored back; the offering party's audio goes where
its offer says at once, and back where it went before if the offer fails or is cancelled
(§14.1: the session is then unchanged). With no confirmed party to mirror it onto (a
supervisor, a caller alone while a transfer rings) the bridge answers it from its own media.
While one is pending, both dialogs it involves have an INVITE in progress: another offer
on either is glare (491, §14.1), or 500 with Retry-After from the party still waiting for its
first (§14.2); the bridge's own re-INVITEs (a resume, or a hold put back) are in
:mod:`bridge.calls.reoffer`. A party that leaves with one pending has it answered 487
(§15.1.2) and its 2xx, if one still comes, ACKed; a CANCEL of one still pending gets it 487 too
(§9.2), and the mirrored one is cancelled in turn, its hold, resume or codec change undone by
the bridge if a 2xx crossed that CANCEL. A mirrored exchange the party accepts supersedes what
the bridge wanted of it (``Leg.reoffer``). A 481 or 408 to one the bridge sent means that
party's dialog is gone (§12.2.1.2): its leg leaves as if it had hung up.
These methods are part of :class:`~bridge.calls.b2bua.B2BUA`, split out to keep modules small.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.calls import reoffer, sdpmap
from bridge.calls.call import Call, Cancel, Leg, LegRole, LegState, MediaTarget, Reoffer
from bridge.sip import offer_answer, sdp
from bridge.sip import transaction as tx
from bridge.sip.errors import RemoteProtocolError
from bridge.sip.message import Request, Response, make_response

if TYPE_CHECKING:
    from bridge.calls.b2bua import B2BUA


DIALOG_LOST = {481: "dialog lost (481)", 408: "no response (408)"}
"""Final responses to a request inside a dialog after which §12.2.1.2 has the UAC end it,
with the reason the call's hang-up records."""


@dataclass(slots=True, kw_only=True)
class PendingReinvite:
    """A re-INVITE or UPDATE the bridge sent on ``to_leg``, until its final response. Either
    mirrored from ``from_leg``'s, whose server transaction ``server_key`` waits for the answer
    (None once it was answered otherwise, when a party left), or the bridge's own (a resume),
    with no ``from_leg``. Either way an INVITE is in progress on both dialogs (glare, §14.1)."""

    call_id: str
    to_leg: Leg
    method: str
    from_leg: Leg | None = None
    request: Request | None = None
    server_key: str | None = None
    was_held: bool = False
    """``to_leg.held`` before: a rejected re-INVITE changes nothing (§14.1)."""
    was_sdp: bytes = b""
    """``to_leg.last_sdp`` before, for the same reason: the next offer follows the last one
    the party accepted, its o= version one up from that one's (RFC 3264 §8)."""
    was_target: MediaTarget | None = None
    """Where ``from_leg``'s audio went before its offer pointed it elsewhere: put back when
    that offer fails or is cancelled (§14.1)."""
    attempt: int = 1
    sent: Request | None = None
    """What went to ``to_leg``, for a CANCEL of it."""
    cancel: Cancel = Cancel.NONE
    """Not NONE once ``from_leg`` cancelled its request: this one is cancelled too (§9.1)."""
    reoffer: Reoffer | None = None
    """What the bridge's own re-INVITE asks of ``to_leg``: on hold or not, and which session
    description, if it puts one back."""


def mirror_reinvite(
    core: B2BUA, call: Call, leg: Leg, request: Request, key: str, now: float
) -> None:
    """Hold, resume and codec changes are relayed so both parties agree (RFC 3264 §8)."""
    if leg.role is LegRole.SUPERVISOR:
        answer_here(core, leg, request, key, now)
        return
    other = call.other(leg)
    if _refuse_while_pending(core, leg, other, request, key, now):
        return
    if (
        other is None
        or other.dialog is None
        or other.state is not LegState.CONFIRMED
        or (request.method == "INVITE" and not request.body)
    ):
        # An offerless re-INVITE is answered here too: mirrored, the other party's offer would
        # come back in a 2xx the bridge must ACK before the answer exists (§13.2.2.4).
        answer_here(core, leg, request, key, now)
        return
    body = b""
    was_held, was_sdp, was_target = other.held, other.last_sdp, leg.media_target
    if request.body:
        core._point_media(leg, request.body)
        other.last_sdp = body = sdpmap.anchor_offer(
            request.body, other.media.host, other.media.port, other.last_sdp
        )
        # A held party hears the hold tone or music, never dead air.
        _set_held(core, other, sdpmap.is_hold(request.body))
    client_key, sent = send_reinvite(core, other, request.method, body, now)
    core._reinvites[client_key] = PendingReinvite(
        call_id=call.call_id,
        to_leg=other,
        method=request.method,
        from_leg=leg,
        request=request,
        server_key=key,
        was_held=was_held,
        was_sdp=was_sdp,
        was_target=was_target,
        sent=sent,
    )


def answer_here(core: B2BUA, leg: Leg, request: Request, key: str, now: float) -> None:
    """Answer a re-INVITE or UPDATE from the bridge's own media, with no other party to ask:
    a supervisor's phone, whose media ends in the mixer, or a party alone while a transfer
    rings. §13.3.1: the 2xx to an offer carries the answer (RFC 3264 §6: ``sendonly`` is
    answered ``recvonly``), and §14.2: the 2xx to an INVITE without one carries an offer,
    answered in the ACK. Either goes under the o= line of what the bridge last sent this leg
    (RFC 3264 §8)."""
    out = make_response(request, 200)
    body: sdp.SessionDescription | None = None
    if leg.live and leg.media is not None:
        session_id = secrets.randbelow(2**31)
        try:
            if request.body:
                body = offer_answer.answer(
                    sdp.SessionDescription.parse(request.body),
                    supported=sdp.DEFAULT_CODECS,
                    local_address=leg.media.host,
                    local_port=leg.media.port,
                    session_id=session_id,
                )
            elif request.method == "INVITE":
                body = offer_answer.make_offer(
                    address=leg.media.host, port=leg.media.port, session_id=session_id
                )
        except RemoteProtocolError as exc:
            core._respond(request, key, exc.status, now)
            return
        if body is not None:
            if request.body:
                core._point_media(leg, request.body)
            else:
                leg.awaiting_answer = True
            leg.last_sdp = out.body = sdpmap.toward(body, leg.last_sdp)
            out.headers.add("Content-Type", "application/sdp")
    out.headers.add("Contact", core.contact(leg.transport))
    core.txl.send_response(key, out, now)


def _refuse_while_pending(
    core: B2BUA, leg: Leg, other: Leg | None, request: Request, key: str, now: float
) -> bool:
    """§14.2 (and RFC 3311 §5.2 for UPDATE): a second offer from a party whose first is still
    unanswered gets 500 with a Retry-After of 0 to 10 s; an offer while the bridge has one of
    its own pending on that dialog, or on the dialog it would be mirrored onto, is glare and
    gets 491, after which the phone retries at its random delay (§14.1). True when refused."""
    for pending in core._reinvites.values():
        if pending.from_leg is leg and pending.server_key is not None:
            refuse_second_offer(core, request, key, now)
            return True
    if busy(core, leg) or (other is not None and busy(core, other)):
        core._respond(request, key, 491, now)
        return True
    return False


def refuse_second_offer(core: B2BUA, request: Request, key: str, now: float) -> None:
    out = make_response(request, 500, "Server Internal Error")
    out.headers.add("Retry-After", str(secrets.randbelow(11)))
    core.txl.send_response(key, out, now)


def send_reinvite(
    core: B2BUA, leg: Leg, method: str, body: bytes, now: float
) -> tuple[str, Request]:
    assert leg.dialog is not None
    out = leg.dialog.create_request(
        method, body=body, content_type="application/sdp" if body else None
    )
    out.headers.prepend("Via", core.via(leg.transport))
    out.headers.add("Contact", core.contact(leg.transport))
    key = core.txl.send_request(out, core._next_hop(leg.dialog, leg), leg.transport, now)
    return key, out


def _set_held(core: B2BUA, leg: Leg, held: bool) -> None:
    leg.held = held
    if held:
        core.media.hold(leg.media)
    else:
        core.media.unhold(leg.media)


def on_reinvite_response(core: B2BUA, response: Response, key: str, now: float) -> None:
    """The final response to a re-INVITE or UPDATE the bridge sent. A 2xx is ACKed whatever
    became of the call, or the far end retransmits it for 64*T1 and then hangs up
    (§13.3.1.4); any other final leaves the session as it was (§14.1), hold tone, the SDP
    the next offer follows and where the offering party's audio goes included. The answer goes
    back to the party whose request was mirrored, unless it was answered already."""
    if response.status < 200:
        held = core._reinvites.get(key)
        if held is not None and held.cancel is Cancel.HELD:
            _send_cancel(core, held, now)
        return
    pending = core._reinvites.pop(key, None)
    if pending is None:
        core.counters.dropped_responses += 1
        return
    to_leg = pending.to_leg
    status = response.status
    if status >= 300:
        to_leg.last_sdp = pending.was_sdp
    if status in DIALOG_LOST and dialog_lost(core, pending, status, now):
        return
    if status < 300 and to_leg.dialog is not None:
        to_leg.dialog.receive_response(response)
        if pending.method == "INVITE":
            ack = to_leg.dialog.create_ack(response.cseq.seq)
            ack.headers.prepend("Via", core.via(to_leg.transport))
            core.txl.send_ack(key, ack, core._next_hop(to_leg.dialog, to_leg), to_leg.transport)
        if response.body and to_leg.live:
            core._point_media(to_leg, response.body)
    if pending.from_leg is None:
        reoffer.own_reinvite_done(core, pending, response, now)
        return
    if status >= 300 and to_leg.live and to_leg.held != pending.was_held:
        _set_held(core, to_leg, pending.was_held)
    if status < 300 and pending.sent is not None and pending.sent.body:
        to_leg.reoffer = None
    if pending.cancel is not Cancel.NONE and status < 300:
        _undo_cancelled(core, pending, now)
    if pending.server_key is None or pending.request is None:
        return
    leg, origin_request = pending.from_leg, pending.request
    if status >= 300:
        _offer_failed(core, pending)
    out = make_response(origin_request, status, response.reason)
    if status < 300:
        if response.body:
            leg.last_sdp = out.body = sdpmap.anchor_answer(
                response.body, origin_request.body, leg.media.host, leg.media.port, leg.last_sdp
            )
            out.headers.add("Content-Type", "application/sdp")
            if origin_request.body:
                core._point_media(leg, origin_request.body, negotiated=out.body)
        out.headers.add("Contact", core.contact(leg.transport))
    core.txl.send_response(pending.server_key, out, now)


def dialog_lost(core: B2BUA, pending: PendingReinvite, status: int, now: float) -> bool:
    """A 481 or 408 (the transaction's own timeout included) to a re-INVITE or UPDATE the
    bridge sent: §12.2.1.2 and §14.1 have the UAC terminate the dialog, whose far end rebooted,
    lost it or is out of reach. Kept, it would be a zombie leg holding ports, and the party on
    the other side would listen to silence. The leg goes as if its phone had hung up, so a
    two-party call ends with a BYE to the other party while a transfer or conference goes on.

    After a 481 no BYE is sent: the far end just said that dialog does not exist, and a BYE
    would draw the same 481. After a 408 one is: the far end may be alive with its session up
    (a 408 from a proxy, or only responses lost), and a BYE (§15) is the only way it learns
    the dialog is over; if it is really gone, that BYE ends at Timer F like any other.

    A mirrored request still waiting at its sender is not answered with the relayed 481 or
    408, which would tell that phone its own dialog with the bridge is gone (§12.2.1.2, on its
    side) and make it hang up a call that may go on. If the bridge is ending that dialog too,
    the request gets 487, as §15.1.2 has pending requests answered on a dialog a BYE ends;
    otherwise the party it was mirrored onto is gone and the bridge answers it from its own
    media, as :func:`mirror_reinvite` does with no one to mirror onto. False when the leg had
    already left (a 481 to a re-INVITE that crossed its BYE): nothing more to end."""
    leg = pending.to_leg
    call = next((c for c in core.calls.values() if c.legs.get(leg.leg_id) is leg), None)
    if call is None or not leg.live or leg.dialog is None:
        return False
    leg.held = pending.was_held
    reason = DIALOG_LOST[status]
    core._record(call.note("dialog_lost", now, leg=leg.leg_id, party=str(leg.role), status=status))
    if status == 408:
        core.send_bye(call, leg, now)
    else:
        abandon_reinvites(core, leg, now)
        leg.state = LegState.TERMINATED
    core.release_media(leg)
    core.leg_left(call, leg, now, reason=reason)
    origin, server_key = pending.from_leg, pending.server_key
    if origin is None or server_key is None or pending.request is None:
        return True
    if origin.live:
        answer_here(core, origin, pending.request, server_key, now)
    else:
        core.txl.send_response(server_key, make_response(pending.request, 487), now)
    return True


def abandon_reinvites(core: B2BUA, leg: Leg, now: float) -> None:
    """``leg`` hung up or is being hung up. §15.1.2: its own pending re-INVITE or UPDATE is
    answered, 487 as recommended; one mirrored onto it will get no answer that still matters,
    so the party that sent it hears 487 now rather than at Timer B. What the bridge sent stays
    pending until its final response, which a 2xx still needs an ACK for."""
    for pending in core._reinvites.values():
        if pending.server_key is None or pending.request is None:
            continue
        if pending.from_leg is leg or pending.to_leg is leg:
            out = make_response(pending.request, 487)
            core.txl.send_response(pending.server_key, out, now)
            pending.server_key = pending.request = None
            if pending.to_leg is leg:
                _offer_failed(core, pending)


def on_cancel(core: B2BUA, request: Request, key: str, now: float) -> None:
    """A CANCEL inside a dialog, for a re-INVITE (§9.2). Whatever became of it, a CANCEL
    matching its transaction gets 200; if the re-INVITE still waits for the other party, it
    gets 487 now, and the re-INVITE mirrored onto the other party is cancelled in turn, whose
    final response then only settles that dialog (a 487 restores what was held before)."""
    invite_key = core.txl.find_invite_server(request)
    if invite_key is None:
        core._respond(request, key, 481, now)
        return
    core.txl.send_response(key, make_response(request, 200), now)
    for client_key, pending in core._reinvites.items():
        if pending.server_key == invite_key and pending.request is not None:
            core.txl.send_response(invite_key, make_response(pending.request, 487), now)
            pending.server_key = pending.request = None
            _offer_failed(core, pending)
            _cancel_mirrored(core, client_key, pending, now)
            return


def _offer_failed(core: B2BUA, pending: PendingReinvite) -> None:
    """The party whose offer was mirrored is told it failed: a non-2xx relayed (491
    included), or 487 after its CANCEL or the other party's hang-up. §14.1: its session is then
    the one in force before, so its audio goes back where that one says, at that codec. The
    bridge pointed it at the offer on arrival, as an offerer must receive on a new address from
    the moment it offers (RFC 3264 §8.3.1). Should the other party's 2xx have crossed a CANCEL,
    the bridge puts that party back too (:func:`_undo_cancelled`), so both agree again."""
    leg, target = pending.from_leg, pending.was_target
    if leg is None or target is None or not leg.live or leg.media_target == target:
        return
    core._point_to(leg, target)


def _cancel_mirrored(core: B2BUA, client_key: str, pending: PendingReinvite, now: float) -> None:
    """§9.1: not before the re-INVITE drew a provisional response, which may never come
    (Timer B then ends it); a phone that answers at once needs no CANCEL at all."""
    if core.txl.state_of(client_key) is tx.State.CALLING:
        pending.cancel = Cancel.HELD
    else:
        _send_cancel(core, pending, now)


def _undo_cancelled(core: B2BUA, pending: PendingReinvite, now: float) -> None:
    """A re-INVITE whose CANCEL crossed the 2xx took effect at ``to_leg`` though its sender
    was told 487, and so believes the session unchanged (§9.1, §14.1: the 2xx wins, and only
    a new offer changes the session back). The bridge puts that party back as the sender
    believes it is with a re-INVITE of its own (RFC 3264 §8). After a hold or resume (§8.4):
    a held party would stay ``recvonly`` while the other believes they talk, so it is resumed;
    a resumed one would hear an agent who believes it cannot, so it is held again, hold tone
    included. After a codec change or a move of the media, the session description in force
    before is offered again, or the two parties would each send what the other's session
    does not expect."""
    call = core.calls.get(pending.call_id)
    leg = pending.to_leg
    if call is None or not leg.live:
        return
    if leg.held != pending.was_held:
        if pending.was_held:
            core.media.hold(leg.media)
        else:
            core.media.unhold(leg.media)
        reoffer.reoffer(core, call, leg, now, hold=pending.was_held)
    elif _changed_since(pending.was_sdp, leg.last_sdp):
        reoffer.reoffer(core, call, leg, now, hold=leg.held, restore=pending.was_sdp)


def _changed_since(before: bytes, now_sent: bytes) -> bool:
    """Whether the SDP the bridge sent since ``before`` describes another session: anything
    but the o= version differs (RFC 3264 §8, :func:`~bridge.calls.sdpmap.toward`)."""
    if not before or not now_sent:
        return False
    try:
        return sdpmap.toward(sdpmap.parse(before), now_sent) != now_sent
    except RemoteProtocolError:
        return False


def _send_cancel(core: B2BUA, pending: PendingReinvite, now: float) -> None:
    leg, sent = pending.to_leg, pending.sent
    assert sent is not None, "a mirrored re-INVITE keeps what it sent"
    pending.cancel = Cancel.SENT
    if leg.dialog is not None and leg.live:
        hop = core._next_hop(leg.dialog, leg)
        core.txl.send_request(tx.build_cancel(sent), hop, leg.transport, now)


def busy(core: B2BUA, leg: Leg) -> bool:
    return any(p.to_leg is leg or p.from_leg is leg for p in core._reinvites.values())
