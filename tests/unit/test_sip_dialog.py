"""Dialogs (RFC 3261 §12): creation on both sides, route sets, CSeq order, target refresh."""

from __future__ import annotations

import pytest

from bridge.sip.dialog import Dialog, DialogState, dialog_id_of
from bridge.sip.errors import LocalProtocolError, RemoteProtocolError
from bridge.sip.message import Request, Response, parse_message
from bridge.sip.uri import SipUri


def wire(text: str, body: bytes = b"") -> bytes:
    head = text.strip("\n").replace("\n", "\r\n")
    return f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def parse_request(text: str) -> Request:
    message = parse_message(wire(text))
    assert isinstance(message, Request)
    return message


def parse_response(text: str) -> Response:
    message = parse_message(wire(text))
    assert isinstance(message, Response)
    return message


# Our INVITE as the UAC, towards the 110 PBX.
OUR_INVITE = """
INVITE sip:110@pbx.example SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKuac1
Max-Forwards: 70
From: "12345 Hotline" <sip:12345@bridge.example>;tag=ourtag
To: <sip:110@pbx.example>
Call-ID: dlg-1@bridge.example
CSeq: 10 INVITE
Contact: <sip:bridge@10.0.0.1:5060>
"""


def answer(status: int = 200, *, tag: str = "theirtag", rr: str = "", contact: str = "") -> str:
    lines = [
        f"SIP/2.0 {status} Whatever",
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKuac1",
    ]
    if rr:
        lines.append(f"Record-Route: {rr}")
    lines += [
        'From: "12345 Hotline" <sip:12345@bridge.example>;tag=ourtag',
        f"To: <sip:110@pbx.example>;tag={tag}",
        "Call-ID: dlg-1@bridge.example",
        "CSeq: 10 INVITE",
        f"Contact: {contact or '<sip:110@10.0.0.9:5070;transport=udp>'}",
    ]
    return "\n".join(lines)


# An INVITE we receive as the UAS, through two record-routing proxies.
THEIR_INVITE = """
INVITE sip:12345@bridge.example SIP/2.0
Via: SIP/2.0/UDP p1.example;branch=z9hG4bKp1
Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKcaller
Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>
Max-Forwards: 69
From: "Caller" <sip:13800000000@carrier.example>;tag=remote1
To: <sip:12345@bridge.example>
Call-ID: in-7@carrier.example
CSeq: 314 INVITE
Contact: <sip:13800000000@192.0.2.7:5062>
"""


def in_dialog(method: str, cseq: int, *, contact: str = "", from_tag: str = "remote1") -> Request:
    lines = [
        f"{method} sip:12345@10.0.0.1:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKx" + str(cseq) + method,
        f'From: "Caller" <sip:13800000000@carrier.example>;tag={from_tag}',
        "To: <sip:12345@bridge.example>;tag=bridgetag",
        "Call-ID: in-7@carrier.example",
        f"CSeq: {cseq} {method}",
    ]
    if contact:
        lines.append(f"Contact: {contact}")
    return parse_request("\n".join(lines))


def state(dialog: Dialog) -> DialogState:
    """Read through a call so mypy does not narrow the state across mutating calls."""
    return dialog.state


def uac_dialog(rr: str = "<sip:p2.example;lr>, <sip:p1.example;lr>") -> Dialog:
    return Dialog.uac(parse_request(OUR_INVITE), parse_response(answer(rr=rr)))


# --------------------------------------------------------------------------- UAC


def test_uac_dialog_state_from_invite_and_2xx() -> None:
    dialog = uac_dialog()
    assert dialog.dialog_id == ("dlg-1@bridge.example", "ourtag", "theirtag")
    assert str(dialog.remote_target) == "sip:110@10.0.0.9:5070;transport=udp"
    assert [str(r) for r in dialog.route_set] == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert dialog.local_cseq == 10
    assert dialog.remote_cseq is None
    assert state(dialog) is DialogState.CONFIRMED
    assert dialog.secure is False
    assert str(dialog.next_hop) == "sip:p1.example;lr"


def test_uac_bye_is_the_golden_loose_routed_request() -> None:
    dialog = uac_dialog()
    bye = dialog.create_request("BYE")
    assert bytes(bye) == wire("""
BYE sip:110@10.0.0.9:5070;transport=udp SIP/2.0
Route: <sip:p1.example;lr>
Route: <sip:p2.example;lr>
Max-Forwards: 70
From: "12345 Hotline" <sip:12345@bridge.example>;tag=ourtag
To: <sip:110@pbx.example>;tag=theirtag
Call-ID: dlg-1@bridge.example
CSeq: 11 BYE
""")
    assert "Via" not in bye.headers
    assert state(dialog) is DialogState.TERMINATED
    with pytest.raises(LocalProtocolError):
        dialog.create_request("INFO")


def test_uac_ack_for_2xx_keeps_the_invite_cseq() -> None:
    dialog = uac_dialog(rr="")
    ack = dialog.create_ack(10, body=b"v=0\r\n", content_type="application/sdp")
    assert bytes(ack) == wire(
        """
ACK sip:110@10.0.0.9:5070;transport=udp SIP/2.0
Max-Forwards: 70
From: "12345 Hotline" <sip:12345@bridge.example>;tag=ourtag
To: <sip:110@pbx.example>;tag=theirtag
Call-ID: dlg-1@bridge.example
CSeq: 10 ACK
Content-Type: application/sdp
""",
        b"v=0\r\n",
    )
    assert dialog.local_cseq == 10
    assert dialog.create_request("INFO").cseq.seq == 11


def test_uac_dialog_matches_the_id_of_the_response() -> None:
    response = parse_response(answer())
    dialog = Dialog.uac(parse_request(OUR_INVITE), response)
    assert dialog.dialog_id == dialog_id_of(response, as_uas=False)


def test_a_response_without_to_tag_creates_no_dialog() -> None:
    no_tag = answer(180).replace(";tag=theirtag", "")
    with pytest.raises(RemoteProtocolError):
        Dialog.uac(parse_request(OUR_INVITE), parse_response(no_tag))
    with pytest.raises(LocalProtocolError):
        Dialog.uac(parse_request(OUR_INVITE), parse_response(answer(486)))


def test_sips_request_uri_makes_a_secure_dialog() -> None:
    invite = parse_request(OUR_INVITE.replace("INVITE sip:110", "INVITE sips:110"))
    assert Dialog.uac(invite, parse_response(answer())).secure is True


# --------------------------------------------------------------------------- early dialogs


def test_early_dialog_confirmed_by_2xx_recomputes_the_route_set() -> None:
    invite = parse_request(OUR_INVITE)
    early = Dialog.uac(invite, parse_response(answer(183, rr="<sip:early.example;lr>")))
    assert state(early) is DialogState.EARLY
    assert [str(r) for r in early.route_set] == ["<sip:early.example;lr>"]
    # A 2xx from another fork does not touch this dialog.
    early.receive_response(parse_response(answer(200, tag="otherfork")))
    assert state(early) is DialogState.EARLY
    early.receive_response(
        parse_response(answer(200, rr="<sip:final.example;lr>", contact="<sip:110@10.0.0.10>"))
    )
    assert state(early) is DialogState.CONFIRMED
    assert [str(r) for r in early.route_set] == ["<sip:final.example;lr>"]
    assert early.remote_target == SipUri.parse("sip:110@10.0.0.10")


def test_provisional_with_contact_refreshes_an_early_target() -> None:
    early = Dialog.uac(parse_request(OUR_INVITE), parse_response(answer(180)))
    early.receive_response(parse_response(answer(183, contact="<sip:110@10.0.0.11>")))
    assert state(early) is DialogState.EARLY
    assert str(early.remote_target) == "sip:110@10.0.0.11"


def test_non2xx_final_ends_an_early_dialog() -> None:
    early = Dialog.uac(parse_request(OUR_INVITE), parse_response(answer(180)))
    early.receive_response(parse_response(answer(486)))
    assert state(early) is DialogState.TERMINATED


def test_uas_early_dialog_follows_the_response_we_sent() -> None:
    invite = parse_request(THEIR_INVITE)
    dialog = Dialog.uas(invite, "bridgetag", early=True)
    assert state(dialog) is DialogState.EARLY
    dialog.response_sent(parse_response(answer(200)))
    assert state(dialog) is DialogState.CONFIRMED
    rejected = Dialog.uas(invite, "bridgetag", early=True)
    rejected.response_sent(parse_response(answer(480)))
    assert state(rejected) is DialogState.TERMINATED


# --------------------------------------------------------------------------- UAS


def test_uas_dialog_state_and_golden_bye() -> None:
    invite = parse_request(THEIR_INVITE)
    dialog = Dialog.uas(invite, "bridgetag")
    assert dialog.dialog_id == ("in-7@carrier.example", "bridgetag", "remote1")
    assert [str(r) for r in dialog.route_set] == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert dialog.remote_cseq == 314
    assert str(dialog.remote_target) == "sip:13800000000@192.0.2.7:5062"
    bye = dialog.create_request("BYE", headers=[("Reason", 'Q.850;cause=16;text="done"')])
    assert bytes(bye) == wire("""
BYE sip:13800000000@192.0.2.7:5062 SIP/2.0
Route: <sip:p1.example;lr>
Route: <sip:p2.example;lr>
Max-Forwards: 70
From: <sip:12345@bridge.example>;tag=bridgetag
To: "Caller" <sip:13800000000@carrier.example>;tag=remote1
Call-ID: in-7@carrier.example
CSeq: 1 BYE
Reason: Q.850;cause=16;text="done"
""")


def test_uas_dialog_matches_in_dialog_requests_by_id() -> None:
    dialog = Dialog.uas(parse_request(THEIR_INVITE), "bridgetag")
    assert dialog_id_of(in_dialog("BYE", 315), as_uas=True) == dialog.dialog_id


# --------------------------------------------------------------------------- strict routing


def test_strict_router_gets_the_request_uri_and_the_target_goes_last() -> None:
    dialog = uac_dialog(rr="<sip:p2.example;lr>, <sip:strict.example;method=INVITE>")
    info = dialog.create_request("INFO", body=b"Signal=5\r\n", content_type="application/dtmf")
    assert bytes(info) == wire(
        """
INFO sip:strict.example SIP/2.0
Route: <sip:p2.example;lr>
Route: <sip:110@10.0.0.9:5070;transport=udp>
Max-Forwards: 70
From: "12345 Hotline" <sip:12345@bridge.example>;tag=ourtag
To: <sip:110@pbx.example>;tag=theirtag
Call-ID: dlg-1@bridge.example
CSeq: 11 INFO
Content-Type: application/dtmf
""",
        b"Signal=5\r\n",
    )


def test_without_route_set_the_request_goes_to_the_remote_target() -> None:
    dialog = uac_dialog(rr="")
    request = dialog.create_request("OPTIONS")
    assert str(request.uri) == "sip:110@10.0.0.9:5070;transport=udp"
    assert request.headers.get_all("Route") == []
    assert dialog.next_hop == dialog.remote_target


# --------------------------------------------------------------------------- CSeq order


def test_remote_cseq_must_not_go_backwards() -> None:
    dialog = Dialog.uas(parse_request(THEIR_INVITE), "bridgetag")
    dialog.receive_request(in_dialog("INFO", 320))
    assert dialog.remote_cseq == 320
    with pytest.raises(RemoteProtocolError) as info:
        dialog.receive_request(in_dialog("INFO", 319))
    assert info.value.status == 500
    assert dialog.remote_cseq == 320
    dialog.receive_request(in_dialog("ACK", 314))  # the ACK keeps the INVITE's number
    assert dialog.remote_cseq == 320


def test_first_remote_request_sets_the_uac_remote_cseq() -> None:
    dialog = uac_dialog()
    bye = parse_request("""
BYE sip:bridge@10.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKbye
From: <sip:110@pbx.example>;tag=theirtag
To: "12345 Hotline" <sip:12345@bridge.example>;tag=ourtag
Call-ID: dlg-1@bridge.example
CSeq: 1 BYE
""")
    dialog.receive_request(bye)
    assert dialog.remote_cseq == 1
    assert state(dialog) is DialogState.TERMINATED


def test_request_of_another_dialog_or_a_finished_one_is_481() -> None:
    dialog = Dialog.uas(parse_request(THEIR_INVITE), "bridgetag")
    with pytest.raises(RemoteProtocolError) as wrong:
        dialog.receive_request(in_dialog("INFO", 400, from_tag="stranger"))
    assert wrong.value.status == 481
    dialog.receive_request(in_dialog("BYE", 401))
    with pytest.raises(RemoteProtocolError) as late:
        dialog.receive_request(in_dialog("INFO", 402))
    assert late.value.status == 481


# --------------------------------------------------------------------------- target refresh


def test_reinvite_and_update_refresh_the_target_other_requests_do_not() -> None:
    dialog = Dialog.uas(parse_request(THEIR_INVITE), "bridgetag")
    dialog.receive_request(in_dialog("INFO", 315, contact="<sip:ignored@192.0.2.99>"))
    assert str(dialog.remote_target) == "sip:13800000000@192.0.2.7:5062"
    dialog.receive_request(in_dialog("INVITE", 316, contact="<sip:13800000000@192.0.2.8:5064>"))
    assert str(dialog.remote_target) == "sip:13800000000@192.0.2.8:5064"
    dialog.receive_request(in_dialog("UPDATE", 317, contact="<sip:13800000000@192.0.2.9>"))
    assert str(dialog.remote_target) == "sip:13800000000@192.0.2.9"


def test_2xx_to_our_reinvite_refreshes_the_target() -> None:
    dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE")
    assert reinvite.cseq.seq == 11

    def response(status: int, method: str, contact: str) -> Response:
        text = answer(status, contact=contact).replace("CSeq: 10 INVITE", f"CSeq: 11 {method}")
        return parse_response(text)

    dialog.receive_response(response(200, "INVITE", "<sip:110@10.0.0.20>"))
    assert str(dialog.remote_target) == "sip:110@10.0.0.20"
    dialog.receive_response(response(200, "INFO", "<sip:110@10.0.0.21>"))
    assert str(dialog.remote_target) == "sip:110@10.0.0.20"
    dialog.receive_response(response(491, "INVITE", "<sip:110@10.0.0.22>"))
    assert str(dialog.remote_target) == "sip:110@10.0.0.20"
    assert state(dialog) is DialogState.CONFIRMED


@pytest.mark.parametrize("status", [408, 481])
def test_408_or_481_inside_the_dialog_ends_it(status: int) -> None:
    dialog = uac_dialog()
    dialog.create_request("INFO")
    text = answer(status).replace("CSeq: 10 INVITE", "CSeq: 11 INFO")
    dialog.receive_response(parse_response(text))
    assert state(dialog) is DialogState.TERMINATED


def test_ack_built_through_create_request_does_not_consume_a_cseq() -> None:
    dialog = uac_dialog()
    assert dialog.create_request("ACK").cseq.seq == 10
    assert dialog.create_request("INFO").cseq.seq == 11
