"""Operations on one leg that the transfer desk and in-dialog handling share with the core.

They are functions of the :class:`~bridge.calls.b2bua.B2BUA` rather than its methods only to
keep modules small; they touch its indices (legs by dialog and by client transaction) so that
every leg the bridge owns stays findable whichever call it belongs to.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from bridge.calls import sdpmap
from bridge.calls.call import Call, Cancel, Leg, LegRole, LegState
from bridge.calls.ports import Destination
from bridge.sip import transaction as tx
from bridge.sip.dialog import Dialog
from bridge.sip.headers import Headers
from bridge.sip.ids import random_hex
from bridge.sip.message import REASONS, Request, Response
from bridge.sip.uri import NameAddr, SipUri

if TYPE_CHECKING:
    from bridge.calls.b2bua import B2BUA

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER, NOTIFY, REGISTER"
"""What the bridge accepts (the Allow header, §20.5)."""


def new_invite(
    core: B2BUA,
    caller_invite: Request,
    leg: Leg,
    dest: Destination,
    *,
    hops: int = 70,
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> Request:
    """An INVITE on a new outgoing leg (§8.1.1): a dialog of the bridge's own, in which
    the receiving side still sees who called (the caller's user part and display name)."""
    out = Headers()
    out.add("Via", core.via(leg.transport))
    out.add("Max-Forwards", str(hops))
    from_addr = NameAddr(
        uri=SipUri(
            user=caller_invite.from_.uri.user or "anonymous", host=core.host, port=core.local[1]
        ),
        display_name=caller_invite.from_.display_name,
    ).with_tag(leg.local_tag)
    out.add("From", str(from_addr))
    out.add("To", str(NameAddr(uri=dest.uri)))
    out.add("Call-ID", f"{random_hex(8)}@{core.host}")
    out.add("CSeq", "1 INVITE")
    out.add("Contact", core.contact(leg.transport))
    out.add("Allow", ALLOW)
    out.add("User-Agent", core.user_agent)
    for name, value in headers:
        out.add(name, value)
    if body:
        out.add("Content-Type", "application/sdp")
    return Request(method="INVITE", uri=dest.uri, headers=out, body=body)


def adopt_leg(core: B2BUA, source: Call, leg: Leg, into: Call) -> None:
    """Move a leg with its dialog and media from one call to another (RFC 3891)."""
    del source.legs[leg.leg_id]
    new_id = f"r{sum(1 for other in into.legs if other.startswith('r')) + 1}"
    leg.leg_id = new_id
    into.legs[new_id] = leg
    core.index_leg(into, leg)
    if leg.client_key:
        core._by_client[leg.client_key] = (into.call_id, new_id)


def register_client(core: B2BUA, key: str, call: Call, leg: Leg) -> None:
    core._by_client[key] = (call.call_id, leg.leg_id)


def ring_deadline(core: B2BUA, call: Call, leg: Leg, at: float) -> None:
    core._ring_deadlines[(call.call_id, leg.leg_id)] = at
    heapq.heappush(core._ring_heap, (at, call.call_id, leg.leg_id))


def clear_ring_deadline(core: B2BUA, call: Call, leg: Leg) -> None:
    core._ring_deadlines.pop((call.call_id, leg.leg_id), None)


def cancel_leg(core: B2BUA, call: Call, leg: Leg, now: float) -> None:
    """Give up on an outgoing leg that has not answered.

    §9.1: no CANCEL before the INVITE has drawn a provisional response, any one, 100 Trying
    included. Until then the far end may have no transaction for the CANCEL to match (it would
    answer 481 and go on ringing), so the CANCEL is held and sent on the first provisional
    response; a final response or Timer B ends the INVITE without one. Either way the leg stays
    indexed until its INVITE ends, so that a 2xx crossing the CANCEL is ACKed and hung up
    rather than left retransmitting (§13.2.2.4, §15). Its ports go back now: a cancelled leg
    carries no audio."""
    if leg.incoming or leg.state not in (LegState.CALLING, LegState.EARLY):
        return
    clear_ring_deadline(core, call, leg)
    leg.state = LegState.TERMINATING
    core.release_media(leg)
    if core.txl.state_of(leg.client_key or "") is tx.State.CALLING:
        leg.cancel = Cancel.HELD
    else:
        _send_cancel(core, leg, now)


def _send_cancel(core: B2BUA, leg: Leg, now: float) -> None:
    assert leg.invite is not None
    leg.cancel = Cancel.SENT
    core.txl.send_request(tx.build_cancel(leg.invite), leg.remote, leg.transport, now)


def on_cancelled_response(
    core: B2BUA, call: Call, leg: Leg, response: Response, now: float
) -> None:
    """A response to an INVITE the bridge cancelled (or a 408/503 standing for its timeout or
    transport error). It never reaches the call's own logic: the leg was given up, whoever
    rings next or was told the outcome already. A 2xx means the far end answered before the
    CANCEL reached it, or before it could be sent; that dialog exists all the same and is
    ended from our side with ACK then BYE (§15)."""
    status = response.status
    if status < 200:
        if leg.cancel is Cancel.HELD:
            _send_cancel(core, leg, now)
        return
    core._by_client.pop(leg.client_key or "", None)
    if status < 300:
        confirm_outgoing(core, call, leg, response, now)
        core.send_bye(call, leg, now)
        return
    leg.state = LegState.TERMINATED
    core._maybe_finished(call, now)


def outgoing_leg(leg_id: str, role: LegRole, dest: Destination, media: object) -> Leg:
    """A leg the bridge is about to call out on, with a From tag of its own (§19.3)."""
    return Leg(
        leg_id=leg_id,
        role=role,
        incoming=False,
        state=LegState.CALLING,
        remote=dest.address,
        transport=dest.transport,
        peer=dest.peer,
        local_tag=random_hex(5),
        media=media,
    )


def confirm_outgoing(core: B2BUA, call: Call, leg: Leg, response: Response, now: float) -> None:
    """ACK a 2xx on an outgoing leg and make its dialog ours (§13.2.2.4). The dialog now
    holds what later requests need; the INVITE is cut down to :func:`settled_invite`."""
    assert leg.invite is not None
    dialog = Dialog.uac(leg.invite, response)
    leg.dialog = dialog
    leg.state = LegState.CONFIRMED
    leg.answered_at = now
    ack = dialog.create_ack(leg.invite.cseq.seq)
    ack.headers.prepend("Via", core.via(leg.transport))
    core.txl.send_ack(leg.client_key, ack, core._next_hop(dialog, leg), leg.transport)
    core.index_leg(call, leg)
    leg.invite = settled_invite(leg.invite, incoming=False)
    if response.body:
        core._point_media(leg, response.body)


_SETTLED_HEADERS = frozenset({"From", "Call-ID", "X-Ticket-Id"})
"""What the INVITE of an answered caller keeps (:func:`settled_invite`)."""
_SETTLED_OWN_HEADERS = frozenset({"Call-ID"})
"""What the bridge's own INVITE keeps once its leg answered (:func:`settled_invite`)."""


def settled_invite(invite: Request, *, incoming: bool) -> Request:
    """A leg's INVITE once its dialog is confirmed, kept for as long as the call lasts. Only
    what is read from it after the answer stays: the Call-ID (the leg's index, a Replaces
    match) and, of a received INVITE, the From (its tag, and the caller's user and display
    name a transfer target or a supervisor is shown) and the X-Ticket-Id the call came with.
    It is no longer a request to answer or to CANCEL, which a confirmed leg never needs: the
    transaction layer holds its own INVITE for retransmissions, requests in the dialog are
    built from the :class:`~bridge.sip.dialog.Dialog`, and the SDP the bridge sent is
    ``Leg.last_sdp``."""
    keep = _SETTLED_HEADERS if incoming else _SETTLED_OWN_HEADERS
    kept = [item for item in invite.headers if item[0] in keep]
    return Request(
        method=invite.method,
        uri=invite.uri,
        headers=Headers.from_canonical(kept),
        version=invite.version,
    )


def answers_offer(leg: Leg, response: Response) -> bool:
    """Whether a 2xx to the INVITE on an outgoing leg answers that INVITE's offer, which the
    bridge's INVITE always carries (the caller's anchored, or one of its own for a caller
    that sent none). RFC 3261 §13.2.1 and RFC 3264 §4/§5: the answer to an offer in an
    INVITE comes in the 2xx (or a reliable provisional, which the bridge does not ask for).

    A 2xx without one leaves that leg with no session and the caller, if it were answered,
    in a call without audio: on an emergency line that is worse than a failure, since the
    caller waits in silence instead of being sent on. The bridge treats such a destination
    as failed: the 2xx is ACKed as every 2xx must be (§13.2.2.4), the dialog it made ended
    with a BYE (§15), and the next destination rings, or the caller gets the failure a
    broken gateway would give (502, heard as 503). Repairing the session with a re-INVITE
    would delay the caller on a device that already broke the offer/answer model. Asked
    before :func:`confirm_outgoing`, which drops the INVITE's body."""
    assert leg.invite is not None
    if not leg.invite.body:
        return True
    return bool(response.body) and response.content_type == "application/sdp"


ANSWERLESS_2XX = 502, "answered without an SDP answer to the offer"
"""The failure a destination whose 2xx does not answer the bridge's offer counts as (see
:func:`answers_offer`): a broken gateway's status, and the reason events and NOTIFYs give."""

NO_ANSWER = "No Answer"
"""Why a destination that rang past the plan's ring timeout was given up on: the reason the
caller, the agent and the records are given, whatever status each reports it with."""


def reason_of(response: Response) -> str:
    """Why a destination failed, as its final response says: the Reason-Phrase it sent, which
    may be empty (RFC 3261 §7.2, §25.1), else the standard phrase of the status (§21), so
    every failover and failure record reads the same for the same cause."""
    return response.reason or REASONS.get(response.status, "")


def end_answerless(core: B2BUA, call: Call, leg: Leg, now: float) -> None:
    """Hang up a leg whose 2xx, already ACKed by :func:`confirm_outgoing`, did not answer the
    bridge's offer (:func:`answers_offer`): BYE on the dialog it made (§15) and its ports back,
    noted in the call's history with the leg, since a caller's failure that follows carries
    only a status. Whoever rang it then goes on as for a failure response, with
    :data:`ANSWERLESS_2XX` as its status and reason."""
    core._record(call.note("no_answer_in_2xx", now, leg=leg.leg_id))
    core.send_bye(call, leg, now)
    core.release_media(leg)


def offer_in_2xx(caller: Leg, callee_answer: bytes) -> bytes:
    """The body of the 2xx to a caller whose INVITE had no offer (RFC 3261 §13.2.1, RFC 3264
    §5): an offer of the bridge's own, preferring the codec the callee settled on; the caller
    answers in its ACK (§13.2.2.4, RFC 6337 §2), which :func:`~bridge.calls.indialog.on_ack`
    waits for."""
    caller.last_sdp = sdpmap.own_offer(
        caller.media.host, caller.media.port, caller.last_sdp, prefer=callee_answer
    )
    caller.awaiting_answer = True
    return caller.last_sdp


def release_stray_leg(core: B2BUA, call: Call, leg: Leg, response: Response, now: float) -> None:
    """A target that answers after its transfer ended (cancelled, or failed over) is
    ACKed and hung up at once."""
    if 200 <= response.status < 300 and leg.invite is not None:
        confirm_outgoing(core, call, leg, response, now)
        core.send_bye(call, leg, now)
    elif response.status >= 300:
        leg.state = LegState.TERMINATED
        core.release_media(leg)
        core._maybe_finished(call, now)
