"""The seat registrar, driven with a fake clock and REGISTERs as real phones send them."""

from __future__ import annotations

import pytest

from bridge.sip.errors import LocalProtocolError
from bridge.sip.message import Request, Response, parse_message
from bridge.sip.registrar import BindingAdded, BindingRemoved, Registrar
from bridge.sip.uri import NameAddr

T0 = 1000.0
SEAT_ADDR = ("127.0.0.1", 5382)

# Captured from baresip 1.0.0 (regint=60) on loopback; the Authorization is left in place as
# the registrar ignores it (the caller authenticates first).
BARESIP_REGISTER = (
    b"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5382;branch=z9hG4bK7513cf4f525f0a88;rport\r\n"
    b'Contact: <sip:agent1001-0x557d9d2fc240@127.0.0.1:5382>;expires=60;+sip.instance="<urn:uuid:'
    b'1afd5223-0132-5677-0f57-05ddaa772dc2>"\r\n'
    b"Max-Forwards: 70\r\n"
    b'Authorization: Digest username="agent1001", realm="bridge", nonce="abcMD5", '
    b'uri="sip:127.0.0.1", response="8eaf401d4ff58ff85bced3479ec9c297", cnonce="c406769c74bdd9ce", '
    b"qop=auth, nc=00000001\r\n"
    b"Route: <sip:127.0.0.1:5392;lr>\r\n"
    b"To: <sip:agent1001@127.0.0.1>\r\n"
    b"From: <sip:agent1001@127.0.0.1>;tag=b589eb196270eae9\r\n"
    b"Call-ID: 5df87d952ff28b33\r\n"
    b"CSeq: 47819 REGISTER\r\n"
    b"User-Agent: baresip v1.0.0 (x86_64/linux)\r\n"
    b"Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,REFER\r\n"
    b"Content-Length: 0\r\n\r\n"
)

# pyVoIP 1.6.8's gen_register output: Expires header, transport=UDP in the Contact.
PYVOIP_REGISTER = (
    b"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5402;branch=z9hG4bK206be1e650554ac9b54c07c19;rport\r\n"
    b'From: "agent1002" <sip:agent1002@127.0.0.1>;tag=tagpyv\r\n'
    b'To: "agent1002" <sip:agent1002@127.0.0.1>\r\n'
    b"Call-ID: pyv-1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:agent1002@127.0.0.1:5402;transport=UDP>;+sip.instance="
    b'"<urn:uuid:833EF44B-C99E-42AA-8587-017820A0FA75>"\r\n'
    b"Allow: INVITE, ACK, BYE, CANCEL\r\n"
    b"Max-Forwards: 70\r\n"
    b"Allow-Events: org.3gpp.nwinitdereg\r\n"
    b"User-Agent: pyVoIP 1.6.8\r\n"
    b"Expires: 120\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def register(
    *contacts: str,
    user: str = "agent1001",
    call_id: str = "reg-1",
    cseq: int = 1,
    expires: str | None = None,
) -> Request:
    aor = f"sip:{user}@bridge.example" if user else "sip:bridge.example"
    head = [
        "REGISTER sip:bridge.example SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5382;branch=z9hG4bK" + f"{call_id}{cseq}",
        f"From: <{aor}>;tag=f1",
        f"To: <{aor}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
        *([f"Expires: {expires}"] if expires is not None else []),
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(head) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def handle(
    registrar: Registrar,
    request: Request,
    now: float = T0,
    source: tuple[str, int] = SEAT_ADDR,
    **kwargs: str,
) -> Response:
    return registrar.handle_register(request, source=source, transport="udp", now=now, **kwargs)


def contacts_of(response: Response) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for value in response.headers.get_all("Contact"):
        addr = NameAddr.parse(value)
        out[str(addr.uri)] = addr.param("expires")
    return out


def parsed(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


# --- real phones -----------------------------------------------------------------------------


def test_baresip_registers() -> None:
    registrar = Registrar()
    response = handle(registrar, parsed(BARESIP_REGISTER))
    assert response.status == 200
    assert response.to.tag
    (contact,) = response.headers.get_all("Contact")
    assert contact == (
        "<sip:agent1001-0x557d9d2fc240@127.0.0.1:5382>"
        ';+sip.instance="<urn:uuid:1afd5223-0132-5677-0f57-05ddaa772dc2>";expires=60'
    )
    (binding,) = registrar.lookup("agent1001")
    assert str(binding.contact.uri) == "sip:agent1001-0x557d9d2fc240@127.0.0.1:5382"
    assert binding.instance == "<urn:uuid:1afd5223-0132-5677-0f57-05ddaa772dc2>"
    assert binding.expires_at == T0 + 60
    assert (binding.source, binding.transport) == (SEAT_ADDR, "udp")
    assert not binding.behind_nat
    # the response is itself a valid message the phone will parse
    assert parse_message(bytes(response)).headers.get_all("Contact") == [contact]


def test_pyvoip_registers_with_expires_header() -> None:
    registrar = Registrar()
    response = handle(registrar, parsed(PYVOIP_REGISTER), source=("127.0.0.1", 5402))
    assert response.status == 200
    assert contacts_of(response) == {"sip:agent1002@127.0.0.1:5402;transport=UDP": "120"}
    (binding,) = registrar.lookup("agent1002")
    assert binding.expires_at == T0 + 120
    assert registrar.lookup("agent1001") == []


def test_baresip_restart_replaces_its_old_binding_by_instance() -> None:
    registrar = Registrar()
    handle(registrar, parsed(BARESIP_REGISTER))
    registrar.pop_events()
    restarted = parsed(
        BARESIP_REGISTER.replace(b"0x557d9d2fc240", b"0x5583d1ec1240")
        .replace(b"5df87d952ff28b33", b"c1c27a2163419415")
        .replace(b"47819", b"100")
    )
    assert handle(registrar, restarted, now=T0 + 5).status == 200
    (binding,) = registrar.lookup("agent1001")
    assert binding.contact.uri.user == "agent1001-0x5583d1ec1240"
    removed, added = registrar.pop_events()
    assert isinstance(removed, BindingRemoved)
    assert removed.reason == "replaced"
    assert isinstance(added, BindingAdded)
    assert not added.refreshed


# --- lifecycle with a fake clock -------------------------------------------------------------


def test_register_refresh_expire() -> None:
    registrar = Registrar()
    contact = "<sip:agent1001@192.0.2.10:5060>;expires=60"
    handle(registrar, register(contact, cseq=1))
    assert registrar.next_deadline() == T0 + 60
    (added,) = registrar.pop_events()
    assert isinstance(added, BindingAdded)
    assert not added.refreshed

    response = handle(registrar, register(contact, cseq=2), now=T0 + 50)
    assert contacts_of(response) == {"sip:agent1001@192.0.2.10:5060": "60"}
    assert registrar.next_deadline() == T0 + 110
    (refreshed,) = registrar.pop_events()
    assert isinstance(refreshed, BindingAdded)
    assert refreshed.refreshed
    assert refreshed.binding.registered_at == T0

    assert registrar.expire(T0 + 109) == []
    assert len(registrar.lookup("agent1001", now=T0 + 109)) == 1
    assert registrar.lookup("agent1001", now=T0 + 110) == []  # stale before the sweep
    (gone,) = registrar.expire(T0 + 110)
    assert gone.contact.uri.host == "192.0.2.10"
    assert registrar.lookup("agent1001") == []
    assert registrar.next_deadline() is None
    assert registrar.seats() == []
    (removed,) = registrar.pop_events()
    assert isinstance(removed, BindingRemoved)
    assert removed.reason == "expired"


def test_remaining_expiry_is_reported_on_refresh_of_another_device() -> None:
    registrar = Registrar()
    handle(registrar, register("<sip:a@192.0.2.10>;expires=300", call_id="desk"))
    response = handle(
        registrar, register("<sip:a@192.0.2.11>;expires=600", call_id="soft"), now=T0 + 100
    )
    assert contacts_of(response) == {"sip:a@192.0.2.10": "200", "sip:a@192.0.2.11": "600"}


def test_unregister_one_contact() -> None:
    registrar = Registrar()
    handle(registrar, register("<sip:agent1001@192.0.2.10>", call_id="desk"))
    handle(registrar, register("<sip:agent1001@192.0.2.11>", call_id="soft"))
    response = handle(
        registrar, register("<sip:agent1001@192.0.2.10>;expires=0", call_id="desk", cseq=2)
    )
    assert response.status == 200
    assert list(contacts_of(response)) == ["sip:agent1001@192.0.2.11"]
    assert [b.contact.uri.host for b in registrar.lookup("agent1001")] == ["192.0.2.11"]


def test_unregister_by_expires_header() -> None:
    registrar = Registrar()
    handle(registrar, parsed(PYVOIP_REGISTER))
    gone = PYVOIP_REGISTER.replace(b"Expires: 120", b"Expires: 0").replace(b"CSeq: 1", b"CSeq: 2")
    response = handle(registrar, parsed(gone))
    assert response.status == 200
    assert response.headers.get_all("Contact") == []
    assert registrar.lookup("agent1002") == []


def test_star_removes_every_binding() -> None:
    registrar = Registrar()
    handle(registrar, register("<sip:agent1001@192.0.2.10>", call_id="desk"))
    handle(registrar, register("<sip:agent1001@192.0.2.11>", call_id="soft"))
    handle(registrar, register("<sip:agent1002@192.0.2.12>", user="agent1002", call_id="x"))
    registrar.pop_events()
    response = handle(registrar, register("*", call_id="admin", expires="0"))
    assert response.status == 200
    assert response.headers.get_all("Contact") == []
    assert registrar.lookup("agent1001") == []
    assert len(registrar.lookup("agent1002")) == 1
    events = registrar.pop_events()
    assert len(events) == 2
    assert all(isinstance(e, BindingRemoved) and e.reason == "unregistered" for e in events)


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [(("*",), None), (("*",), "60"), (("*", "<sip:agent1001@192.0.2.10>"), "0")],
)
def test_star_needs_expires_zero_and_no_other_contact(
    contacts: tuple[str, ...], expires: str | None
) -> None:
    registrar = Registrar()
    handle(registrar, register("<sip:agent1001@192.0.2.10>"))
    response = handle(registrar, register(*contacts, cseq=2, expires=expires))
    assert response.status == 400
    assert len(registrar.lookup("agent1001")) == 1


def test_interval_too_brief_changes_nothing() -> None:
    registrar = Registrar(min_expires=60)
    response = handle(
        registrar,
        register(
            "<sip:agent1001@192.0.2.10>;expires=3600", "<sip:agent1001@192.0.2.11>;expires=30"
        ),
    )
    assert response.status == 423
    assert response.reason == "Interval Too Brief"
    assert response.headers.get("Min-Expires") == "60"
    assert registrar.lookup("agent1001") == []
    assert registrar.pop_events() == []


def test_expires_above_maximum_is_cut_and_default_applies() -> None:
    registrar = Registrar(default_expires=1800, max_expires=3600)
    response = handle(
        registrar,
        register("<sip:agent1001@192.0.2.10>;expires=99999999999", "<sip:agent1001@192.0.2.11>"),
    )
    assert contacts_of(response) == {
        "sip:agent1001@192.0.2.10": "3600",
        "sip:agent1001@192.0.2.11": "1800",
    }


def test_contact_param_wins_over_expires_header() -> None:
    registrar = Registrar()
    response = handle(registrar, register("<sip:agent1001@192.0.2.10>;expires=120", expires="600"))
    assert contacts_of(response) == {"sip:agent1001@192.0.2.10": "120"}


# --- ordering (§10.3 step 7) -----------------------------------------------------------------


@pytest.mark.parametrize("late_cseq", [4, 5])
def test_out_of_order_register_in_same_call_id_changes_nothing(late_cseq: int) -> None:
    registrar = Registrar()
    handle(registrar, register("<sip:agent1001@192.0.2.10>;expires=600", cseq=5))
    late = register("<sip:agent1001@192.0.2.10>;expires=0", cseq=late_cseq)
    response = handle(registrar, late, now=T0 + 1)
    assert response.status == 500
    assert response.headers.get("Retry-After") is not None
    (binding,) = registrar.lookup("agent1001")
    assert binding.expires_at == T0 + 600


def test_out_of_order_star_changes_nothing() -> None:
    registrar = Registrar()
    handle(registrar, register("<sip:agent1001@192.0.2.10>", cseq=5))
    response = handle(registrar, register("*", cseq=3, expires="0"))
    assert response.status == 500
    assert len(registrar.lookup("agent1001")) == 1


def test_another_call_id_may_use_any_cseq() -> None:
    registrar = Registrar()
    handle(registrar, register("<sip:agent1001@192.0.2.10>;expires=600", call_id="a", cseq=9))
    response = handle(
        registrar,
        register("<sip:agent1001@192.0.2.10>;expires=300", call_id="b", cseq=1),
        now=T0 + 1,
    )
    assert response.status == 200
    (binding,) = registrar.lookup("agent1001")
    assert (binding.call_id, binding.expires_at) == ("b", T0 + 301)


# --- who and where ---------------------------------------------------------------------------


def test_devices_in_preference_order() -> None:
    registrar = Registrar()
    handle(registrar, register("<sip:a@192.0.2.10>;q=0.5", call_id="1"), now=T0)
    handle(registrar, register("<sip:a@192.0.2.11>", call_id="2"), now=T0 + 1)
    handle(registrar, register("<sip:a@192.0.2.12>;q=0.5", call_id="3"), now=T0 + 2)
    assert [b.contact.uri.host for b in registrar.lookup("agent1001")] == [
        "192.0.2.11",
        "192.0.2.12",
        "192.0.2.10",
    ]


def test_phone_behind_nat_is_reached_at_its_source() -> None:
    registrar = Registrar()
    handle(registrar, register("<sip:agent1001@10.1.2.3:5060>"), source=("203.0.113.7", 40112))
    (binding,) = registrar.lookup("agent1001")
    assert binding.behind_nat
    assert binding.destination == ("203.0.113.7", 40112)
    assert str(binding.contact.uri) == "sip:agent1001@10.1.2.3:5060"


def test_query_without_contact_lists_bindings_and_changes_nothing() -> None:
    registrar = Registrar()
    handle(registrar, register("<sip:agent1001@192.0.2.10>;expires=600"))
    registrar.pop_events()
    response = handle(registrar, register(cseq=2), now=T0 + 100)
    assert response.status == 200
    assert contacts_of(response) == {"sip:agent1001@192.0.2.10": "500"}
    assert registrar.pop_events() == []


def test_authenticated_user_must_own_the_seat() -> None:
    registrar = Registrar()
    request = register("<sip:agent1001@192.0.2.10>")
    assert handle(registrar, request, authenticated_user="agent1002").status == 403
    assert handle(registrar, request, authenticated_user="agent1001").status == 200


def test_too_many_devices() -> None:
    registrar = Registrar(max_bindings=2)
    handle(registrar, register("<sip:a@192.0.2.10>", call_id="1"))
    handle(registrar, register("<sip:a@192.0.2.11>", call_id="2"))
    response = handle(registrar, register("<sip:a@192.0.2.12>", call_id="3"))
    assert response.status == 403
    assert len(registrar.lookup("agent1001")) == 2


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (lambda: register("<sip:x@192.0.2.10>", user=""), 404),
        (lambda: register("<sip:agent1001@192.0.2.10>;expires=soon"), 400),
        (lambda: register("<sip:agent1001@192.0.2.10>", expires="-1"), 400),
        (lambda: register("<sip:agent1001@192.0.2.10"), 400),
    ],
    ids=["no-user", "bad-param", "bad-header", "bad-contact"],
)
def test_bad_registers_get_error_responses(request_: object, status: int) -> None:
    registrar = Registrar()
    assert callable(request_)
    response = handle(registrar, request_())
    assert response.status == status
    assert registrar.lookup("agent1001") == []


def test_to_tag_is_stable_across_retransmissions() -> None:
    registrar = Registrar()
    first = handle(registrar, register("<sip:agent1001@192.0.2.10>"))
    again = Registrar().handle_register(
        register("<sip:agent1001@192.0.2.10>"), source=SEAT_ADDR, transport="udp", now=T0
    )
    assert first.to.tag == again.to.tag


def test_only_register_is_handled() -> None:
    invite = parsed(BARESIP_REGISTER.replace(b"REGISTER", b"INVITE"))
    with pytest.raises(LocalProtocolError):
        Registrar().handle_register(invite, source=SEAT_ADDR, transport="udp", now=T0)


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="min_expires"):
        Registrar(min_expires=600, default_expires=60)
