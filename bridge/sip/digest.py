"""HTTP Digest authentication as SIP uses it (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

Theory of operation: the server side is :class:`Challenger`. Its nonces carry their own issue
time and an HMAC over it, so any node that shares the secret can check a nonce it never saw and
nothing is stored per challenge (RFC 7616 §5.4 suggests exactly this construction). The one piece
of state is the highest nonce-count seen per nonce, kept only while the nonce is fresh, which is
what turns a replayed Authorization into a fresh challenge (RFC 7616 §3.3). A nonce that is old
or not ours, answered with the right password, earns ``stale=TRUE`` (RFC 2617 §3.2.1) so phones
re-authenticate without asking their user, e.g. after the bridge restarted with a new secret.

The client side is :func:`choose_challenge` plus :func:`authorize`, for trunks that challenge the
bridge. Header values are the same for WWW-/Proxy-Authenticate and Authorization/
Proxy-Authorization; which name and status (401 or 407) to use is the caller's business.

Peers seen on this project shape two choices. baresip 1.0.0 gives up ("Function not
implemented") when *any* challenge names an algorithm other than MD5, so the algorithm list is
configurable. pyVoIP 1.6.8 answers the first challenge with MD5 whatever it asked for, without
qop, and with ``;transport=UDP`` added to the uri; one nonce therefore serves every algorithm we
offer, legacy RFC 2069 answers can be allowed, and the uri check ignores URI parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from bridge.sip.errors import RemoteProtocolError
from bridge.sip.uri import SipUri


class Algorithm(StrEnum):
    """RFC 8760 §2 algorithms. ``-sess`` variants fold the nonces into HA1 (RFC 7616 §3.4.2)."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @classmethod
    def parse(cls, text: str) -> Algorithm:
        for algorithm in cls:
            if algorithm.value.lower() == text.strip().lower():
                return algorithm
        raise RemoteProtocolError(f"unsupported digest algorithm {text!r}")

    @property
    def is_session(self) -> bool:
        return self.value.endswith("-sess")

    def hash(self, data: str | bytes) -> str:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        name = "sha256" if self in (Algorithm.SHA256, Algorithm.SHA256_SESS) else "md5"
        return hashlib.new(name, raw).hexdigest()


# RFC 8760 §2.4: list the strongest first; clients take the first one they support.
DEFAULT_ALGORITHMS: tuple[Algorithm, ...] = (Algorithm.SHA256, Algorithm.MD5)


# --- header values ---------------------------------------------------------------------------

AuthParams = tuple[tuple[str, str], ...]


def parse_auth_value(text: str) -> tuple[str, dict[str, str]]:
    """Split ``Digest a=b, c="d, e"`` into the scheme and its parameters (RFC 2617 §1.2).

    Parameter names are case-insensitive and lower-cased; quoted values are unescaped.
    """
    text = text.strip()
    end = 0
    while end < len(text) and not text[end].isspace():
        end += 1
    scheme, rest = text[:end], text[end:]
    if not scheme:
        raise RemoteProtocolError("empty authentication header")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while True:
        while i < n and (rest[i].isspace() or rest[i] == ","):
            i += 1
        if i >= n:
            return scheme, params
        eq = rest.find("=", i)
        if eq < 0:
            raise RemoteProtocolError(f"auth parameter without value in {text[:80]!r}")
        name = rest[i:eq].strip().lower()
        if not name or any(c.isspace() or c in '",' for c in name):
            raise RemoteProtocolError(f"bad auth parameter name in {text[:80]!r}")
        i = eq + 1
        while i < n and rest[i].isspace():
            i += 1
        if i < n and rest[i] == '"':
            value, i = _read_quoted(rest, i, text)
        else:
            start = i
            while i < n and rest[i] != "," and not rest[i].isspace():
                i += 1
            value = rest[start:i]
        if name in params:
            raise RemoteProtocolError(f"auth parameter {name!r} given twice")
        params[name] = value
        while i < n and rest[i].isspace():
            i += 1
        if i < n and rest[i] != ",":
            raise RemoteProtocolError(f"junk after auth parameter {name!r} in {text[:80]!r}")


def _read_quoted(rest: str, i: int, whole: str) -> tuple[str, int]:
    out: list[str] = []
    i += 1
    while i < len(rest):
        ch = rest[i]
        if ch == "\\" and i + 1 < len(rest):
            out.append(rest[i + 1])
            i += 2
        elif ch == '"':
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise RemoteProtocolError(f"unterminated quoted string in {whole[:80]!r}")


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _require(params: dict[str, str], *names: str) -> None:
    missing = [name for name in names if name not in params]
    if missing:
        raise RemoteProtocolError(f"digest parameters missing: {', '.join(missing)}")


def _digest_params(text: str) -> dict[str, str]:
    scheme, params = parse_auth_value(text)
    if scheme.lower() != "digest":
        raise RemoteProtocolError(f"authentication scheme {scheme!r} is not Digest")
    return params


_CHALLENGE_PARAMS = frozenset({"realm", "nonce", "algorithm", "qop", "opaque", "stale", "domain"})
_CREDENTIAL_PARAMS = frozenset(
    {"username", "realm", "nonce", "uri", "response", "algorithm", "qop", "cnonce", "nc", "opaque"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """A WWW-Authenticate / Proxy-Authenticate value (RFC 3261 §25.1 ``digest-cln``)."""

    realm: str
    nonce: str
    algorithm: Algorithm = Algorithm.MD5
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    other: AuthParams = ()

    @classmethod
    def parse(cls, text: str) -> Challenge:
        params = _digest_params(text)
        _require(params, "realm", "nonce")
        qop = tuple(q.strip() for q in params.get("qop", "").split(",") if q.strip())
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=Algorithm.parse(params.get("algorithm", "MD5")),
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
            domain=params.get("domain"),
            other=tuple((k, v) for k, v in params.items() if k not in _CHALLENGE_PARAMS),
        )

    def __str__(self) -> str:
        parts = [f"realm={quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={quote(self.domain)}")
        parts.append(f"nonce={quote(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        if self.stale:
            parts.append("stale=TRUE")
        parts.append(f"algorithm={self.algorithm.value}")
        if self.qop:
            parts.append(f"qop={quote(','.join(self.qop))}")
        parts.extend(f"{k}={quote(v)}" for k, v in self.other)
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """An Authorization / Proxy-Authorization value (RFC 3261 §25.1 ``digest-response``).

    A missing algorithm means MD5 (RFC 2617 §3.2.1); ``qop`` None is the RFC 2069 form.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: Algorithm = Algorithm.MD5
    qop: str | None = None
    cnonce: str | None = None
    nc: int | None = None
    opaque: str | None = None
    other: AuthParams = ()

    @classmethod
    def parse(cls, text: str) -> Credentials:
        params = _digest_params(text)
        _require(params, "username", "realm", "nonce", "uri", "response")
        nc_text = params.get("nc")
        nc: int | None = None
        if nc_text is not None:
            if len(nc_text) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc_text):
                raise RemoteProtocolError(f"bad nonce-count {nc_text!r} (RFC 2617 §3.2.2)")
            nc = int(nc_text, 16)
        return cls(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"],
            algorithm=Algorithm.parse(params.get("algorithm", "MD5")),
            qop=params.get("qop"),
            cnonce=params.get("cnonce"),
            nc=nc,
            opaque=params.get("opaque"),
            other=tuple((k, v) for k, v in params.items() if k not in _CREDENTIAL_PARAMS),
        )

    def __str__(self) -> str:
        parts = [
            f"username={quote(self.username)}",
            f"realm={quote(self.realm)}",
            f"nonce={quote(self.nonce)}",
            f"uri={quote(self.uri)}",
            f"response={quote(self.response)}",
            f"algorithm={self.algorithm.value}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        # qop and nc are unquoted tokens (RFC 2617 §3.2.2); some servers reject them quoted.
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc:08x}")
        parts.extend(f"{k}={quote(v)}" for k, v in self.other)
        return "Digest " + ", ".join(parts)


# --- the digest itself -----------------------------------------------------------------------


def compute_response(
    *,
    algorithm: Algorithm,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    cnonce: str | None = None,
    nc: int | None = None,
    body: bytes = b"",
) -> str:
    """``request-digest`` of RFC 2617 §3.2.2.1 with the hash of RFC 7616 §3.4.1."""
    ha1 = algorithm.hash(f"{username}:{realm}:{password}")
    if algorithm.is_session:
        if cnonce is None:
            raise RemoteProtocolError(f"{algorithm} needs a cnonce")
        ha1 = algorithm.hash(f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + algorithm.hash(body)
    ha2 = algorithm.hash(a2)
    if qop is None:
        return algorithm.hash(f"{ha1}:{nonce}:{ha2}")
    if cnonce is None or nc is None:
        raise RemoteProtocolError("qop needs cnonce and nc (RFC 2617 §3.2.2)")
    return algorithm.hash(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")


# --- client side -----------------------------------------------------------------------------


def choose_challenge(
    values: Iterable[str], supported: Sequence[Algorithm] = tuple(Algorithm)
) -> Challenge | None:
    """The first challenge we can answer: RFC 8760 §2.4 has the server order them by
    preference. Values we cannot parse (other schemes, unknown algorithms) are skipped."""
    for value in values:
        try:
            challenge = Challenge.parse(value)
        except RemoteProtocolError:
            continue
        if challenge.algorithm in supported and (not challenge.qop or "auth" in challenge.qop):
            return challenge
    return None


def authorize(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int = 1,
) -> Credentials:
    """Answer ``challenge`` (RFC 3261 §22.2). ``nc`` must grow each time the same nonce is
    reused; ``cnonce`` should be fresh random text. qop=auth whenever the server offers it."""
    qop = "auth" if challenge.qop else None
    if challenge.qop and "auth" not in challenge.qop:
        raise RemoteProtocolError(f"no supported qop in {challenge.qop}")
    use_cnonce = qop is not None or challenge.algorithm.is_session
    response = compute_response(
        algorithm=challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        qop=qop,
        cnonce=cnonce if use_cnonce else None,
        nc=nc if qop else None,
    )
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        qop=qop,
        cnonce=cnonce if use_cnonce else None,
        nc=nc if qop else None,
        opaque=challenge.opaque,
    )


# --- server side -----------------------------------------------------------------------------


class Outcome(StrEnum):
    OK = "ok"
    STALE = "stale"  # right password, but the nonce is expired, foreign or replayed
    REJECTED = "rejected"  # wrong password, unknown user, wrong realm/uri, malformed


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    outcome: Outcome
    username: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def stale(self) -> bool:
        return self.outcome is Outcome.STALE


PasswordLookup = Callable[[str], str | None]

_TIMESTAMP = struct.Struct(">Q")
_SALT_BYTES = 8
_MAC_BYTES = 16
_NONCE_BYTES = _TIMESTAMP.size + _SALT_BYTES + _MAC_BYTES
_CLOCK_SKEW = 5.0


class Challenger:
    """Issues challenges for ``realm`` and checks the answers to them."""

    def __init__(
        self,
        realm: str,
        *,
        secret: bytes | None = None,
        nonce_lifetime: float = 300.0,
        algorithms: Sequence[Algorithm] = DEFAULT_ALGORITHMS,
        accept_rfc2069: bool = True,
        max_tracked_nonces: int = 10_000,
        salt: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not algorithms:
            raise ValueError("at least one algorithm")
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self.algorithms = tuple(algorithms)
        self.accept_rfc2069 = accept_rfc2069
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._salt = salt
        self._max_tracked = max_tracked_nonces
        # nonce -> (highest nonce-count accepted, time the nonce stops being fresh), in order of
        # first use, which is close enough to issue order for expiry to work from the front.
        self._counts: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def challenges(self, now: float, *, stale: bool = False) -> list[Challenge]:
        """One challenge per algorithm, strongest first (RFC 8760 §2.4), sharing one nonce so
        a client that mislabels its algorithm still answers a nonce we issued."""
        nonce = self.make_nonce(now)
        return [
            Challenge(realm=self.realm, nonce=nonce, algorithm=a, qop=("auth",), stale=stale)
            for a in self.algorithms
        ]

    def make_nonce(self, now: float) -> str:
        payload = _TIMESTAMP.pack(max(int(now), 0)) + self._salt(_SALT_BYTES)
        token = payload + self._mac(payload)
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")

    def nonce_issued_at(self, nonce: str) -> float | None:
        """When we issued ``nonce``; None if it is not one of ours (forged or another secret)."""
        try:
            token = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(token) != _NONCE_BYTES:
            return None
        payload, mac = token[:-_MAC_BYTES], token[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        return float(_TIMESTAMP.unpack(payload[: _TIMESTAMP.size])[0])

    def _mac(self, payload: bytes) -> bytes:
        message = self.realm.encode("utf-8") + b"\0" + payload
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def verify(
        self,
        authorization: str | Credentials,
        *,
        method: str,
        uri: str,
        password_lookup: PasswordLookup,
        now: float,
    ) -> Verification:
        """Check an Authorization value against the request it came with (RFC 3261 §22.4).

        The digest is checked before the nonce's age, so ``stale`` is only ever told to someone
        who knows the password (RFC 2617 §3.2.1).
        """
        try:
            creds = (
                authorization
                if isinstance(authorization, Credentials)
                else Credentials.parse(authorization)
            )
        except RemoteProtocolError as exc:
            return Verification(outcome=Outcome.REJECTED, reason=exc.detail)
        rejected = self._precheck(creds, uri)
        if rejected:
            return Verification(outcome=Outcome.REJECTED, username=creds.username, reason=rejected)
        password = password_lookup(creds.username)
        if password is None:
            return Verification(
                outcome=Outcome.REJECTED, username=creds.username, reason="unknown user"
            )
        expected = compute_response(
            algorithm=creds.algorithm,
            username=creds.username,
            realm=creds.realm,
            password=password,
            method=method,
            uri=creds.uri,
            nonce=creds.nonce,
            qop=creds.qop,
            cnonce=creds.cnonce,
            nc=creds.nc,
        )
        if not hmac.compare_digest(expected, creds.response.lower()):
            return Verification(
                outcome=Outcome.REJECTED, username=creds.username, reason="wrong response"
            )
        issued = self.nonce_issued_at(creds.nonce)
        if issued is None or issued > now + _CLOCK_SKEW:
            return Verification(
                outcome=Outcome.STALE, username=creds.username, reason="foreign nonce"
            )
        if now - issued > self.nonce_lifetime:
            return Verification(
                outcome=Outcome.STALE, username=creds.username, reason="expired nonce"
            )
        # RFC 2069 answers carry no count: each nonce then serves once, as if its nc were 1.
        count = creds.nc if creds.qop is not None and creds.nc is not None else 1
        if not self._advance_count(creds.nonce, count, issued + self.nonce_lifetime, now):
            return Verification(
                outcome=Outcome.STALE, username=creds.username, reason="replayed nc"
            )
        return Verification(outcome=Outcome.OK, username=creds.username)

    def _precheck(self, creds: Credentials, uri: str) -> str:
        """Reasons to refuse that need no password; empty when there are none."""
        if creds.realm != self.realm:
            return f"realm {creds.realm!r} is not ours"
        if creds.algorithm not in self.algorithms:
            return f"algorithm {creds.algorithm} was not offered"
        if creds.qop is None:
            if not self.accept_rfc2069 or creds.algorithm.is_session:
                return "qop is required"
        elif creds.qop != "auth":
            return f"qop {creds.qop!r} was not offered"
        elif creds.nc is None or not creds.cnonce:
            return "qop=auth without nc and cnonce"
        if not _same_resource(creds.uri, uri):
            return "uri does not match the Request-URI"
        return ""

    def _advance_count(self, nonce: str, count: int, fresh_until: float, now: float) -> bool:
        self.expire(now)
        seen = self._counts.get(nonce)
        if seen is not None and count <= seen[0]:
            return False
        self._counts[nonce] = (count, fresh_until)
        while len(self._counts) > self._max_tracked:
            # Forgetting a count lets that nonce be replayed until it expires; bounded memory
            # under a flood matters more, and the digest still needs the password.
            self._counts.popitem(last=False)
        return True

    def expire(self, now: float) -> None:
        """Forget counts of nonces that are no longer fresh: they are refused as stale anyway."""
        while self._counts:
            nonce, (_, until) = next(iter(self._counts.items()))
            if until >= now:
                return
            del self._counts[nonce]

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to forget."""
        if not self._counts:
            return None
        return next(iter(self._counts.values()))[1]


def _same_resource(credential_uri: str, request_uri: str) -> bool:
    """RFC 2617 §3.2.2.5 wants the uri to name the requested resource. Compared without URI
    parameters, because pyVoIP adds ``;transport=UDP`` that its Request-URI lacks."""
    if credential_uri == request_uri:
        return True
    try:
        a, b = SipUri.parse(credential_uri), SipUri.parse(request_uri)
    except RemoteProtocolError:
        return False
    return (a.scheme, a.user, a.host, a.port) == (b.scheme, b.user, b.host, b.port)
