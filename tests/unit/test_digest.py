"""Digest authentication: published vectors, real peers' answers, and the server's verdicts."""

from __future__ import annotations

import pytest

from bridge.sip.digest import (
    Algorithm,
    Challenge,
    Challenger,
    Credentials,
    Outcome,
    authorize,
    choose_challenge,
    compute_response,
    parse_auth_value,
)
from bridge.sip.errors import RemoteProtocolError

NOW = 1_700_000_000.0
PASSWORDS = {"agent1001": "secret", "agent1002": "s3cret", "Mufasa": "Circle of Life"}


def challenger(**kwargs: object) -> Challenger:
    """Fixed secret and salt make the nonce repeatable, so real peers' answers can be stored."""
    params: dict[str, object] = {"secret": b"\x07" * 32, "salt": lambda n: b"\x01" * n}
    params.update(kwargs)
    return Challenger("bridge", **params)  # type: ignore[arg-type]


# Issued by challenger() at NOW.
NONCE = "AAAAAGVT8QABAQEBAQEBAToWHXQf4IsSlmfLwWqVPgw"


# --- published vectors -----------------------------------------------------------------------

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, '
    'cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_rfc2617_section_3_5_example() -> None:
    challenge = Challenge.parse(RFC2617_CHALLENGE)
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.algorithm is Algorithm.MD5  # absent means MD5
    creds = authorize(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
        nc=1,
    )
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert creds == Credentials.parse(RFC2617_AUTHORIZATION)


# RFC 7616 §3.9.1
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1_example(algorithm: str, response: str) -> None:
    challenge = Challenge.parse(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    creds = authorize(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle of Life",
        cnonce=RFC7616_CNONCE,
    )
    assert creds.response == response
    assert creds.qop == "auth"
    assert creds.nc == 1
    assert creds.opaque == RFC7616_OPAQUE
    assert f"algorithm={algorithm}" in str(creds)
    assert "nc=00000001" in str(creds)


# Computed offline with aiohttp's DigestAuthMiddleware (an independent implementation of
# RFC 7616, including -sess and auth-int) for nonce dcd98b..., user agent1001, password s3cret.
@pytest.mark.parametrize(
    ("algorithm", "method", "uri", "qop", "cnonce", "body", "response"),
    [
        ("MD5", "REGISTER", "/sip:127.0.0.1", "auth", "554cec24d97da6ce", b"",
         "9b9a992df87c73855b50a5999c7d9408"),
        ("MD5-sess", "REGISTER", "/sip:127.0.0.1", "auth", "f95c71a250e10b35", b"",
         "2a9aef330da86be30d769f0494849360"),
        ("SHA-256", "REGISTER", "/sip:127.0.0.1", "auth", "c0a3aa26a6d28d0e", b"",
         "ed5d34e1cbc471d6c544d63863b4f6a4a619a3564a807557648c65e1780c7930"),
        ("SHA-256-sess", "REGISTER", "/sip:127.0.0.1", "auth", "e57c92f705ddb95d", b"",
         "2f4273002eecc7125a2e8f6707ed6b5ad6cac83209ab56223fecaa2356a5ad8a"),
        ("SHA-256", "INVITE", "/sip:110@127.0.0.1", "auth-int", "5c3c5cef91a18012", b"v=0\r\n",
         "12a751488925eb6d0200480efbfc1b05babab68f1d0904ad710ad5bb43ddb9a4"),
    ],
)  # fmt: skip
def test_vectors_from_an_independent_implementation(
    algorithm: str, method: str, uri: str, qop: str, cnonce: str, body: bytes, response: str
) -> None:
    assert (
        compute_response(
            algorithm=Algorithm.parse(algorithm),
            username="agent1001",
            realm="bridge",
            password="s3cret",
            method=method,
            uri=uri,
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop=qop,
            cnonce=cnonce,
            nc=1,
            body=body,
        )
        == response
    )


def test_session_algorithm_needs_a_cnonce() -> None:
    with pytest.raises(RemoteProtocolError):
        compute_response(
            algorithm=Algorithm.MD5_SESS,
            username="u",
            realm="r",
            password="p",
            method="REGISTER",
            uri="sip:r",
            nonce="n",
        )


# --- real peers against our challenges -------------------------------------------------------

# baresip 1.0.0 answering challenger(algorithms=(MD5,)) at NOW, captured on loopback.
BARESIP_AUTHORIZATION = (
    f'Digest username="agent1001", realm="bridge", nonce="{NONCE}", uri="sip:127.0.0.1", '
    'response="5dbb56e5d5bb120ee2825e155634bd96", cnonce="627daf4a17234a3c", qop=auth, '
    "nc=00000001"
)
# pyVoIP 1.6.8's gen_register answering challenger()'s SHA-256 + MD5 pair at NOW: it takes the
# first challenge, computes MD5 anyway, omits qop and adds ;transport=UDP to the uri.
PYVOIP_AUTHORIZATION = (
    f'Digest username="agent1002",realm="bridge",nonce="{NONCE}",'
    'uri="sip:127.0.0.1;transport=UDP",response="7916bc7e1a51b81b54b9b2fa5508bfca",algorithm=MD5'
)


def test_nonce_is_repeatable_for_fixed_secret_and_salt() -> None:
    assert challenger().make_nonce(NOW) == NONCE


def test_baresip_answer_verifies() -> None:
    result = challenger(algorithms=(Algorithm.MD5,)).verify(
        BARESIP_AUTHORIZATION,
        method="REGISTER",
        uri="sip:127.0.0.1",
        password_lookup=PASSWORDS.get,
        now=NOW + 2,
    )
    assert result.ok
    assert result.username == "agent1001"


def test_pyvoip_answer_verifies() -> None:
    result = challenger().verify(
        PYVOIP_AUTHORIZATION,
        method="REGISTER",
        uri="sip:127.0.0.1",
        password_lookup=PASSWORDS.get,
        now=NOW + 2,
    )
    assert result.ok
    assert result.username == "agent1002"


def test_pyvoip_answer_refused_when_rfc2069_is_off() -> None:
    result = challenger(accept_rfc2069=False).verify(
        PYVOIP_AUTHORIZATION,
        method="REGISTER",
        uri="sip:127.0.0.1",
        password_lookup=PASSWORDS.get,
        now=NOW + 2,
    )
    assert result.outcome is Outcome.REJECTED


# --- challenges ------------------------------------------------------------------------------


def test_challenges_offer_sha256_first_then_md5_with_one_nonce() -> None:
    sha, md5 = challenger().challenges(NOW)
    assert (sha.algorithm, md5.algorithm) == (Algorithm.SHA256, Algorithm.MD5)
    assert sha.nonce == md5.nonce == NONCE
    assert str(sha) == f'Digest realm="bridge", nonce="{NONCE}", algorithm=SHA-256, qop="auth"'
    assert not sha.stale


def test_md5_only_challenger_for_legacy_phones() -> None:
    (only,) = challenger(algorithms=(Algorithm.MD5,)).challenges(NOW)
    assert only.algorithm is Algorithm.MD5


def test_stale_challenge_says_so() -> None:
    sha, _ = challenger().challenges(NOW, stale=True)
    assert "stale=TRUE" in str(sha)
    assert Challenge.parse(str(sha)).stale


def test_nonces_differ_per_challenge_with_real_salt() -> None:
    issuer = Challenger("bridge")
    assert issuer.make_nonce(NOW) != issuer.make_nonce(NOW)
    assert issuer.nonce_issued_at(issuer.make_nonce(NOW)) == NOW


# --- verification: client and server together ------------------------------------------------


def answer_from_client(
    issuer: Challenger,
    *,
    algorithm: Algorithm = Algorithm.SHA256,
    password: str = "secret",
    nc: int = 1,
    issued: float = NOW,
    uri: str = "sip:bridge.example",
) -> str:
    for challenge in issuer.challenges(issued):
        if challenge.algorithm is algorithm:
            creds = authorize(
                challenge,
                method="REGISTER",
                uri=uri,
                username="agent1001",
                password=password,
                cnonce="0123abcd",
                nc=nc,
            )
            return str(creds)
    raise AssertionError(f"{algorithm} not offered")


def check(issuer: Challenger, authorization: str, now: float = NOW + 1) -> Outcome:
    return issuer.verify(
        authorization,
        method="REGISTER",
        uri="sip:bridge.example",
        password_lookup=PASSWORDS.get,
        now=now,
    ).outcome


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_client_answer_verifies_for_every_algorithm(algorithm: Algorithm) -> None:
    issuer = challenger(algorithms=tuple(Algorithm))
    assert check(issuer, answer_from_client(issuer, algorithm=algorithm)) is Outcome.OK


def test_wrong_password_is_rejected_not_stale() -> None:
    issuer = challenger()
    assert check(issuer, answer_from_client(issuer, password="guess")) is Outcome.REJECTED


def test_unknown_user_is_rejected() -> None:
    issuer = challenger()
    creds = answer_from_client(issuer).replace('username="agent1001"', 'username="nobody"')
    assert check(issuer, creds) is Outcome.REJECTED


def test_expired_nonce_with_right_password_is_stale() -> None:
    issuer = challenger(nonce_lifetime=300.0)
    answer = answer_from_client(issuer)
    assert check(issuer, answer, now=NOW + 299) is Outcome.OK
    assert check(challenger(nonce_lifetime=300.0), answer, now=NOW + 301) is Outcome.STALE


def test_expired_nonce_with_wrong_password_is_rejected() -> None:
    issuer = challenger()
    answer = answer_from_client(issuer, password="guess")
    assert check(issuer, answer, now=NOW + 10_000) is Outcome.REJECTED


def test_nonce_from_another_secret_is_stale() -> None:
    """After a restart with a new secret, phones re-authenticate without prompting."""
    old = challenger(secret=b"\x08" * 32)
    assert check(challenger(), answer_from_client(old)) is Outcome.STALE


def test_edited_nonce_timestamp_is_not_ours() -> None:
    issuer = challenger()
    assert issuer.nonce_issued_at(NONCE) == NOW
    forged = "AAAAAGVT8QB" + NONCE[11:]  # same MAC, later time
    assert forged != NONCE
    assert issuer.nonce_issued_at(forged) is None
    assert issuer.nonce_issued_at("not base64 at all!") is None


def test_replayed_nonce_count_is_stale() -> None:
    issuer = challenger()
    first = answer_from_client(issuer, nc=1)
    assert check(issuer, first) is Outcome.OK
    assert check(issuer, first) is Outcome.STALE
    assert check(issuer, answer_from_client(issuer, nc=2)) is Outcome.OK
    assert check(issuer, answer_from_client(issuer, nc=2)) is Outcome.STALE
    assert check(issuer, answer_from_client(issuer, nc=5)) is Outcome.OK
    assert check(issuer, answer_from_client(issuer, nc=3)) is Outcome.STALE


def test_rfc2069_answer_serves_once() -> None:
    issuer = challenger()
    creds = PYVOIP_AUTHORIZATION
    assert issuer.verify(
        creds, method="REGISTER", uri="sip:127.0.0.1", password_lookup=PASSWORDS.get, now=NOW
    ).ok
    again = issuer.verify(
        creds, method="REGISTER", uri="sip:127.0.0.1", password_lookup=PASSWORDS.get, now=NOW
    )
    assert again.stale


def test_wrong_realm_is_rejected() -> None:
    other = Challenger("elsewhere", secret=b"\x07" * 32)
    assert check(challenger(), answer_from_client(other)) is Outcome.REJECTED


def test_algorithm_not_offered_is_rejected() -> None:
    everything = challenger(algorithms=tuple(Algorithm))
    md5_only = challenger(algorithms=(Algorithm.MD5,))
    answer = answer_from_client(everything, algorithm=Algorithm.SHA256)
    assert check(md5_only, answer) is Outcome.REJECTED


@pytest.mark.parametrize(
    ("uri", "outcome"),
    [
        ("sip:bridge.example", Outcome.OK),
        ("sip:bridge.example;transport=udp", Outcome.OK),
        ("sip:other.example", Outcome.REJECTED),
        ("sip:agent1001@bridge.example", Outcome.REJECTED),
        ("sip:bridge.example:5070", Outcome.REJECTED),
        ("/dir/index.html", Outcome.REJECTED),
    ],
)
def test_uri_must_name_the_request_uri(uri: str, outcome: Outcome) -> None:
    issuer = challenger()
    assert check(issuer, answer_from_client(issuer, uri=uri)) is outcome


@pytest.mark.parametrize(
    "value",
    [
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        'Digest username="agent1001", realm="bridge"',
        'Digest username="a", realm="bridge", nonce="x", uri="sip:b", response="unterminated',
        'Digest username="agent1001", realm="bridge", nonce="x", uri="sip:b", response="r", nc=1',
        f'Digest username="agent1001", realm="bridge", nonce="{NONCE}", uri="sip:bridge.example", '
        'response="00", qop=auth',
        f'Digest username="agent1001", realm="bridge", nonce="{NONCE}", uri="sip:bridge.example", '
        'response="00", algorithm=SHA-512-256',
        "",
    ],
    ids=["basic", "missing", "unterminated", "short-nc", "qop-no-nc", "unknown-alg", "empty"],
)
def test_malformed_authorization_is_rejected_without_raising(value: str) -> None:
    assert check(challenger(), value) is Outcome.REJECTED


def test_count_tracking_expires_with_the_nonce() -> None:
    issuer = challenger(nonce_lifetime=300.0)
    assert issuer.next_deadline() is None
    assert check(issuer, answer_from_client(issuer)) is Outcome.OK
    assert issuer.next_deadline() == NOW + 300.0
    issuer.expire(NOW + 299)
    assert issuer.next_deadline() == NOW + 300.0
    issuer.expire(NOW + 301)
    assert issuer.next_deadline() is None


def test_count_tracking_is_bounded() -> None:
    counter = iter(range(1_000))
    issuer = Challenger(
        "bridge",
        secret=b"\x07" * 32,
        max_tracked_nonces=3,
        salt=lambda n: next(counter).to_bytes(n),
    )
    first = answer_from_client(issuer)
    assert check(issuer, first) is Outcome.OK
    for _ in range(3):
        assert check(issuer, answer_from_client(issuer)) is Outcome.OK
    # the first nonce was forgotten to make room: bounded memory wins over replay detection
    assert check(issuer, first) is Outcome.OK


# --- header grammar --------------------------------------------------------------------------


def test_parse_auth_value_handles_quotes_commas_and_case() -> None:
    scheme, params = parse_auth_value(
        'Digest  Realm="a, \\"quoted\\" realm" ,nonce=abc,\tQOP="auth,auth-int",stale=true'
    )
    assert scheme == "Digest"
    assert params == {
        "realm": 'a, "quoted" realm',
        "nonce": "abc",
        "qop": "auth,auth-int",
        "stale": "true",
    }


@pytest.mark.parametrize(
    "value",
    ['Digest realm="a", realm="b"', "Digest realm", 'Digest realm="a" nonce="b"', "  "],
)
def test_parse_auth_value_refuses_bad_grammar(value: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_auth_value(value)


def test_challenge_and_credentials_round_trip() -> None:
    challenge = Challenge(
        realm='odd "realm"',
        nonce="n1",
        algorithm=Algorithm.SHA256_SESS,
        qop=("auth", "auth-int"),
        opaque="op",
        stale=True,
        domain="sip:bridge.example",
        other=(("charset", "UTF-8"),),
    )
    assert Challenge.parse(str(challenge)) == challenge
    creds = Credentials.parse(RFC2617_AUTHORIZATION)
    assert Credentials.parse(str(creds)) == creds
    assert creds.nc == 1
    assert creds.cnonce == "0a4f113b"
    assert Credentials.parse(BARESIP_AUTHORIZATION).algorithm is Algorithm.MD5


def test_algorithm_names_are_case_insensitive() -> None:
    assert Algorithm.parse("sha-256-SESS") is Algorithm.SHA256_SESS
    with pytest.raises(RemoteProtocolError):
        Algorithm.parse("SHA-512-256")


# --- choosing what to answer -----------------------------------------------------------------


def test_choose_challenge_takes_the_first_we_support() -> None:
    values = [
        'Basic realm="x"',
        'Digest realm="bridge", nonce="a", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="bridge", nonce="b", algorithm=SHA-256, qop="auth"',
        'Digest realm="bridge", nonce="c", algorithm=MD5, qop="auth"',
    ]
    chosen = choose_challenge(values)
    assert chosen is not None
    assert chosen.nonce == "b"
    md5 = choose_challenge(values, supported=(Algorithm.MD5,))
    assert md5 is not None
    assert md5.nonce == "c"
    assert choose_challenge(values[:2]) is None


def test_choose_challenge_skips_auth_int_only() -> None:
    values = ['Digest realm="r", nonce="a", qop="auth-int"', 'Digest realm="r", nonce="b"']
    chosen = choose_challenge(values)
    assert chosen is not None
    assert chosen.nonce == "b"


def test_authorize_without_qop_uses_rfc2069_form() -> None:
    creds = authorize(
        Challenge.parse('Digest realm="trunk", nonce="abc"'),
        method="INVITE",
        uri="sip:110@trunk.example",
        username="bridge",
        password="pw",
        cnonce="ignored",
    )
    assert (creds.qop, creds.nc, creds.cnonce) == (None, None, None)
    assert "qop" not in str(creds)
