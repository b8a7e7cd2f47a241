"""Transaction layer (RFC 3261 §17, RFC 6026) driven by a fake clock: times are plain floats."""

from __future__ import annotations

import contextlib
import gc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sip.errors import LocalProtocolError
from bridge.sip.message import Request, Response, make_response, parse_message
from bridge.sip.transaction import (
    AckTimeout,
    Address,
    ClientTimeout,
    ClientTransportError,
    Event,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    ServerTimeout,
    ServerTransportError,
    State,
    TransactionLayer,
    build_cancel,
    build_non2xx_ack,
    new_branch,
)

PEER: Address = ("192.0.2.7", 5062)
TRUNK: Address = ("198.51.100.9", 5060)


def request_text(
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bKabc1",
    via_host: str = "192.0.2.7:5062",
    via_params: str = "",
    transport: str = "UDP",
    cseq: int = 1,
    to_tag: str | None = None,
    call_id: str = "call-1@192.0.2.7",
    routes: tuple[str, ...] = (),
    body: bytes = b"",
) -> bytes:
    to = "<sip:110@bridge.example>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:110@bridge.example SIP/2.0",
        f"Via: SIP/2.0/{transport} {via_host};branch={branch}{via_params}",
        *(f"Route: {r}" for r in routes),
        "Max-Forwards: 70",
        'From: "Caller" <sip:12345@192.0.2.7>;tag=from1',
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:12345@192.0.2.7:5062>",
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def request(method: str = "INVITE", **kw: object) -> Request:
    message = parse_message(request_text(method, **kw))  # type: ignore[arg-type]
    assert isinstance(message, Request)
    return message


def respond(req: Request, status: int, to_tag: str | None = "totag1") -> Response:
    """A response as the far end would send it, re-parsed so it is a wire message."""
    message = parse_message(bytes(make_response(req, status, to_tag=to_tag)))
    assert isinstance(message, Response)
    return message


def new_server_tx(
    layer: TransactionLayer, req: Request, source: Address = PEER, now: float = 0.0
) -> str:
    """Feed a new request and return the key of the server transaction it opened."""
    [event] = layer.receive(req, source, req.top_via.transport, now)
    assert isinstance(event, RequestReceived)
    assert event.request is req
    assert event.source == source
    assert event.server_key is not None
    return event.server_key


def sent(layer: TransactionLayer) -> list[Request | Response]:
    out: list[Request | Response] = []
    for item in layer.take_outgoing():
        out.append(parse_message(item.data))
    return out


def run_timers(
    layer: TransactionLayer, until: float
) -> list[tuple[float, list[Event], list[Outgoing]]]:
    """Advance the fake clock deadline by deadline, recording what each firing produced."""
    log = []
    while (deadline := layer.next_deadline()) is not None and deadline <= until:
        events = layer.handle_timers(deadline)
        log.append((deadline, events, layer.take_outgoing()))
    return log


def send_times(log: list[tuple[float, list[Event], list[Outgoing]]]) -> list[float]:
    return [t for t, _, out in log for _ in out]


# --------------------------------------------------------------------------- client INVITE


def test_timer_a_doubles_and_timer_b_times_out_over_udp() -> None:
    layer = TransactionLayer()
    invite = request(branch="z9hG4bKa1")
    key = layer.send_request(invite, TRUNK, "UDP", now=0.0)
    first = layer.take_outgoing()
    assert [o.destination for o in first] == [TRUNK]
    log = run_timers(layer, 100.0)
    assert send_times(log) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(o.data == first[0].data for _, _, out in log for o in out)
    timeouts = [(t, e) for t, events, _ in log for e in events]
    assert timeouts == [(32.0, ClientTimeout(client_key=key, request=invite))]
    assert len(layer) == 0


def test_timer_a_is_off_over_tcp_but_timer_b_still_fires() -> None:
    layer = TransactionLayer()
    key = layer.send_request(request(transport="TCP"), TRUNK, "TCP", now=10.0)
    assert len(layer.take_outgoing()) == 1
    log = run_timers(layer, 100.0)
    assert send_times(log) == []
    assert [(t, type(e)) for t, events, _ in log for e in events] == [(42.0, ClientTimeout)]
    assert layer.state_of(key) is None


def test_provisional_stops_retransmission_and_is_passed_up() -> None:
    layer = TransactionLayer()
    invite = request()
    key = layer.send_request(invite, TRUNK, "UDP", now=0.0)
    layer.take_outgoing()
    ringing = respond(invite, 180)
    assert layer.receive(ringing, TRUNK, "UDP", now=0.3) == [
        ResponseReceived(response=ringing, client_key=key)
    ]
    assert layer.state_of(key) is State.PROCEEDING
    assert run_timers(layer, 1000.0) == []
    assert len(layer) == 1  # Proceeding has no timer of its own (§17.1.1.2)


def test_non2xx_final_is_acked_by_the_layer_with_the_rfc_headers() -> None:
    layer = TransactionLayer()
    invite = request(routes=("<sip:proxy.example;lr>", "<sip:edge.example;lr>"))
    key = layer.send_request(invite, TRUNK, "UDP", now=0.0)
    layer.take_outgoing()
    busy = respond(invite, 486, to_tag="busy7")
    assert layer.receive(busy, TRUNK, "UDP", now=0.2) == [
        ResponseReceived(response=busy, client_key=key)
    ]
    [ack] = sent(layer)
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.headers.get_all("Via") == invite.headers.get_all("Via")[:1]
    assert ack.headers.get_all("Route") == ["<sip:proxy.example;lr>", "<sip:edge.example;lr>"]
    assert ack.to.tag == "busy7"
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.call_id == invite.call_id
    assert str(ack.cseq) == "1 ACK"
    assert ack.body == b""
    # A retransmitted final is ACKed again but not passed up.
    assert layer.receive(busy, TRUNK, "UDP", now=1.0) == []
    assert [m.method for m in sent(layer) if isinstance(m, Request)] == ["ACK"]
    assert layer.state_of(key) is State.COMPLETED
    log = run_timers(layer, 100.0)
    assert [t for t, _, _ in log] == [32.2]  # Timer D
    assert len(layer) == 0


def test_non2xx_final_over_tcp_terminates_at_once() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    layer.send_request(invite, TRUNK, "TCP", now=0.0)
    layer.take_outgoing()
    layer.receive(respond(invite, 404), TRUNK, "TCP", now=0.1)
    assert [m.method for m in sent(layer) if isinstance(m, Request)] == ["ACK"]
    assert len(layer) == 0


def test_build_non2xx_ack_matches_the_golden_message() -> None:
    invite = request(branch="z9hG4bKgold", routes=("<sip:p.example;lr>",))
    ack = build_non2xx_ack(invite, respond(invite, 603, to_tag="dec"))
    assert bytes(ack) == (
        b"ACK sip:110@bridge.example SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKgold\r\n"
        b"Route: <sip:p.example;lr>\r\n"
        b"Max-Forwards: 70\r\n"
        b'From: "Caller" <sip:12345@192.0.2.7>;tag=from1\r\n'
        b"To: <sip:110@bridge.example>;tag=dec\r\n"
        b"Call-ID: call-1@192.0.2.7\r\n"
        b"CSeq: 1 ACK\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_2xx_moves_to_accepted_and_retransmissions_are_reacked() -> None:
    layer = TransactionLayer()
    invite = request()
    key = layer.send_request(invite, TRUNK, "UDP", now=0.0)
    layer.take_outgoing()
    ok = respond(invite, 200, to_tag="ok1")
    assert layer.receive(ok, TRUNK, "UDP", now=0.1) == [
        ResponseReceived(response=ok, client_key=key)
    ]
    assert layer.state_of(key) is State.ACCEPTED
    assert layer.take_outgoing() == []  # the TU builds the 2xx ACK (§13.2.2.4)
    # Retransmitted before the TU ACKed: absorbed, not passed up twice.
    assert layer.receive(ok, TRUNK, "UDP", now=0.2) == []
    ack = request("ACK", branch=new_branch(), to_tag="ok1")
    layer.send_ack(key, ack, TRUNK, "UDP")
    assert [o.data for o in layer.take_outgoing()] == [bytes(ack)]
    for now in (0.6, 1.6, 3.6):
        assert layer.receive(ok, TRUNK, "UDP", now=now) == []
        assert [o.data for o in layer.take_outgoing()] == [bytes(ack)]
    # A 2xx from another fork (new To tag) is a new dialog: the TU must see it.
    other = respond(invite, 200, to_tag="fork2")
    assert layer.receive(other, TRUNK, "UDP", now=4.0) == [
        ResponseReceived(response=other, client_key=key)
    ]
    log = run_timers(layer, 100.0)
    assert [t for t, _, _ in log] == [32.1]  # Timer M = 64*T1
    assert len(layer) == 0
    # After Timer M a retransmitted 2xx reaches the TU without a transaction: it re-ACKs.
    assert layer.receive(ok, TRUNK, "UDP", now=40.0) == [
        ResponseReceived(response=ok, client_key=None)
    ]
    layer.send_ack(None, ack, TRUNK, "UDP")
    assert len(layer.take_outgoing()) == 1


def test_unmatched_responses_other_than_invite_2xx_are_dropped() -> None:
    layer = TransactionLayer()
    invite = request()
    assert layer.receive(respond(invite, 486), TRUNK, "UDP", now=0.0) == []
    assert layer.receive(respond(request("BYE"), 200), TRUNK, "UDP", now=0.0) == []
    assert layer.take_outgoing() == []


# --------------------------------------------------------------------------- CANCEL, client side


def test_build_cancel_copies_what_9_1_requires() -> None:
    invite = request(branch="z9hG4bKcan", routes=("<sip:p.example;lr>",), cseq=7, body=b"v=0\r\n")
    cancel = build_cancel(invite)
    assert bytes(cancel) == (
        b"CANCEL sip:110@bridge.example SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKcan\r\n"
        b"Route: <sip:p.example;lr>\r\n"
        b"Max-Forwards: 70\r\n"
        b'From: "Caller" <sip:12345@192.0.2.7>;tag=from1\r\n'
        b"To: <sip:110@bridge.example>\r\n"
        b"Call-ID: call-1@192.0.2.7\r\n"
        b"CSeq: 7 CANCEL\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_cancelled_invite_ends_64_t1_after_the_cancel_even_without_a_final() -> None:
    layer = TransactionLayer()
    invite = request()
    invite_key = layer.send_request(invite, TRUNK, "UDP", now=0.0)
    layer.receive(respond(invite, 180), TRUNK, "UDP", now=0.1)
    cancel_key = layer.send_request(build_cancel(invite), TRUNK, "UDP", now=5.0)
    assert cancel_key != invite_key
    layer.take_outgoing()
    cancel_ok = respond(build_cancel(invite), 200)
    assert layer.receive(cancel_ok, TRUNK, "UDP", now=5.1) == [
        ResponseReceived(response=cancel_ok, client_key=cancel_key)
    ]
    log = run_timers(layer, 100.0)
    timeouts = [(t, e) for t, events, _ in log for e in events]
    assert timeouts == [(37.0, ClientTimeout(client_key=invite_key, request=invite))]
    assert len(layer) == 0


def test_cancelled_invite_completes_normally_on_487() -> None:
    layer = TransactionLayer()
    invite = request()
    invite_key = layer.send_request(invite, TRUNK, "UDP", now=0.0)
    layer.send_request(build_cancel(invite), TRUNK, "UDP", now=0.05)  # before any 1xx
    layer.receive(respond(invite, 180), TRUNK, "UDP", now=0.1)
    layer.take_outgoing()
    terminated = respond(invite, 487)
    events = layer.receive(terminated, TRUNK, "UDP", now=0.2)
    assert events == [ResponseReceived(response=terminated, client_key=invite_key)]
    assert [m.method for m in sent(layer) if isinstance(m, Request)] == ["ACK"]
    assert layer.state_of(invite_key) is State.COMPLETED


def test_invite_cancelled_before_any_provisional_is_guarded_once_proceeding() -> None:
    layer = TransactionLayer()
    invite = request()
    invite_key = layer.send_request(invite, TRUNK, "UDP", now=0.0)
    layer.send_request(build_cancel(invite), TRUNK, "UDP", now=0.1)
    layer.receive(respond(invite, 180), TRUNK, "UDP", now=1.0)  # stops Timer B
    layer.receive(respond(build_cancel(invite), 200), TRUNK, "UDP", now=1.1)
    log = run_timers(layer, 100.0)
    assert [(t, e) for t, events, _ in log for e in events] == [
        (33.0, ClientTimeout(client_key=invite_key, request=invite))
    ]


# --------------------------------------------------------------------------- client non-INVITE


def test_timer_e_caps_at_t2_and_timer_f_times_out() -> None:
    layer = TransactionLayer()
    bye = request("BYE", to_tag="t1")
    key = layer.send_request(bye, TRUNK, "UDP", now=0.0)
    layer.take_outgoing()
    log = run_timers(layer, 100.0)
    assert send_times(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [(t, e) for t, events, _ in log for e in events] == [
        (32.0, ClientTimeout(client_key=key, request=bye))
    ]
    assert len(layer) == 0


def test_timer_e_goes_to_t2_once_proceeding() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    layer.send_request(options, TRUNK, "UDP", now=0.0)
    layer.receive(respond(options, 100), TRUNK, "UDP", now=0.2)
    layer.take_outgoing()
    log = run_timers(layer, 20.0)
    assert send_times(log) == [0.5, 4.5, 8.5, 12.5, 16.5]


def test_timer_e_is_off_over_tcp() -> None:
    layer = TransactionLayer()
    layer.send_request(request("BYE", transport="TCP"), TRUNK, "TCP", now=0.0)
    layer.take_outgoing()
    log = run_timers(layer, 100.0)
    assert send_times(log) == []
    assert [(t, type(e)) for t, events, _ in log for e in events] == [(32.0, ClientTimeout)]


def test_non_invite_final_then_timer_k_absorbing_retransmissions() -> None:
    layer = TransactionLayer()
    bye = request("BYE", to_tag="t1")
    key = layer.send_request(bye, TRUNK, "UDP", now=0.0)
    ok = respond(bye, 200)
    assert layer.receive(ok, TRUNK, "UDP", now=0.1) == [
        ResponseReceived(response=ok, client_key=key)
    ]
    assert layer.receive(ok, TRUNK, "UDP", now=0.6) == []
    layer.take_outgoing()
    log = run_timers(layer, 100.0)
    assert [t for t, _, _ in log] == [5.1]  # Timer K = T4
    assert send_times(log) == []
    assert len(layer) == 0


def test_non_invite_final_over_tcp_terminates_at_once() -> None:
    layer = TransactionLayer()
    bye = request("BYE", transport="TCP")
    layer.send_request(bye, TRUNK, "TCP", now=0.0)
    layer.receive(respond(bye, 481), TRUNK, "TCP", now=0.1)
    assert len(layer) == 0


# --------------------------------------------------------------------------- server INVITE


def test_server_invite_sends_100_after_200ms_and_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    invite = request()
    key = new_server_tx(layer, invite)
    # A retransmission before any response: nothing to re-send, nothing passed up.
    assert layer.receive(request(), PEER, "UDP", now=0.1) == []
    assert layer.take_outgoing() == []
    log = run_timers(layer, 0.5)
    assert [t for t, _, _ in log] == [0.2]
    [trying] = [parse_message(o.data) for o in log[0][2]]
    assert isinstance(trying, Response)
    assert trying.status == 100
    assert trying.to.tag is None
    # Now a retransmission gets the 100 again.
    assert layer.receive(request(), PEER, "UDP", now=0.5) == []
    assert [m.status for m in sent(layer) if isinstance(m, Response)] == [100]
    # The TU's 180 replaces it as the response re-sent for retransmissions.
    layer.send_response(key, make_response(invite, 180, to_tag="me"), now=0.6)
    assert [m.status for m in sent(layer) if isinstance(m, Response)] == [180]
    layer.receive(request(), PEER, "UDP", now=0.7)
    assert [m.status for m in sent(layer) if isinstance(m, Response)] == [180]


def test_server_invite_tu_answer_within_200ms_suppresses_the_automatic_100() -> None:
    layer = TransactionLayer()
    invite = request()
    key = new_server_tx(layer, invite)
    layer.send_response(key, make_response(invite, 100), now=0.01)
    assert len(layer.take_outgoing()) == 1
    assert send_times(run_timers(layer, 1.0)) == []


def test_server_invite_non2xx_timer_g_then_timer_h() -> None:
    layer = TransactionLayer()
    invite = request()
    key = new_server_tx(layer, invite)
    layer.send_response(key, make_response(invite, 486, to_tag="b"), now=0.1)
    [busy] = layer.take_outgoing()
    assert busy.destination == PEER
    log = run_timers(layer, 100.0)
    times = send_times(log)
    assert times == pytest.approx([0.6, 1.6, 3.6, 7.6, 11.6, 15.6, 19.6, 23.6, 27.6, 31.6])
    [(when, timeout)] = [(t, e) for t, events, _ in log for e in events]
    assert when == pytest.approx(32.1)
    assert timeout == ServerTimeout(server_key=key, request=invite)
    assert len(layer) == 0


def test_server_invite_ack_confirms_then_timer_i() -> None:
    layer = TransactionLayer()
    invite = request()
    key = new_server_tx(layer, invite)
    response = make_response(invite, 404, to_tag="nf")
    layer.send_response(key, response, now=0.1)
    layer.take_outgoing()
    ack = parse_message(bytes(build_non2xx_ack(invite, response)))
    assert layer.receive(ack, PEER, "UDP", now=0.3) == []  # absorbed (§17.2.1)
    assert layer.state_of(key) is State.CONFIRMED
    assert layer.receive(ack, PEER, "UDP", now=0.4) == []
    log = run_timers(layer, 100.0)
    assert [t for t, _, _ in log] == [5.3]  # Timer I = T4, no more retransmissions
    assert send_times(log) == []
    assert len(layer) == 0


def test_server_invite_over_tcp_has_no_timer_g_and_ends_on_ack() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    key = new_server_tx(layer, invite)
    response = make_response(invite, 480, to_tag="x")
    layer.send_response(key, response, now=0.0)
    layer.take_outgoing()
    assert run_timers(layer, 10.0) == []
    layer.receive(parse_message(bytes(build_non2xx_ack(invite, response))), PEER, "TCP", now=11.0)
    assert len(layer) == 0


def test_server_invite_over_tcp_timer_h_without_ack() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    key = new_server_tx(layer, invite)
    layer.send_response(key, make_response(invite, 480, to_tag="x"), now=1.0)
    layer.take_outgoing()
    log = run_timers(layer, 100.0)
    assert [(t, type(e)) for t, events, _ in log for e in events] == [(33.0, ServerTimeout)]


def test_2xx_is_retransmitted_until_the_ack_and_the_ack_is_passed_up_once() -> None:
    layer = TransactionLayer()
    invite = request()
    key = new_server_tx(layer, invite)
    ok = make_response(invite, 200, to_tag="uas1")
    layer.send_response(key, ok, now=0.0)
    assert [o.data for o in layer.take_outgoing()] == [bytes(ok)]
    log = run_timers(layer, 4.0)
    assert send_times(log) == [0.5, 1.5, 3.5]
    assert all(o.data == bytes(ok) for _, _, out in log for o in out)
    # The INVITE retransmitted meanwhile is absorbed (RFC 6026 §8.7).
    assert layer.receive(request(), PEER, "UDP", now=3.6) == []
    assert layer.take_outgoing() == []
    ack = request("ACK", branch="z9hG4bKnewack", to_tag="uas1")
    assert layer.receive(ack, PEER, "UDP", now=3.7) == [
        RequestReceived(request=ack, source=PEER, transport="UDP", server_key=None)
    ]
    again = request("ACK", branch="z9hG4bKnewack", to_tag="uas1")
    assert layer.receive(again, PEER, "UDP", now=3.8) == []
    log = run_timers(layer, 100.0)
    assert send_times(log) == []
    assert [t for t, _, _ in log] == [32.0]  # Timer L, silently
    assert [e for _, events, _ in log for e in events] == []
    assert len(layer) == 0


def test_2xx_retransmission_continues_over_tcp_and_ack_timeout_fires() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    key = new_server_tx(layer, invite)
    layer.send_response(key, make_response(invite, 200, to_tag="uas1"), now=0.0)
    layer.take_outgoing()
    log = run_timers(layer, 100.0)
    # §13.3.1.4: end to end, so even over TCP: T1 doubling up to T2 until 64*T1.
    assert send_times(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [(t, e) for t, events, _ in log for e in events] == [
        (32.0, AckTimeout(server_key=key, request=invite))
    ]
    assert len(layer) == 0


def test_ack_with_the_wrong_to_tag_still_stops_2xx_retransmission() -> None:
    """pyVoIP's ACK to a 200 carries a wrong To tag; Call-ID, From tag and CSeq suffice."""
    layer = TransactionLayer()
    invite = request()
    key = new_server_tx(layer, invite)
    layer.send_response(key, make_response(invite, 200, to_tag="uas1"), now=0.0)
    layer.take_outgoing()
    layer.receive(request("ACK", branch="z9hG4bKx", to_tag="bogus"), PEER, "UDP", now=0.2)
    assert send_times(run_timers(layer, 100.0)) == []


def test_stray_ack_is_passed_up_without_a_key() -> None:
    layer = TransactionLayer()
    ack = request("ACK", to_tag="gone")
    assert layer.receive(ack, PEER, "UDP", now=0.0) == [
        RequestReceived(request=ack, source=PEER, transport="UDP", server_key=None)
    ]
    assert len(layer) == 0


# --------------------------------------------------------------------------- server non-INVITE


def test_server_non_invite_retransmissions_and_timer_j() -> None:
    layer = TransactionLayer()
    bye = request("BYE", to_tag="t")
    key = new_server_tx(layer, bye)
    assert layer.receive(request("BYE", to_tag="t"), PEER, "UDP", now=0.5) == []
    assert layer.take_outgoing() == []  # Trying: nothing to re-send yet
    layer.send_response(key, make_response(bye, 200), now=1.0)
    assert len(layer.take_outgoing()) == 1
    assert layer.receive(request("BYE", to_tag="t"), PEER, "UDP", now=1.5) == []
    assert [m.status for m in sent(layer) if isinstance(m, Response)] == [200]
    log = run_timers(layer, 100.0)
    assert [t for t, _, _ in log] == [33.0]  # Timer J = 64*T1
    assert len(layer) == 0


def test_server_non_invite_provisional_is_resent() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    key = new_server_tx(layer, options)
    layer.send_response(key, make_response(options, 100), now=0.0)
    layer.take_outgoing()
    layer.receive(request("OPTIONS"), PEER, "UDP", now=0.1)
    assert [m.status for m in sent(layer) if isinstance(m, Response)] == [100]


def test_server_non_invite_over_tcp_timer_j_is_zero() -> None:
    layer = TransactionLayer()
    bye = request("BYE", transport="TCP")
    key = new_server_tx(layer, bye)
    layer.send_response(key, make_response(bye, 200), now=0.0)
    assert len(layer) == 0


def test_unanswered_non_invite_is_dropped_when_the_client_gave_up() -> None:
    layer = TransactionLayer()
    notify = request("NOTIFY")
    key = new_server_tx(layer, notify)
    log = run_timers(layer, 100.0)
    assert [(t, e) for t, events, _ in log for e in events] == [
        (32.0, ServerTimeout(server_key=key, request=notify))
    ]
    assert layer.send_response(key, make_response(notify, 200), now=40.0) is False
    assert layer.take_outgoing() == []


# --------------------------------------------------------------------------- §18.2 addressing


def test_rport_sends_responses_back_to_the_source_port() -> None:
    layer = TransactionLayer()
    invite = request(via_host="10.0.0.5:5060", via_params=";rport")
    key = new_server_tx(layer, invite, ("203.0.113.4", 40123))
    via = invite.top_via
    assert via.param("received") == "203.0.113.4"
    assert via.param("rport") == "40123"
    response = make_response(invite, 180, to_tag="r")
    assert "received=203.0.113.4" in (response.headers.get("Via") or "")
    layer.send_response(key, response, now=0.0)
    [out] = layer.take_outgoing()
    assert out.destination == ("203.0.113.4", 40123)


def test_received_without_rport_uses_the_via_port() -> None:
    layer = TransactionLayer()
    invite = request(via_host="pbx.example:5070")
    new_server_tx(layer, invite, ("203.0.113.4", 40123))
    assert invite.top_via.param("received") == "203.0.113.4"
    run_timers(layer, 0.2)
    layer.take_outgoing()
    layer.receive(request(via_host="pbx.example:5070"), ("203.0.113.4", 40123), "UDP", now=0.3)
    [out] = layer.take_outgoing()
    assert out.destination == ("203.0.113.4", 5070)


def test_same_host_without_rport_leaves_the_via_alone() -> None:
    layer = TransactionLayer()
    raw = request_text("OPTIONS", via_host="192.0.2.7")
    options = parse_message(raw)
    assert isinstance(options, Request)
    key = new_server_tx(layer, options, ("192.0.2.7", 5060))
    assert bytes(options) == raw
    layer.send_response(key, make_response(options, 200), 0.0)
    assert layer.take_outgoing()[0].destination == ("192.0.2.7", 5060)


def test_tcp_responses_go_back_over_the_connection() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP", via_host="10.9.9.9:5099")
    key = new_server_tx(layer, invite, ("127.0.0.1", 50000))
    layer.send_response(key, make_response(invite, 100), now=0.0)
    [out] = layer.take_outgoing()
    assert (out.destination, out.transport) == (("127.0.0.1", 50000), "TCP")


@pytest.mark.parametrize(
    ("transport", "via_host", "via_params", "fallback"),
    [
        # received stamped (the sent-by host differs), rport ignored: the sent-by port
        ("TCP", "10.9.9.9:5099", ";rport", ("127.0.0.1", 5099)),
        # no received: the sent-by host is the source; no port: the transport's default
        ("TCP", "127.0.0.1", "", ("127.0.0.1", 5060)),
        ("TLS", "phone.example", "", ("127.0.0.1", 5061)),
        ("UDP", "10.9.9.9:5099", ";rport", None),
    ],
)
def test_a_reliable_response_falls_back_to_received_and_the_sent_by_port(
    transport: str, via_host: str, via_params: str, fallback: Address | None
) -> None:
    """§18.2.2: over a reliable transport a response goes over the connection its request
    came on (keyed by the source, the phone's ephemeral port); if that one has closed, a new
    one goes to ``received`` with the sent-by port. Every response of the transaction, a
    retransmitted 2xx too, carries both; what it sends of its own (no requests) carries none."""
    layer = TransactionLayer()
    invite = request(transport=transport, via_host=via_host, via_params=via_params)
    key = new_server_tx(layer, invite, ("127.0.0.1", 50000))
    layer.send_response(key, make_response(invite, 180, to_tag="r"), now=0.0)
    layer.send_response(key, make_response(invite, 200, to_tag="r"), now=0.0)
    outs = layer.take_outgoing()
    outs += [out for _, _, more in run_timers(layer, 0.6) for out in more]
    assert len(outs) == 3
    assert {(out.destination, out.fallback) for out in outs} == {(("127.0.0.1", 50000), fallback)}
    client = request("OPTIONS", branch="z9hG4bKout1", transport=transport)
    layer.send_request(client, TRUNK, transport, now=1.0)
    assert [out.fallback for out in layer.take_outgoing()] == [None]


def test_a_failed_fallback_connect_is_reported_by_the_connection_key() -> None:
    """The transport reports a failed fallback connect for the address the response was keyed
    by, the request's source: that is the one the layer knows the transaction by."""
    layer = TransactionLayer()
    invite = request(transport="TCP", via_host="127.0.0.1:5099")
    key = new_server_tx(layer, invite, ("127.0.0.1", 50000))
    layer.send_response(key, make_response(invite, 180, to_tag="r"), now=0.0)
    assert layer.transport_error(("127.0.0.1", 5099), "TCP", now=0.1) == []
    events = layer.transport_error(("127.0.0.1", 50000), "TCP", now=0.1)
    assert events == [ServerTransportError(server_key=key, request=invite)]


# --------------------------------------------------------------------------- CANCEL, server side


def test_find_invite_server_matches_a_cancel_by_branch_and_sent_by() -> None:
    layer = TransactionLayer()
    invite = request(branch="z9hG4bKinv9")
    invite_key = new_server_tx(layer, invite)
    cancel = parse_message(bytes(build_cancel(request(branch="z9hG4bKinv9"))))
    assert isinstance(cancel, Request)
    [cancel_event] = layer.receive(cancel, PEER, "UDP", now=0.1)
    assert isinstance(cancel_event, RequestReceived)
    assert cancel_event.server_key not in (None, invite_key)
    assert layer.find_invite_server(cancel) == invite_key
    other = parse_message(bytes(build_cancel(request(branch="z9hG4bKother"))))
    assert isinstance(other, Request)
    assert layer.find_invite_server(other) is None
    moved = parse_message(bytes(build_cancel(request(branch="z9hG4bKinv9", via_host="1.2.3.4"))))
    assert isinstance(moved, Request)
    assert layer.find_invite_server(moved) is None


# --------------------------------------------------------------------------- transport errors


def test_transport_error_fails_client_and_server_transactions_to_that_address() -> None:
    layer = TransactionLayer()
    invite = request(branch="z9hG4bKc1")
    client = layer.send_request(invite, TRUNK, "UDP", now=0.0)
    elsewhere = layer.send_request(request("OPTIONS", branch="z9hG4bKc2"), PEER, "UDP", now=0.0)
    bye = request("BYE", branch="z9hG4bKs1", via_host="198.51.100.9:5060")
    server = new_server_tx(layer, bye, TRUNK)
    events = layer.transport_error(TRUNK, "udp", now=1.0)
    assert sorted(map(repr, events)) == sorted(
        map(
            repr,
            [
                ClientTransportError(client_key=client, request=invite),
                ServerTransportError(server_key=server, request=bye),
            ],
        )
    )
    assert layer.state_of(client) is None
    assert layer.state_of(server) is None
    assert layer.state_of(elsewhere) is State.TRYING
    assert layer.send_response(server, make_response(bye, 200), now=1.1) is False
    assert layer.transport_error(TRUNK, "UDP", now=2.0) == []


def test_tcp_connect_failure_ends_an_invite_in_calling_long_before_timer_b() -> None:
    """§17.1.1.2, §18.4: a TCP INVITE has no Timer A and would wait 64*T1 for Timer B; a
    refused connection ends it at once. The error names a transport: the same address over
    UDP is another path, and its transactions go on."""
    layer = TransactionLayer()
    invite = request(branch="z9hG4bKtcp1", transport="TCP")
    over_tcp = layer.send_request(invite, TRUNK, "TCP", now=0.0)
    over_udp = layer.send_request(request("OPTIONS", branch="z9hG4bKudp1"), TRUNK, "UDP", now=0.0)
    layer.take_outgoing()
    events = layer.transport_error(TRUNK, "TCP", now=0.01)
    assert events == [ClientTransportError(client_key=over_tcp, request=invite)]
    assert layer.state_of(over_tcp) is None
    assert layer.state_of(over_udp) is State.TRYING
    assert layer.take_outgoing() == []


# --------------------------------------------------------------------------- misuse


def test_misuse_raises_local_protocol_error() -> None:
    layer = TransactionLayer()
    with pytest.raises(LocalProtocolError):
        layer.send_request(request("ACK"), TRUNK, "UDP", now=0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request(branch="nocookie"), TRUNK, "UDP", now=0.0)
    layer.send_request(request(), TRUNK, "UDP", now=0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request(), TRUNK, "UDP", now=0.0)
    invite = request(branch="z9hG4bKsrv")
    key = new_server_tx(layer, invite)
    layer.send_response(key, make_response(invite, 486, to_tag="b"), now=0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_response(key, make_response(invite, 200, to_tag="b"), now=0.1)


def test_rfc2543_request_without_cookie_still_matches_its_retransmission() -> None:
    layer = TransactionLayer()
    invite = request(branch="old2543")
    new_server_tx(layer, invite)
    assert layer.receive(request(branch="old2543"), PEER, "UDP", now=0.1) == []


def test_new_branch_has_the_magic_cookie_and_is_unique() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith("z9hG4bK") and len(b) > 7 + 8 for b in branches)


# --------------------------------------------------------------------------- what lingers


def _held(layer: TransactionLayer, key: str) -> tuple[list[Request], list[bytes]]:
    """The parsed requests and the datagrams a live transaction still references."""
    tx = layer._transactions[key]
    referents = gc.get_referents(tx)  # a slots object: its attribute values
    requests = [r for r in referents if isinstance(r, Request)]
    datagrams = [o.data for o in referents if isinstance(o, Outgoing)]
    for acks in (r for r in referents if isinstance(r, dict)):
        datagrams += [o.data for o in acks.values() if isinstance(o, Outgoing)]
    return requests, datagrams


def test_lingering_transactions_keep_no_request_only_what_they_resend() -> None:
    """Once a transaction only absorbs retransmissions (Timers D, I, J, K, L, M) it holds no
    parsed request, a client no request bytes and a server only the response it may resend:
    over UDP that is half a minute per transaction of a finished call."""
    layer = TransactionLayer()
    # Server INVITE: 200, then the ACK -> Accepted after the ACK (RFC 6026 §7.1).
    invite = request(branch="z9hG4bKl1", call_id="l1")
    invite_key = new_server_tx(layer, invite)
    ok = make_response(invite, 200, to_tag="u1")
    layer.send_response(invite_key, ok, now=0.0)
    assert _held(layer, invite_key) == ([invite], [bytes(ok)])  # still waiting for the ACK
    ack = request("ACK", branch="z9hG4bKl1ack", call_id="l1", to_tag="u1")
    assert len(layer.receive(ack, PEER, "UDP", now=0.1)) == 1
    assert _held(layer, invite_key) == ([], [])
    again = request("ACK", branch="z9hG4bKl1ack", call_id="l1", to_tag="u1")
    assert layer.receive(again, PEER, "UDP", now=0.2) == []  # still absorbed
    assert layer.receive(request(branch="z9hG4bKl1", call_id="l1"), PEER, "UDP", 0.3) == []
    # Server INVITE: 486, then its ACK -> Confirmed.
    busy_invite = request(branch="z9hG4bKl2", call_id="l2")
    busy_key = new_server_tx(layer, busy_invite)
    busy = make_response(busy_invite, 486, to_tag="u2")
    layer.send_response(busy_key, busy, now=0.0)
    assert _held(layer, busy_key) == ([busy_invite], [bytes(busy)])  # Timer H may report it
    layer.receive(parse_message(bytes(build_non2xx_ack(busy_invite, busy))), PEER, "UDP", 0.1)
    assert layer.state_of(busy_key) is State.CONFIRMED
    assert _held(layer, busy_key) == ([], [])
    # Server non-INVITE: 200 -> Completed keeps the 200 only, and resends it.
    bye = request("BYE", branch="z9hG4bKl3", call_id="l1", to_tag="u1", cseq=2)
    bye_key = new_server_tx(layer, bye)
    bye_ok = make_response(bye, 200)
    layer.send_response(bye_key, bye_ok, now=0.5)
    assert _held(layer, bye_key) == ([], [bytes(bye_ok)])
    retransmitted = request("BYE", branch="z9hG4bKl3", call_id="l1", to_tag="u1", cseq=2)
    layer.take_outgoing()
    assert layer.receive(retransmitted, PEER, "UDP", now=1.0) == []
    assert [o.data for o in layer.take_outgoing()] == [bytes(bye_ok)]
    # Client INVITE: 200 -> Accepted keeps only our ACK, and re-sends it.
    out_invite = request(branch="z9hG4bKl4", call_id="l4")
    out_key = layer.send_request(out_invite, TRUNK, "UDP", now=0.0)
    assert _held(layer, out_key) == ([out_invite], [bytes(out_invite)])
    out_ok = respond(out_invite, 200, to_tag="f4")
    layer.receive(out_ok, TRUNK, "UDP", now=0.1)
    out_ack = request("ACK", branch="z9hG4bKl4ack", call_id="l4", to_tag="f4")
    layer.send_ack(out_key, out_ack, TRUNK, "UDP")
    assert _held(layer, out_key) == ([], [bytes(out_ack)])
    layer.take_outgoing()
    assert layer.receive(out_ok, TRUNK, "UDP", now=0.6) == []
    assert [o.data for o in layer.take_outgoing()] == [bytes(out_ack)]
    # Client non-INVITE: 200 -> Completed keeps nothing but its key and Timer K.
    out_bye = request("BYE", branch="z9hG4bKl5", call_id="l4", to_tag="f4", cseq=2)
    out_bye_key = layer.send_request(out_bye, TRUNK, "UDP", now=1.0)
    bye_answer = respond(out_bye, 200, to_tag="f4")
    assert len(layer.receive(bye_answer, TRUNK, "UDP", now=1.1)) == 1
    assert _held(layer, out_bye_key) == ([], [])
    assert layer.receive(bye_answer, TRUNK, "UDP", now=1.2) == []
    # Client INVITE: 486 -> Completed keeps the INVITE for ClientTransportError (Figure 5)
    # and the ACK it re-sends, not the INVITE's bytes.
    refused = request(branch="z9hG4bKl6", call_id="l6")
    refused_key = layer.send_request(refused, TRUNK, "UDP", now=0.0)
    layer.take_outgoing()
    layer.receive(respond(refused, 486, to_tag="f6"), TRUNK, "UDP", now=0.1)
    [non2xx_ack] = layer.take_outgoing()
    assert _held(layer, refused_key) == ([refused], [non2xx_ack.data])
    # Nothing changed on the wire or in time: every one ends on its timer, silently.
    log = run_timers(layer, 100.0)
    assert [t for t, _, _ in log] == [5.1, 6.1, 32.0, 32.1, 32.5]  # I, K, L, M and D, J
    assert [e for _, events, _ in log for e in events] == []
    assert send_times(log) == []
    assert len(layer) == 0


def test_transport_errors_after_the_final_response() -> None:
    """A server non-INVITE in Completed has dropped its request, so its ServerTransportError
    carries none; a client INVITE in Completed still reports its INVITE (§17.1.1.2)."""
    layer = TransactionLayer()
    bye = request("BYE", branch="z9hG4bKt1", via_host="198.51.100.9:5060", to_tag="t")
    server = new_server_tx(layer, bye, TRUNK)
    layer.send_response(server, make_response(bye, 200), now=0.0)
    invite = request(branch="z9hG4bKt2")
    client = layer.send_request(invite, TRUNK, "UDP", now=0.0)
    layer.receive(respond(invite, 603), TRUNK, "UDP", now=0.1)
    events = layer.transport_error(TRUNK, "UDP", now=1.0)
    assert sorted(map(repr, events)) == sorted(
        map(
            repr,
            [
                ServerTransportError(server_key=server, request=None),
                ClientTransportError(client_key=client, request=invite),
            ],
        )
    )
    assert len(layer) == 0


# --------------------------------------------------------------------------- scale


def test_ten_thousand_transactions_all_end_and_leave_nothing_behind() -> None:
    layer = TransactionLayer()
    n = 10_000
    server_keys = []
    for i in range(n // 2):
        bye = request("BYE", branch=f"z9hG4bKs{i}", call_id=f"s{i}", to_tag="t")
        server_keys.append((new_server_tx(layer, bye, now=i * 0.001), bye))
    for i in range(n // 2):
        layer.send_request(request(branch=f"z9hG4bKc{i}", call_id=f"c{i}"), TRUNK, "UDP", 0.0)
    assert len(layer) == n
    for key, bye in server_keys:
        layer.send_response(key, make_response(bye, 200), now=6.0)
    layer.take_outgoing()
    now = 6.0
    while (deadline := layer.next_deadline()) is not None:
        now = max(now, deadline)
        layer.handle_timers(now)
        layer.take_outgoing()
    assert len(layer) == 0
    assert now < 100.0
    assert layer.next_deadline() is None


def test_stale_timer_entries_do_not_pile_up() -> None:
    """Each finished transaction leaves a cancelled Timer B entry behind; compaction keeps the
    heap bounded by the live transactions, not by the calls ever made."""
    layer = TransactionLayer()
    for i in range(3000):
        invite = request(branch=f"z9hG4bKq{i}", call_id=f"q{i}", transport="TCP")
        layer.send_request(invite, TRUNK, "TCP", now=0.0)
        layer.receive(respond(invite, 486), TRUNK, "TCP", now=0.0)
        layer.take_outgoing()
    assert len(layer) == 0
    assert len(layer._heap) <= 1025


def test_cancelled_timers_of_lingering_transactions_are_compacted_too() -> None:
    """Answered INVITEs linger in Accepted for Timer M with their cancelled Timers A and B
    behind them: the heap holds at most as many dead entries as live ones (plus slack)."""
    layer = TransactionLayer()
    for i in range(3000):
        invite = request(branch=f"z9hG4bKm{i}", call_id=f"m{i}")
        layer.send_request(invite, TRUNK, "UDP", now=0.0)
        layer.receive(respond(invite, 200), TRUNK, "UDP", now=0.1)
        layer.take_outgoing()
    assert len(layer) == 3000
    live = sum(len(tx.timers) for tx in layer._transactions.values())
    assert live == 3000  # Timer M each
    assert len(layer._heap) <= 2 * live + 1025
    assert layer._stale == _stale_entries(layer)


def test_only_the_top_via_is_stamped() -> None:
    layer = TransactionLayer()
    raw = request_text("OPTIONS", via_host="10.0.0.5", via_params=";rport").replace(
        b"\r\nMax-Forwards", b"\r\nVia: SIP/2.0/UDP 10.0.0.99;branch=z9hG4bKlower\r\nMax-Forwards"
    )
    options = parse_message(raw)
    assert isinstance(options, Request)
    new_server_tx(layer, options, ("203.0.113.4", 40000))
    top, lower = options.headers.get_all("Via")
    assert top.endswith(";received=203.0.113.4;rport=40000")
    assert lower == "SIP/2.0/UDP 10.0.0.99;branch=z9hG4bKlower"


# --------------------------------------------------------------------------- no leaks

_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["response", "retransmit", "answer", "ack", "cancel", "tick", "error"]),
        st.integers(min_value=0, max_value=5),
        st.sampled_from([100, 180, 200, 200, 486]),
    ),
    min_size=3,
    max_size=30,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(steps=_STEPS, tcp=st.booleans())
def test_every_transaction_ends_once_calls_are_settled(
    steps: list[tuple[str, int, int]], tcp: bool
) -> None:
    """Random interleavings of wire input, TU answers, time and transport errors: once every
    INVITE gets some final answer, running the timers out leaves no transaction behind."""
    transport = "TCP" if tcp else "UDP"
    layer = TransactionLayer()
    now = 0.0
    out_invites = [
        request(branch=f"z9hG4bKo{i}", call_id=f"o{i}", transport=transport) for i in range(2)
    ]
    out_keys = [layer.send_request(r, TRUNK, transport, now) for r in out_invites]
    out_bye = request("BYE", branch="z9hG4bKob", transport=transport)
    layer.send_request(out_bye, TRUNK, transport, now)
    in_requests = [
        request("INVITE", branch="z9hG4bKi0", call_id="i0", transport=transport),
        request("OPTIONS", branch="z9hG4bKi1", call_id="i1", transport=transport),
    ]
    in_keys = [new_server_tx(layer, r) for r in in_requests]
    for kind, index, status in steps:
        now += 0.3
        which = index % 2
        if kind == "response":
            answered = out_bye if index >= 4 else out_invites[which]
            layer.receive(respond(answered, status), TRUNK, transport, now)
        elif kind == "retransmit":
            layer.receive(_retransmission(which, transport), PEER, transport, now)
        elif kind == "answer" and layer.state_of(in_keys[which]) in (
            State.TRYING,
            State.PROCEEDING,
        ):
            layer.send_response(
                in_keys[which], make_response(in_requests[which], status, to_tag="u"), now
            )
        elif kind == "ack":
            # Even: the hop-by-hop ACK of a non-2xx (INVITE's branch); odd: a 2xx ACK.
            branch = "z9hG4bKi0" if index % 2 == 0 else f"z9hG4bKack{index}"
            ack = request("ACK", branch=branch, call_id="i0", to_tag="u", transport=transport)
            layer.receive(ack, PEER, transport, now)
        elif kind == "cancel" and layer.state_of(out_keys[which]) is not None:
            with contextlib.suppress(LocalProtocolError):  # a second CANCEL reuses the branch
                layer.send_request(build_cancel(out_invites[which]), TRUNK, transport, now)
        elif kind == "tick":
            now += index * 7.0
            layer.handle_timers(now)
        elif kind == "error" and index >= 4:
            layer.transport_error(TRUNK if index == 5 else PEER, transport, now)
        layer.take_outgoing()
        assert layer._stale == _stale_entries(layer)
    # Settle: every INVITE still waiting for a final answer gets one.
    for invite, key in zip(out_invites, out_keys, strict=True):
        if layer.state_of(key) in (State.CALLING, State.PROCEEDING):
            layer.receive(respond(invite, 487), TRUNK, transport, now)
    if layer.state_of(in_keys[0]) is State.PROCEEDING:
        layer.send_response(in_keys[0], make_response(in_requests[0], 500, to_tag="u"), now)
    for _ in range(1000):  # bounded: a machine that never ends must fail, not hang
        if (deadline := layer.next_deadline()) is None:
            break
        layer.handle_timers(deadline)
    assert layer.next_deadline() is None
    assert len(layer) == 0
    assert layer._accepted_by_dialog == {}
    assert layer._by_destination == {}
    assert layer._heap == []
    assert layer._stale == 0  # the stale-entry count stayed exact


def _retransmission(which: int, transport: str) -> Request:
    method = "INVITE" if which == 0 else "OPTIONS"
    return request(method, branch=f"z9hG4bKi{which}", call_id=f"i{which}", transport=transport)


def _stale_entries(layer: TransactionLayer) -> int:
    """Heap entries no live timer owns, counted the slow way."""
    live = layer._transactions
    return sum(
        1
        for _, token, key, timer in layer._heap
        if (tx := live.get(key)) is None or tx.timers.get(timer) != token
    )
