"""The caller's outgoing attempts: ringing destinations and handling their answers.

Theory of operation
-------------------
A routed call's destinations are rung one at a time in failover order, each on a leg of its own
with the caller's SDP anchored on the bridge's media ports. The callee's provisionals go on to
the caller (early media included); its 2xx becomes the caller's 200 (RFC 3261 §13.3.1.4) and
the media is connected; a failure fails over to the next destination where its status allows,
and when none is left the caller gets a final response of its own.
These functions are part of :class:`~bridge.calls.b2bua.B2BUA`, split out to keep modules small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.calls import legs, sdpmap, teardown
from bridge.calls.call import Call, CallInput, CallState, Leg, LegRole, LegState
from bridge.calls.legs import ALLOW
from bridge.calls.ports import Destination, MediaUnavailable
from bridge.sip.dialog import Dialog
from bridge.sip.message import Request, Response, make_response

if TYPE_CHECKING:
    from bridge.calls.b2bua import B2BUA

_FAILOVER_STATUSES = frozenset({408, 480, 486, 500, 502, 503, 504, 600, 603})


def try_next(core: B2BUA, call: Call, now: float) -> bool:
    queue = core._pending_destinations.get(call.call_id) or []
    if not queue:
        return False
    dest = queue.pop(0)
    caller = call.caller
    assert caller.invite is not None
    leg_id = f"b{sum(1 for leg in call.legs.values() if not leg.incoming) + 1}"
    try:
        media = core.media.allocate(near=caller.media)
    except MediaUnavailable:
        return False
    leg = legs.outgoing_leg(leg_id, LegRole.CALLEE, dest, media)
    call.legs[leg_id] = leg
    call.callee_leg = leg_id
    invite = _outgoing_invite(core, caller.invite, leg, dest)
    leg.invite = invite
    leg.client_key = core.txl.send_request(invite, dest.address, dest.transport, now)
    core._by_client[leg.client_key] = (call.call_id, leg_id)
    core.index_leg(call, leg)
    legs.ring_deadline(core, call, leg, now + dest.ring_timeout)
    return True


def _outgoing_invite(core: B2BUA, incoming: Request, leg: Leg, dest: Destination) -> Request:
    hops = max(int(incoming.headers.get("Max-Forwards") or 70) - 1, 0)
    passed = [
        (name, value)
        for name in ("Priority", "Subject", "User-to-User", "Call-Info", "X-Ticket-Id")
        for value in incoming.headers.get_all(name)
    ]
    body = b""
    if incoming.body and incoming.content_type == "application/sdp":
        leg.last_sdp = body = sdpmap.anchor_offer(
            incoming.body, leg.media.host, leg.media.port, leg.last_sdp
        )
    elif not incoming.body:
        leg.last_sdp = body = sdpmap.own_offer(leg.media.host, leg.media.port, leg.last_sdp)
    return legs.new_invite(core, incoming, leg, dest, hops=hops, headers=passed, body=body)


def on_invite_response(core: B2BUA, call: Call, leg: Leg, response: Response, now: float) -> None:
    status = response.status
    caller = call.caller
    if status < 200:
        if status == 100 or leg.state not in (LegState.CALLING, LegState.EARLY):
            return
        leg.state = LegState.EARLY
        if call.state is CallState.RINGING and caller.state is LegState.INCOMING:
            core._record(call.apply(CallInput.PROGRESS, now, status=status, leg=leg.leg_id))
            _relay_provisional(core, call, response, now)
        return
    core._ring_deadlines.pop((call.call_id, leg.leg_id), None)
    core._by_client.pop(leg.client_key or "", None)
    if status < 300:
        _on_answer(core, call, leg, response, now)
        return
    leg.state = LegState.TERMINATED
    teardown.release_media(core, leg)
    core.counters.by_status[status] = core.counters.by_status.get(status, 0) + 1
    if call.state is CallState.RINGING:
        _destination_failed(core, call, leg, status, legs.reason_of(response), now)
    else:
        teardown.leg_gone(core, call, leg, now)


def _destination_failed(
    core: B2BUA, call: Call, leg: Leg, status: int, reason: str, now: float
) -> None:
    if status in _FAILOVER_STATUSES | {404} and try_next(core, call, now):
        data = {"status": status, "leg": leg.leg_id, "reason": reason}
        core._record(call.apply(CallInput.FAILOVER, now, **data))
        return
    core._record(call.apply(CallInput.ATTEMPT_FAILED, now, status=status, reason=reason))
    fail_caller(core, call, _caller_status(status), None, now)


def _relay_provisional(core: B2BUA, call: Call, response: Response, now: float) -> None:
    """The callee's 18x to the caller. Its SDP answers the bridge's offer on the callee's
    leg (early media) and goes on as the answer to the caller's offer; a caller that made
    none gets the bridge's offer in the 2xx (RFC 3261 §13.2.1, RFC 3264 §4), so its 18x
    goes without a body: an answer to nothing, and no offer either, since the bridge does
    not do reliable provisionals (RFC 3262), the only ones that may carry one."""
    caller = call.caller
    assert caller.invite is not None
    assert caller.server_key is not None
    out = make_response(caller.invite, response.status, response.reason, to_tag=caller.local_tag)
    out.headers.add("Contact", core.contact(caller.transport))
    if response.body and response.content_type == "application/sdp":
        if caller.invite.body:
            _put_answer(caller, response.body, out)
        core._point_media(call.legs[call.callee_leg], response.body)
    core.txl.send_response(caller.server_key, out, now)


def _put_answer(caller: Leg, answer: bytes, out: Response) -> None:
    """The far party's answer into ``out`` for the caller: anchored on the caller's media
    and in the one SDP session the caller sees from the bridge (RFC 3264 §8)."""
    assert caller.invite is not None
    caller.last_sdp = out.body = sdpmap.anchor_answer(
        answer, caller.invite.body, caller.media.host, caller.media.port, caller.last_sdp
    )
    out.headers.add("Content-Type", "application/sdp")


def _on_answer(core: B2BUA, call: Call, leg: Leg, response: Response, now: float) -> None:
    answered_offer = legs.answers_offer(leg, response)
    legs.confirm_outgoing(core, call, leg, response, now)
    if call.state is not CallState.RINGING or call.caller.state is not LegState.INCOMING:
        # The caller cancelled while this leg was being answered (§9.1 race): end it.
        teardown.send_bye(core, call, leg, now)
        return
    if not answered_offer:
        legs.end_answerless(core, call, leg, now)
        _destination_failed(core, call, leg, *legs.ANSWERLESS_2XX, now)
        return
    caller = call.caller
    assert caller.invite is not None
    assert caller.server_key is not None
    out = make_response(caller.invite, 200, to_tag=caller.local_tag)
    out.headers.add("Contact", core.contact(caller.transport))
    out.headers.add("Allow", ALLOW)
    if response.body and caller.invite.body:
        _put_answer(caller, response.body, out)
        core._point_media(caller, caller.invite.body, negotiated=out.body)
    elif response.body:
        out.body = legs.offer_in_2xx(caller, response.body)
        out.headers.add("Content-Type", "application/sdp")
    caller.dialog = Dialog.uas(caller.invite, caller.local_tag)
    caller.invite = legs.settled_invite(caller.invite, incoming=True)
    caller.state = LegState.CONFIRMED
    caller.answered_at = now
    core.txl.send_response(caller.server_key, out, now)
    core.media.connect(caller.media, leg.media)
    core.media.private_keys(leg.media)
    core.counters.calls_answered += 1
    core._pending_destinations.pop(call.call_id, None)
    core._record(
        call.apply(
            CallInput.ANSWERED,
            now,
            leg=leg.leg_id,
            peer=leg.peer,
            destination=f"{leg.remote[0]}:{leg.remote[1]}",
        )
    )


def fail_caller(core: B2BUA, call: Call, status: int, reason: str | None, now: float) -> None:
    caller = call.caller
    assert caller.invite is not None
    assert caller.server_key is not None
    if caller.state is LegState.INCOMING:
        out = make_response(caller.invite, status, reason, to_tag=caller.local_tag)
        core.txl.send_response(caller.server_key, out, now)
    caller.state = LegState.TERMINATED
    core.counters.calls_failed += 1
    call.ended_reason = reason or str(status)
    # A leg cancelled on the way (a ring timeout) may still await its INVITE's end.
    teardown.maybe_finished(core, call, now)


def _caller_status(status: int) -> int:
    """What the caller hears when every destination failed."""
    if status in (486, 600):
        return 486
    if status == 408:
        return 480
    if status >= 500:
        return 503
    return status if status < 700 else 500
