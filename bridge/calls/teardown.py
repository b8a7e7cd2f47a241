"""How calls end: CANCEL, the ring timeout, hang-ups, BYE, and giving back what a call held.

Theory of operation
-------------------
A caller's CANCEL (RFC 3261 §9.2), or its BYE on the early dialog (§15), gets its 200, the
caller's INVITE its 487, and every outgoing leg still ringing is cancelled in turn (§9.1): at
once, or for a leg that has sent no provisional response yet when it does
(:func:`~bridge.calls.legs.cancel_leg`); the caller never waits on that. A destination that
rings past its timeout is cancelled by the bridge the same way and the next one is tried, or the
caller hears 480. A hang-up, whoever asks for it, sends BYE on every confirmed leg (§15.1.1), a
party whose ACK for the bridge's 2xx has not come yet getting its BYE once it does or the 2xx is
given up on (§15), a final response to a caller still waiting, and CANCEL to legs still
ringing; the call is finished
only once every leg is gone (a cancelled one too, whose INVITE ends in a final response or
Timer B), so its media ports and its entries in the core's indices are given back exactly once.
These functions are part of :class:`~bridge.calls.b2bua.B2BUA`, split out to keep modules small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.calls import legs, reinvite
from bridge.calls.call import Call, CallInput, CallState, Leg, LegRole, LegState
from bridge.calls.transfer import CALL_ENDED
from bridge.sip import transaction as tx
from bridge.sip.message import Request, make_response

if TYPE_CHECKING:
    from bridge.calls.b2bua import B2BUA


class Released:
    """Stands in for a media leg after its ports went back to the pool."""

    def __init__(self, was: object) -> None:
        self.was = was
        self.host = ""
        self.port = 0


def on_cancel(core: B2BUA, request: Request, key: str, now: float) -> None:
    invite_key = core.txl.find_invite_server(request)
    found = core._by_server.get(invite_key) if invite_key else None
    if found is None:
        core._respond(request, key, 481, now)
        return
    core.txl.send_response(key, make_response(request, 200), now)
    call = core.calls.get(found[0])
    if call is not None:
        caller_cancelled(core, call, now, reason="caller cancelled")


def caller_cancelled(core: B2BUA, call: Call, now: float, *, reason: str) -> None:
    """The caller gave up before its INVITE was answered (a CANCEL, or a BYE on the early
    dialog): the INVITE gets 487 and every leg still ringing is cancelled. Too late once the
    INVITE was answered: a 2xx ends the INVITE transaction, so the call goes on (§9.2)."""
    caller = call.caller
    if caller.state is not LegState.INCOMING:
        return
    assert caller.invite is not None
    assert caller.server_key is not None
    core.txl.send_response(
        caller.server_key, make_response(caller.invite, 487, to_tag=caller.local_tag), now
    )
    caller.state = LegState.TERMINATED
    release_media(core, caller)
    call.ended_reason = reason
    core._record(call.apply(CallInput.CALLER_CANCELLED, now))
    core._pending_destinations.pop(call.call_id, None)
    cancel_outgoing(core, call, now)
    maybe_finished(core, call, now)


def cancel_outgoing(core: B2BUA, call: Call, now: float) -> None:
    for leg in call.legs.values():
        legs.cancel_leg(core, call, leg, now)


def ring_timeout(core: B2BUA, call_id: str, leg_id: str, now: float) -> None:
    call = core.calls.get(call_id)
    if call is None:
        return
    leg = call.legs[leg_id]
    if leg.state not in (LegState.CALLING, LegState.EARLY) or leg.invite is None:
        return
    if leg.role is LegRole.TARGET:
        core.transfers.ring_timeout(call, leg, now)
        return
    if leg.role is LegRole.SUPERVISOR:
        core.supervision.ring_timeout(call, leg, now)
        return
    legs.cancel_leg(core, call, leg, now)
    if call.state is CallState.RINGING:
        if core._try_next(call, now):
            data = {"status": 408, "leg": leg_id, "reason": legs.NO_ANSWER}
            core._record(call.apply(CallInput.FAILOVER, now, **data))
        else:
            data = {"status": 408, "reason": legs.NO_ANSWER}
            core._record(call.apply(CallInput.ATTEMPT_FAILED, now, **data))
            core._fail_caller(call, 480, legs.NO_ANSWER, now)


def hangup(core: B2BUA, call_id: str, now: float, *, reason: str) -> None:
    call = core.calls.get(call_id)
    if call is None or call.state is CallState.ENDED:
        return
    if not call.ended_reason:
        call.ended_reason = reason
    if call.state is not CallState.ENDING:
        core._record(call.apply(CallInput.HANGUP, now, reason=reason))
    core.supervision.call_ended(call, now)
    core.transfers.caller_left(call, now, reason=CALL_ENDED)
    core._pending_destinations.pop(call.call_id, None)
    for leg in call.legs.values():
        if leg.state is LegState.CONFIRMED:
            send_bye(core, call, leg, now)
        elif leg.state is LegState.INCOMING and leg.invite and leg.server_key:
            out = make_response(leg.invite, 480, to_tag=leg.local_tag)
            core.txl.send_response(leg.server_key, out, now)
            leg.state = LegState.TERMINATED
    cancel_outgoing(core, call, now)
    maybe_finished(core, call, now)


def hang_up_on(core: B2BUA, call: Call, leg: Leg, now: float, *, reason: str) -> None:
    """A party that is gone without a BYE of its own (silent media, a response it can no
    longer be sent): a BYE in case it can still hear (§15), its ports back, and the call goes
    on as if it had hung up, so a transfer target's loss gives the caller back to the agent."""
    send_bye(core, call, leg, now)
    core.release_media(leg)
    core.leg_left(call, leg, now, reason=reason)


def send_bye(core: B2BUA, call: Call, leg: Leg, now: float) -> None:
    """§15: a UAS sends no BYE on a dialog before the ACK for its 2xx came or its 2xx was
    given up on: a BYE overtaking that ACK may find a phone that has not yet taken the
    dialog as confirmed, which answers 481 or keeps the call up. Until then the leg is
    ending all the same (no audio, no further requests) and the BYE waits in
    :func:`send_deferred_bye`; the 2xx goes on being retransmitted by its transaction."""
    assert leg.dialog is not None
    reinvite.abandon_reinvites(core, leg, now)
    leg.state = LegState.TERMINATING
    if leg.incoming and core.txl.state_of(leg.server_key or "") is tx.State.ACCEPTED:
        leg.bye_deferred = True
        return
    _bye(core, call, leg, now)


def _bye(core: B2BUA, call: Call, leg: Leg, now: float) -> None:
    assert leg.dialog is not None
    bye = leg.dialog.create_request("BYE")
    bye.headers.prepend("Via", core.via(leg.transport))
    key = core.txl.send_request(bye, core._next_hop(leg.dialog, leg), leg.transport, now)
    core._by_client[key] = (call.call_id, leg.leg_id)


def send_deferred_bye(core: B2BUA, call: Call, leg: Leg, now: float) -> bool:
    """The ACK for the bridge's 2xx came, or the 2xx was retransmitted for 64*T1 without one
    (§13.3.1.4: the dialog is then confirmed, but the session is to end with a BYE): a BYE
    that waited for either goes now, unless the party hung up meanwhile. True if one waited."""
    if not leg.bye_deferred:
        return False
    leg.bye_deferred = False
    if leg.state is LegState.TERMINATING:
        _bye(core, call, leg, now)
    return True


def ack_timeout(core: B2BUA, server_key: str, now: float) -> None:
    """No ACK for a 2xx the bridge sent within 64*T1: §13.3.1.4 has the session ended with a
    BYE. A call already ending only sends the BYE that was waiting for that ACK."""
    found = core._by_server.get(server_key)
    call = core.calls.get(found[0]) if found is not None else None
    if found is None or call is None:
        return
    if not send_deferred_bye(core, call, call.legs[found[1]], now):
        hangup(core, call.call_id, now, reason="no ACK for 200 OK")


def leg_gone(core: B2BUA, call: Call, leg: Leg, now: float) -> None:
    leg.state = LegState.TERMINATED
    release_media(core, leg)
    maybe_finished(core, call, now)


def maybe_finished(core: B2BUA, call: Call, now: float) -> None:
    if any(leg.state is not LegState.TERMINATED for leg in call.legs.values()):
        return
    if call.state is CallState.ENDING:
        core._record(call.apply(CallInput.LEGS_GONE, now))
    finish(core, call, now)


def finish(core: B2BUA, call: Call, now: float) -> None:
    for leg in call.legs.values():
        release_media(core, leg)
        core._by_dialog.pop((core._sip_call_id(leg), leg.local_tag), None)
        core._by_client.pop(leg.client_key or "", None)
        core._by_server.pop(leg.server_key or "", None)
        core._ring_deadlines.pop((call.call_id, leg.leg_id), None)
    core._pending_destinations.pop(call.call_id, None)
    core._keys.pop(call.call_id, None)
    core.transfers.caller_left(call, now, reason=CALL_ENDED)
    core.supervision.by_call.pop(call.call_id, None)
    core.calls.pop(call.call_id, None)


def release_media(core: B2BUA, leg: Leg) -> None:
    if leg.media is not None and not isinstance(leg.media, Released):
        core.media.release(leg.media)
        leg.media = Released(leg.media)
