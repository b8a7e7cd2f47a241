"""Parties the bridge can no longer reach on a response path (RFC 3261 §17.2.4).

Theory of operation
-------------------
The transaction layer reports a ``ServerTransportError`` when a response could not be
delivered: over TCP the connection the request came on had closed and a new one to the Via's
``received`` address and sent-by port failed too (§18.2.2). The transaction is gone, and §17.2.4
leaves the rest to the TU. The party that sent the request will see its own transaction time
out, which it reads as a 408 (§8.1.3.1), and §12.2.1.2 has a UAC end a dialog on a 408 to a
request inside it: that party is gone as far as signalling goes, and the bridge treats it so
rather than keep a leg, and the other parties, waiting on someone who cannot hear them.

* The caller's INVITE before it was answered (a 100 or relayed 18x lost): nobody waits for the
  call any more. The caller's leg ends, and with it the call: destinations still ringing are
  cancelled (§9.1), any other leg gets BYE.
* An INVITE whose 2xx was lost, or any request inside a confirmed dialog but BYE (a re-INVITE,
  UPDATE, REFER...): that leg leaves as after a 408 to a request the bridge sent
  (:func:`bridge.calls.reinvite.dialog_lost`): a best-effort BYE to its remote target, which is
  not the address that just failed and may still be reachable, its ports back, and the call
  goes on without it while two parties or a ringing transfer remain
  (:func:`bridge.calls.indialog.after_leg_left`). A leg the bridge was hanging up already only
  gets the BYE that waited for the ACK of that 2xx (§15, as at Timer L, §13.3.1.4).
* A final failure to an INVITE, a BYE, a CANCEL, or a request outside any dialog (OPTIONS,
  REGISTER): whatever the response said has already happened; nothing more to do.

A non-INVITE answered at once is out of reach here: over TCP its transaction ends as its
response is handed to the transport (Timer J is zero, §17.2.2), before any connect can fail.
Every step is recorded as an ``unreachable`` note in the call's history, and the hang-up it
leads to carries the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.calls import teardown
from bridge.calls.call import Call, Leg, LegState
from bridge.sip import transaction as tx

if TYPE_CHECKING:
    from bridge.calls.b2bua import B2BUA

_NOTHING_PENDS_ON = frozenset({"BYE", "CANCEL", "ACK"})
"""Requests whose response, once lost, leaves nothing for the bridge to do."""


def reason_for(leg: Leg) -> str:
    return f"{leg.role} unreachable (response not delivered)"


def on_server_transport_error(core: B2BUA, event: tx.ServerTransportError, now: float) -> None:
    found = core._by_server.get(event.server_key)
    if found is not None:
        call = core.calls.get(found[0])
        if call is not None:
            _invite_lost(core, call, call.legs[found[1]], now)
        return
    request = event.request
    if request is None or request.method in _NOTHING_PENDS_ON or request.to.tag is None:
        return
    for pending in core._reinvites.values():
        if pending.server_key == event.server_key:
            pending.server_key = pending.request = None
    in_dialog = core._find_leg(request)
    if in_dialog is not None:
        call, leg = in_dialog
        if leg.dialog is not None and leg.live:
            _leg_unreachable(core, call, leg, request.method, now)


def _invite_lost(core: B2BUA, call: Call, leg: Leg, now: float) -> None:
    """The response to the INVITE that brought ``leg`` in: which one it was follows from the
    leg's state (incoming: a provisional; confirmed or being hung up: the 2xx; terminated: a
    final failure, when the call had ended already)."""
    if leg.state is LegState.INCOMING:
        core._record(call.note("unreachable", now, leg=leg.leg_id, party=str(leg.role)))
        leg.state = LegState.TERMINATED
        core.release_media(leg)
        core.leg_left(call, leg, now, reason=reason_for(leg))
    elif leg.bye_deferred:
        core._record(call.note("unreachable", now, leg=leg.leg_id, party=str(leg.role)))
        teardown.send_deferred_bye(core, call, leg, now)
    elif leg.dialog is not None and leg.live:
        _leg_unreachable(core, call, leg, "INVITE", now)


def _leg_unreachable(core: B2BUA, call: Call, leg: Leg, method: str, now: float) -> None:
    data = {"leg": leg.leg_id, "party": str(leg.role), "method": method}
    core._record(call.note("unreachable", now, **data))
    teardown.hang_up_on(core, call, leg, now, reason=reason_for(leg))
