"""Requests inside established dialogs: hang-ups, REFER, DTMF keys, and the ACK's answer.

Theory of operation
-------------------
A request inside a dialog is matched to its leg by (Call-ID, our tag) before it gets here. A BYE
ends that leg; the call ends only when fewer than two parties remain and no transfer is ringing
for the caller. A re-INVITE or UPDATE goes to :mod:`bridge.calls.reinvite`, which mirrors it on
the other leg. Before the caller's INVITE is answered, its early dialog takes a BYE as a CANCEL
and refuses a second offer. An ACK for a 2xx of the bridge's that carried an offer must carry
the answer (RFC 3261 §13.2.2.4). A REFER (RFC 3515) is accepted with 202 and becomes a
transfer request, whose progress the bridge NOTIFYs in that REFER's own subscription, named by
its CSeq number (``Event: refer;id=``, §2.4.6), until a NOTIFY of the bridge's for it fails,
which ends that subscription (RFC 6665 §4.2.2) but neither the transfer nor a later REFER's;
the agent's digits (INFO here, RFC 4733 from the media relay) are collected into transfer keys.
These methods are part of :class:`~bridge.calls.b2bua.B2BUA`, split out to keep modules small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.calls import legs, reinvite, reoffer, sdpmap
from bridge.calls.call import Call, CallInput, Leg, LegRole, LegState
from bridge.calls.keys import KeyBuffer
from bridge.calls.transfer import TransferRequest, parse_refer_to
from bridge.media.dtmf import parse_info_dtmf
from bridge.sip.errors import RemoteProtocolError
from bridge.sip.message import REASONS, Request, Response, make_response

if TYPE_CHECKING:
    from bridge.calls.b2bua import B2BUA


def on_in_dialog(core: B2BUA, request: Request, key: str, now: float) -> None:
    found = core._find_leg(request)
    if (
        found is not None
        and found[1].dialog is None
        and on_early_dialog(core, found[0], found[1], request, key, now)
    ):
        return
    if found is None or found[1].dialog is None:
        core.counters.unknown_dialog += 1
        core._respond(request, key, 481, now)
        return
    call, leg = found
    assert leg.dialog is not None
    try:
        leg.dialog.receive_request(request)
    except RemoteProtocolError as exc:
        core._respond(request, key, exc.status, now, exc.reason)
        return
    method = request.method
    if method == "BYE":
        core.txl.send_response(key, make_response(request, 200), now)
        reinvite.abandon_reinvites(core, leg, now)
        leg.state = LegState.TERMINATED
        core.release_media(leg)
        after_leg_left(core, call, leg, now)
    elif method == "REFER":
        on_refer(core, call, leg, request, key, now)
    elif method in ("INVITE", "UPDATE"):
        reinvite.mirror_reinvite(core, call, leg, request, key, now)
    elif method == "INFO" and request.body:
        try:
            info = parse_info_dtmf(
                request.headers.get("Content-Type") or "",
                request.body.decode("utf-8", "replace"),
            )
        except RemoteProtocolError as exc:
            core._respond(request, key, exc.status, now, exc.reason)
            return
        core.txl.send_response(key, make_response(request, 200), now)
        key_pressed(core, call, leg, info.digit, now)
    elif method in ("INFO", "OPTIONS", "NOTIFY"):
        core.txl.send_response(key, make_response(request, 200), now)
    else:
        core._respond(request, key, 501, now)


def on_early_dialog(
    core: B2BUA, call: Call, leg: Leg, request: Request, key: str, now: float
) -> bool:
    """A request from the caller on the early dialog of the bridge's 180 or 183, before its
    INVITE is answered (§12.1.1). §15: the caller may end it with BYE, taken as a CANCEL
    (§15.1.2: 487 to the INVITE); §14.2: a second INVITE, or an UPDATE's offer (RFC 3311
    §5.2), must wait for the first to be answered. A 481 instead would tell the phone that
    the dialog is gone, and after a BYE the desk would go on ringing. True when handled."""
    invite = leg.invite
    if (
        leg.state is not LegState.INCOMING
        or invite is None
        or request.from_.tag != invite.from_.tag
    ):
        return False
    if request.method == "BYE":
        core.txl.send_response(key, make_response(request, 200), now)
        core.caller_cancelled(call, now, reason="caller hung up before answer")
    elif request.method in ("INVITE", "UPDATE"):
        reinvite.refuse_second_offer(core, request, key, now)
    else:
        return False
    return True


def after_leg_left(
    core: B2BUA, call: Call, leg: Leg, now: float, *, reason: str | None = None
) -> None:
    """A party hung up (``reason`` when it was not a BYE of its own). The call goes on while
    two parties remain, or while a transfer is ringing its target for the caller; otherwise
    everyone else (supervisors too) is hung up."""
    if core.supervision.leg_left(call, leg, now):
        return
    if core.transfers.agent_left(call, leg, now) or core.transfers.target_left(call, leg, now):
        return
    if leg.leg_id == call.caller_leg:
        core.transfers.caller_left(call, now)
        core._hangup(call.call_id, now, reason=reason or "BYE from caller")
        return
    live = core.supervision.parties(call)
    ringing = call.call_id in core.transfers.by_call
    if ringing or len(live) >= 2:
        record_leg_left(core, call, leg, now)
        if len(live) == 2 and not ringing and not core.supervision.regroup(call):
            core.media.connect(live[0].media, live[1].media)
        return
    core._hangup(call.call_id, now, reason=reason or f"BYE from {leg.role}")


def record_leg_left(core: B2BUA, call: Call, leg: Leg, now: float) -> None:
    core._record(call.apply(CallInput.PROGRESS, now, leg=leg.leg_id, left=str(leg.role)))


def on_refer(core: B2BUA, call: Call, leg: Leg, request: Request, key: str, now: float) -> None:
    """RFC 3515: accept with 202, then report the transfer's progress by NOTIFY."""
    value = request.headers.get("Refer-To")
    if value is None:
        core._respond(request, key, 400, now, "Missing Refer-To")
        return
    try:
        target = parse_refer_to(value)
    except RemoteProtocolError:
        core._respond(request, key, 400, now, "Bad Refer-To")
        return
    replaces = next((v for k, v in target.headers if k.lower() == "replaces"), None)
    if replaces is not None:
        on_refer_replaces(core, call, leg, request, key, replaces, now)
        return
    core.txl.send_response(key, make_response(request, 202), now)
    leg.refer_id = refer_id = request.cseq.seq
    send_notify(core, call, leg, 100, "Trying", False, now, refer_id)
    core.transfer_requests.append(
        TransferRequest(
            call_id=call.call_id,
            target=target.user or target.host,
            mode="blind",
            requested_by=leg.peer,
            refer_leg=leg.leg_id,
            refer_id=refer_id,
        )
    )


def on_refer_replaces(
    core: B2BUA, call: Call, leg: Leg, request: Request, key: str, replaces: str, now: float
) -> None:
    """The agent's phone finished its own attended transfer (RFC 3891 inside RFC 3515): it
    consulted the target in a second call through the bridge, and asks that the caller replace
    it there. Since both dialogs end at the bridge, no INVITE is needed: the target's leg moves
    into the caller's call, the media is joined, and the agent's consultation leg is hung up."""
    consult = _find_replaced(core, replaces)
    if consult is None:
        core._respond(request, key, 481, now, "Replaced Dialog Not Found")
        return
    other_call, agent_side = consult
    target = other_call.other(agent_side)
    if other_call is call or target is None or target.state is not LegState.CONFIRMED:
        core._respond(request, key, 481, now, "Replaced Dialog Not Found")
        return
    core.txl.send_response(key, make_response(request, 202), now)
    leg.refer_id = request.cseq.seq
    legs.adopt_leg(core, other_call, target, call)
    core.media.unhold(call.caller.media)
    core.media.connect(call.caller.media, target.media)
    call.callee_leg = target.leg_id
    core.send_bye(other_call, agent_side, now)
    core.supervision.regroup(call)
    if call.caller.held:
        reoffer.resume(core, call, call.caller, now)
    core._record(call.apply(CallInput.PROGRESS, now, replaced_by=target.leg_id, peer=target.peer))
    send_notify(core, call, leg, 200, "OK", True, now, request.cseq.seq)


def _find_replaced(core: B2BUA, replaces: str) -> tuple[Call, Leg] | None:
    """The leg a Replaces value names (§3): its Call-ID and the tag the bridge gave that
    dialog, which the agent's phone calls the to-tag."""
    call_id, *params = (part.strip() for part in replaces.split(";"))
    tags = dict(p.split("=", 1) for p in params if "=" in p)
    for tag in (tags.get("to-tag"), tags.get("from-tag")):
        found = core._by_dialog.get((call_id, tag or ""))
        if found is not None and found[0] in core.calls:
            other_call = core.calls[found[0]]
            return other_call, other_call.legs[found[1]]
    # Phones that did not keep our tag still name their own: match the Call-ID and the
    # phone's tag on an incoming leg (a B2BUA sees both ends of that dialog).
    phone_tags = {tags.get("from-tag"), tags.get("to-tag")} - {None, ""}
    for other_call in core.calls.values():
        for leg in other_call.legs.values():
            invite = leg.invite
            if (
                leg.incoming
                and invite is not None
                and invite.call_id == call_id
                and invite.from_.tag in phone_tags
            ):
                return other_call, leg
    return None


def send_notify(
    core: B2BUA,
    call: Call,
    leg: Leg,
    status: int,
    reason: str,
    final: bool,
    now: float,
    refer_id: int | None = None,
) -> None:
    """Report a REFER's progress in its implicit subscription (RFC 3515 §2.4.4), unless a
    failed NOTIFY already ended it (:func:`on_notify_response`). Each REFER in a dialog
    creates a subscription of its own, which its NOTIFYs name with ``Event: refer;id=`` and
    the REFER's CSeq number (§2.4.6): required from the second REFER on, allowed on the
    first, and carried on every one here so the phone never has to guess. ``refer_id`` is
    that REFER; None (no REFER known) sends a plain ``Event: refer``."""
    if refer_id in leg.refers_ended:
        return
    assert leg.dialog is not None
    state = "terminated;reason=noresource" if final else "active;expires=60"
    event = "refer" if refer_id is None else f"refer;id={refer_id}"
    notify = leg.dialog.create_request(
        "NOTIFY",
        headers=(("Event", event), ("Subscription-State", state)),
        body=f"SIP/2.0 {status} {reason}\r\n".encode(),
        content_type="message/sipfrag;version=2.0",
    )
    notify.headers.prepend("Via", core.via(leg.transport))
    notify.headers.add("Contact", core.contact(leg.transport))
    key = core.txl.send_request(notify, core._next_hop(leg.dialog, leg), leg.transport, now)
    core._notifies[key] = (call.call_id, leg, refer_id)


def on_notify_response(core: B2BUA, response: Response, key: str, now: float) -> None:
    """The final response to a NOTIFY the bridge sent for a REFER. RFC 6665 §4.2.2 has the
    notifier remove the subscription when a NOTIFY times out (Timer F, the 408 here; SHOULD)
    and when it draws 404, 405, 410, 416, 480 to 485, 489, 501 or 604 (MUST): a 481 says
    the phone no longer knows it. The bridge ends it after any other failure as well, as
    RFC 3265 §3.2.2 had it: it never resends a NOTIFY, and a phone that refused one has no
    use for the next. Only that REFER's notifications stop (another REFER in the dialog has
    its own subscription, RFC 3515 §2.4.6): the transfer goes on, and the end is noted in the
    call's history for the audit log."""
    if response.status < 200:
        return
    call_id, leg, refer_id = core._notifies.pop(key)
    if response.status < 300 or refer_id in leg.refers_ended:
        return
    leg.refers_ended |= {refer_id}
    call = core.calls.get(call_id)
    if call is not None:
        data = {"leg": leg.leg_id, "refer_id": refer_id, "status": response.status}
        core._record(call.note("refer_subscription_ended", now, **data))


def fail_transfer_request(core: B2BUA, request: TransferRequest, status: int, now: float) -> None:
    """A REFER or key press whose target could not be resolved: tell the agent's phone."""
    call = core.calls.get(request.call_id)
    if call is None or request.refer_leg is None:
        return
    leg = call.legs.get(request.refer_leg)
    if leg is not None and leg.dialog is not None and leg.state is LegState.CONFIRMED:
        reason = REASONS.get(status, "")
        send_notify(core, call, leg, status, reason, True, now, request.refer_id)


def on_digit(core: B2BUA, media_leg: object, digit: str, now: float) -> None:
    """A DTMF digit from a media leg (RFC 4733) or an INFO: the agent's transfer key."""
    found = find_media_leg(core, media_leg)
    if found is not None:
        key_pressed(core, found[0], found[1], digit, now)


def find_media_leg(core: B2BUA, media_leg: object) -> tuple[Call, Leg] | None:
    """The call and leg a media endpoint belongs to, if it still belongs to one."""
    for call in core.calls.values():
        for leg in call.legs.values():
            if leg.media is media_leg:
                return call, leg
    return None


def key_pressed(core: B2BUA, call: Call, leg: Leg, digit: str, now: float) -> None:
    if (
        leg.leg_id == call.caller_leg
        or leg.role is LegRole.SUPERVISOR
        or leg.state is not LegState.CONFIRMED
    ):
        return
    buffer = core._keys.setdefault(call.call_id, KeyBuffer())
    code = buffer.feed(digit, now, core.routing.match_feature_code, core.routing.digit_timeout)
    if code is None:
        return
    if code.action == "cancel":
        core.transfers.cancel(call, now)
        return
    if code.destination is None:
        return
    core.transfer_requests.append(
        TransferRequest(
            call_id=call.call_id,
            target=code.destination,
            mode="three_way" if code.action == "three_way" else "blind",
            requested_by=leg.peer,
        )
    )


def on_ack(core: B2BUA, call: Call, leg: Leg, request: Request, now: float) -> None:
    """The ACK to a 2xx the bridge sent. When that 2xx carried an offer (the party's INVITE
    had none), the ACK must carry the answer (RFC 3261 §13.2.2.4, RFC 6337 §2), and the
    party's audio goes where it says. An ACK without a usable one is a protocol failure that
    leaves the call without audio: it is hung up rather than left silent. An SDP in any other
    ACK answers nothing and is ignored, as is a repeated ACK."""
    if not leg.awaiting_answer:
        return
    leg.awaiting_answer = False
    body = request.body if request.content_type == "application/sdp" else b""
    if body and sdpmap.remote_of(body) is not None:
        core._point_media(leg, body)
        return
    core._record(call.note("no_answer_in_ack", now, leg=leg.leg_id))
    core.hangup(call.call_id, now, reason="no answer in ACK")
