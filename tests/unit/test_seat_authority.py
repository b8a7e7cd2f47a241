"""Seat authority: digest-authenticated REGISTER, then the seat's contacts as call destinations.

Driven with a fake clock (`now`) and REGISTERs shaped like those real phones send.
"""

from __future__ import annotations

import pytest

from bridge.config import RegistrarConfig, SeatCredential
from bridge.seats import SeatAuthority
from bridge.sip.digest import Challenge, authorize
from bridge.sip.message import Request, Response, parse_message

T0 = 1000.0
SEAT = "agent1001"
PASSWORD = "seat-secret-1001"
PHONE = ("127.0.0.1", 5382)


def authority(algorithms: tuple[str, ...] = ("SHA-256", "MD5")) -> SeatAuthority:
    config = RegistrarConfig.model_validate(
        {
            "digest_algorithms": list(algorithms),
            "seats": [SeatCredential(user=SEAT, password=PASSWORD)],
        }
    )
    return SeatAuthority(config)


def register(transport: str = "UDP", *, cseq: int = 1, authorization: str | None = None) -> Request:
    contact_params = ";transport=tcp" if transport == "TCP" else ""
    lines = [
        "REGISTER sip:127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:5382;branch=z9hG4bKreg{cseq};rport",
        f"From: <sip:{SEAT}@127.0.0.1>;tag=regtag",
        f"To: <sip:{SEAT}@127.0.0.1>",
        "Call-ID: reg-call",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{SEAT}-0x1@127.0.0.1:5382{contact_params}>;expires=60",
        "Max-Forwards: 70",
    ]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    text = "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n"
    message = parse_message(text.encode(), stream=transport != "UDP")
    assert isinstance(message, Request)
    return message


def answer(challenge_response: Response, password: str, algorithm: str = "MD5") -> str:
    challenges = [
        Challenge.parse(value) for value in challenge_response.headers.get_all("WWW-Authenticate")
    ]
    [challenge] = [c for c in challenges if c.algorithm == algorithm]
    credentials = authorize(
        challenge,
        method="REGISTER",
        uri="sip:127.0.0.1",
        username=SEAT,
        password=password,
        cnonce="0a4f113b",
    )
    return str(credentials)


def registered(seats: SeatAuthority, transport: str = "UDP", password: str = PASSWORD) -> Response:
    challenge = seats.handle_register(register(transport), PHONE, transport, T0)
    assert challenge.status == 401
    request = register(transport, cseq=2, authorization=answer(challenge, password))
    return seats.handle_register(request, PHONE, transport, T0 + 0.1)


def test_register_without_credentials_is_challenged_once_per_algorithm() -> None:
    response = authority().handle_register(register(), PHONE, "UDP", T0)
    assert response.status == 401
    algorithms = [
        Challenge.parse(value).algorithm for value in response.headers.get_all("WWW-Authenticate")
    ]
    assert [str(a) for a in algorithms] == ["SHA-256", "MD5"]


def test_md5_only_challenge_for_phones_that_answer_the_first_one() -> None:
    response = authority(("MD5",)).handle_register(register(), PHONE, "UDP", T0)
    [value] = response.headers.get_all("WWW-Authenticate")
    assert str(Challenge.parse(value).algorithm) == "MD5"


def test_wrong_password_is_challenged_again_and_binds_nothing() -> None:
    seats = authority()
    response = registered(seats, password="not-the-password")
    assert response.status == 401
    assert response.headers.get_all("WWW-Authenticate")
    assert seats.destinations(SEAT, 20, T0 + 1) == []


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_seat_is_rung_over_the_transport_it_registered_on(transport: str) -> None:
    """The transport layer sends over TCP only for "TCP": a seat registered over TCP must not
    be rung over UDP (and our Via must name the transport we really use, RFC 3261 §18.1.1)."""
    seats = authority()
    assert registered(seats, transport).status == 200
    [destination] = seats.destinations(SEAT, 20, T0 + 1)
    assert destination.transport == transport
    assert destination.address == PHONE
    assert destination.uri.user == f"{SEAT}-0x1"
    assert destination.peer == SEAT
