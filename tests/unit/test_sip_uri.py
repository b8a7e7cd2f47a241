"""SIP URIs and name-addr / addr-spec values (RFC 3261 §19.1, §20.10, §25.1)."""

from __future__ import annotations

import pytest

from bridge.sip.errors import RemoteProtocolError
from bridge.sip.uri import NameAddr, SipUri, parse_params, quote_string, unquote_string


def test_plain_uri_parts_and_wire_form() -> None:
    uri = SipUri.parse("sip:alice@Atlanta.Example.com:5070;transport=TCP;lr")
    assert (uri.scheme, uri.user, uri.host, uri.port) == (
        "sip",
        "alice",
        "atlanta.example.com",
        5070,
    )
    assert uri.params == (("transport", "TCP"), ("lr", None))
    assert uri.transport == "tcp"
    assert uri.hostport == ("atlanta.example.com", 5070)
    assert str(uri) == "sip:alice@atlanta.example.com:5070;transport=TCP;lr"


def test_scheme_is_case_insensitive_and_sips_defaults_to_tls() -> None:
    uri = SipUri.parse("SIPS:bob@example.com")
    assert uri.scheme == "sips"
    assert uri.transport == "tls"
    assert uri.hostport == ("example.com", 5061)


def test_user_part_is_unescaped_and_escaped_back() -> None:
    uri = SipUri.parse("sip:I%20have%20spaces@example.net")
    assert uri.user == "I have spaces"
    assert str(uri) == "sip:I%20have%20spaces@example.net"


def test_user_part_may_carry_semicolons_and_question_marks() -> None:
    """§25.1 user-unreserved; RFC 4475 §3.1.1.2 and §3.1.1.9."""
    uri = SipUri.parse("sip:user;par=u%40example.net@example.com;maddr=10.0.0.1")
    assert uri.user == "user;par=u@example.net"
    assert uri.params == (("maddr", "10.0.0.1"),)
    odd = SipUri.parse("sip:a?b;c@example.com")
    assert (odd.user, odd.host, odd.headers) == ("a?b;c", "example.com", ())


def test_password() -> None:
    uri = SipUri.parse("sip:alice:secret%21@example.com")
    assert (uri.user, uri.password) == ("alice", "secret!")
    assert str(uri) == "sip:alice:secret!@example.com"


def test_uri_parameter_names_and_values_are_unescaped_once() -> None:
    uri = SipUri.parse("sip:example.com;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.params == (("lr", None), ("name", "value%41"))
    assert SipUri.parse(str(uri)) == uri


def test_uri_headers_are_unescaped_and_round_trip() -> None:
    text = "sip:bob@example.com?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2&Subject=hi%20there"
    uri = SipUri.parse(text)
    assert uri.headers == (("Replaces", "abc@host;to-tag=1;from-tag=2"), ("Subject", "hi there"))
    assert SipUri.parse(str(uri)) == uri


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::10]", "[2001:db8::10]", None),
        ("sip:alice@[2001:DB8::10]:5070;transport=udp", "[2001:db8::10]", 5070),
        ("sip:[::ffff:192.0.2.1]:5060", "[::ffff:192.0.2.1]", 5060),
        ("sip:192.0.2.1:65535", "192.0.2.1", 65535),
    ],
)
def test_ipv6_and_ipv4_hosts(text: str, host: str, port: int | None) -> None:
    """RFC 5118: IPv6 references stay bracketed so host:port stays unambiguous."""
    uri = SipUri.parse(text)
    assert (uri.host, uri.port) == (host, port)
    assert SipUri.parse(str(uri)) == uri


def test_other_schemes_are_kept_opaque() -> None:
    tel = SipUri.parse("tel:+86-10-12345;phone-context=example.com")
    assert tel.scheme == "tel"
    assert tel.opaque == "+86-10-12345;phone-context=example.com"
    assert str(tel) == "tel:+86-10-12345;phone-context=example.com"
    assert SipUri.parse("nobodyKnowsThisScheme:totallyopaque-content").scheme == (
        "nobodyknowsthisscheme"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "example.com",
        "sip:",
        "sip:@example.com",
        "sip:alice@",
        "sip:alice@exa mple.com",
        "sip:alice@example.com;",
        "sip:alice@example.com;;lr",
        "sip:alice@example.com:0",
        "sip:alice@example.com:65536",
        "sip:alice@example.com:50a",
        "sip:alice@example.com:²",
        "sip:al%ZZice@example.com",
        "sip:al%4@example.com",
        "sip:alice@[2001:db8::1",
        "sip:alice@[2001:db8::1]x",
        "sip:alice@[zz]",
        "sip:alice@<example.com>",
        'sip:"alice"@example.com',
        "sip:alicé@example.com",
        "sip:alice@example.com?",
        "sip:alice@example.com?novalue",
        "1sip:alice@example.com",
    ],
)
def test_malformed_uris_are_remote_errors(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        SipUri.parse(text)


def test_name_addr_with_quoted_display_name() -> None:
    addr = NameAddr.parse('"Alice \\"A\\" Liddell" <sip:alice@example.com;lr>;tag=abc;q=0.5')
    assert addr.display_name == 'Alice "A" Liddell'
    assert addr.uri.params == (("lr", None),)
    assert addr.params == (("tag", "abc"), ("q", "0.5"))
    assert addr.tag == "abc"
    assert str(addr) == '"Alice \\"A\\" Liddell" <sip:alice@example.com;lr>;tag=abc;q=0.5'


def test_name_addr_token_display_name_and_no_space_before_angle() -> None:
    addr = NameAddr.parse("Alice  Liddell<sip:alice@example.com>")
    assert addr.display_name == "Alice Liddell"
    assert NameAddr.parse("caller<sip:caller@example.com>").display_name == "caller"


def test_addr_spec_parameters_belong_to_the_header() -> None:
    """§20.10: without <>, ;params after the URI are header parameters."""
    addr = NameAddr.parse("sip:alice@example.com;tag=xyz;transport=tcp")
    assert addr.uri.params == ()
    assert addr.params == (("tag", "xyz"), ("transport", "tcp"))
    inside = NameAddr.parse("<sip:alice@example.com;transport=tcp>;tag=xyz")
    assert inside.uri.params == (("transport", "tcp"),)
    assert inside.params == (("tag", "xyz"),)


def test_header_parameters_are_kept_verbatim() -> None:
    """Header parameter values are tokens, hosts or quoted strings: '%' is not an escape."""
    addr = NameAddr.parse(
        '<sip:a@example.com>;tag=z9%41;+sip.instance="<urn:uuid:1;x>";received=2001:db8::1'
    )
    assert addr.params == (
        ("tag", "z9%41"),
        ("+sip.instance", '"<urn:uuid:1;x>"'),
        ("received", "2001:db8::1"),
    )
    assert str(addr) == (
        '<sip:a@example.com>;tag=z9%41;+sip.instance="<urn:uuid:1;x>";received=2001:db8::1'
    )


def test_with_tag_replaces_an_existing_tag() -> None:
    addr = NameAddr.parse("<sip:a@example.com>;tag=1;x=y")
    assert addr.with_tag("2").params == (("x", "y"), ("tag", "2"))


def test_control_characters_in_display_names_survive_a_round_trip() -> None:
    """RFC 4475 §3.1.1.2: quoted-pairs of BEL, NUL and DEL."""
    addr = NameAddr.parse('"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:a@example.com>')
    assert addr.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert NameAddr.parse(str(addr)) == addr


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"Mr. J. User <sip:j.user@example.com>',
        "Bell, Alexander <sip:a.g.bell@example.com>",
        "< sip:t.watson@example.org >",
        "<sip:a@example.com",
        "<sip:a@example.com> junk",
        "<sip:a@example.com>;;tag=1",
        "<sip:a@example.com>;tag=1;",
        "<sip:a@example.com>;tag=",
        '<sip:a@example.com>;tag="unterminated',
        "<sip:a@example.com>;ta g=1",
        '"display" sip:a@example.com',
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        "sip:a@example.com, sip:b@example.com",
        '"a" "b" <sip:a@example.com>',
        "Alicé <sip:a@example.com>",
    ],
)
def test_malformed_addresses_are_remote_errors(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        NameAddr.parse(text)


def test_parse_params_unescapes_only_uri_parameters() -> None:
    assert parse_params(";a=%41;B") == (("a", "A"), ("b", None))
    assert parse_params(";a=%41;B", unescape=False) == (("a", "%41"), ("b", None))
    assert parse_params("tag=x", unescape=False) == (("tag", "x"),)
    assert parse_params("", unescape=False) == parse_params("") == ()
    for bad in [";a;;b", ";a=", "a b"]:
        with pytest.raises(RemoteProtocolError):
            parse_params(bad, unescape=False)


def test_quoted_string_helpers() -> None:
    assert unquote_string('"a\\\\b\\"c"') == 'a\\b"c'
    assert quote_string('a\\b"c') == '"a\\\\b\\"c"'
    for bad in ['"abc', 'abc"', '"a"b"', '"a\\"']:
        with pytest.raises(RemoteProtocolError):
            unquote_string(bad)
