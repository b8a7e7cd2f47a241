"""SDP rewriting for media anchoring: each party is told to send RTP to the bridge.

RFC 3264 §8: our side of each leg is its own session; we keep the peer's codecs and
direction and replace the connection address and the audio port. The o= line is the bridge's,
never the peer's: toward a party the bridge is one session for the whole call, whoever is on
the other side of it (an agent, then a transfer target), so each SDP follows the one the bridge
last sent that party (:func:`toward`).

The call core reads each body twice, once to anchor it for the other party and once to point
our media at its sender, so the last few parses are remembered. The key is the body *object*,
not its content: two messages with equal SDP are still parsed once each. A body this module
wrote is remembered with the description it was written from, which the core reads again to
learn the codec the answer settled on.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

from bridge.sip.errors import RemoteProtocolError
from bridge.sip.offer_answer import (
    follow_version,
    make_offer,
    our_origin,
    primary_codec,
    rewrite_connection,
    telephone_event_payload_type,
)
from bridge.sip.sdp import DEFAULT_CODECS, Attribute, SessionDescription

_REMEMBERED = 256
_parsed: OrderedDict[int, tuple[bytes, SessionDescription]] = OrderedDict()


def parse(body: bytes) -> SessionDescription:
    """:meth:`SessionDescription.parse`, remembered for this very ``body`` object."""
    key = id(body)
    hit = _parsed.get(key)
    if hit is not None and hit[0] is body:
        return hit[1]
    sd = SessionDescription.parse(body)
    _remember(body, sd)
    return sd


def _remember(body: bytes, sd: SessionDescription) -> None:
    # Holding the body keeps its id from being reused by another object while remembered.
    _parsed[id(body)] = (body, sd)
    if len(_parsed) > _REMEMBERED:
        _parsed.popitem(last=False)


def _serialised(sd: SessionDescription) -> bytes:
    """``bytes(sd)``, remembered as the text of ``sd`` (serialising round-trips, see tests)."""
    body = bytes(sd)
    _remember(body, sd)
    return body


def toward(sd: SessionDescription, sent: bytes) -> bytes:
    """``sd`` as the bridge's next SDP to a party it last sent ``sent`` (empty: nothing yet).

    The first one opens the bridge's own session with that party: its own o= line with a
    random session id and the address the party sees (RFC 4566 §5.2). Keeping the peer's o=
    instead would make the session id change whenever the party on the other side changes,
    and strict SBCs take that for a new session and refuse the re-INVITE. Every later one
    keeps that o= line, with the version one higher when the description changed
    (RFC 3264 §8, :func:`~bridge.sip.offer_answer.follow_version`).
    """
    previous: SessionDescription | None = None
    if sent:
        try:
            previous = parse(sent)
        except RemoteProtocolError:
            previous = None
    if previous is None:
        address = sd.origin.address
        return _serialised(sd.with_(origin=our_origin(address, secrets.randbelow(2**31))))
    return _serialised(follow_version(previous, sd))


def own_offer(host: str, port: int, sent: bytes, prefer: bytes = b"") -> bytes:
    """An offer of the bridge's own media (RFC 3264 §5), through :func:`toward`: for a party
    that gave no offer of its own, so the other side need not wait on it (RFC 3261 §13.2.1
    delayed offer). The codec ``prefer`` (an answer from the other party) settled on is put
    first, so a party that takes it needs no transcoding in the relay."""
    codecs = list(DEFAULT_CODECS)
    settled = None
    if prefer:
        try:
            audio = parse(prefer).audio
        except RemoteProtocolError:
            audio = None
        settled = primary_codec(audio) if audio is not None else None
    if settled is not None:
        codecs.sort(key=lambda c: not c.same_format(settled))
    offer = make_offer(address=host, port=port, session_id=0, codecs=codecs)
    return toward(offer, sent)


_G711 = {"PCMA": ("8", "PCMU", "0"), "PCMU": ("0", "PCMA", "8")}
"""Each G.711 law: its static payload type, and the other law with its static payload type."""


def anchor_offer(body: bytes, host: str, port: int, sent: bytes) -> bytes:
    """The peer's offer with our media address and port in it. An audio stream offering one
    G.711 law only also offers the other, last among the voice codecs: the relay transcodes
    between the laws, so an A-law trunk's call can reach a μ-law-only phone, which would
    otherwise have to refuse the offer (RFC 3264 §6: an answer only names formats the offer
    had). ``sent`` is what the bridge last sent the party the offer goes to (:func:`toward`)."""
    sd = rewrite_connection(parse(body), address=host, port=port, session_version_bump=False)
    index = sd.audio_index
    if index is None or sd.media[index].is_rejected:
        return toward(sd, sent)
    audio = sd.media[index]
    laws = [c for c in audio.codecs if c.name.upper() in _G711]
    if len(laws) != 1:
        return toward(sd, sent)
    _, other, other_pt = _G711[laws[0].name.upper()]
    if other_pt in audio.formats:
        return toward(sd, sent)
    formats = list(audio.formats)
    voice = {str(c.payload_type) for c in audio.codecs if c.carries_audio}
    last = max((i for i, f in enumerate(formats) if f in voice), default=len(formats) - 1)
    formats.insert(last + 1, other_pt)
    rtpmap = Attribute(name="rtpmap", value=f"{other_pt} {other}/8000")
    media = list(sd.media)
    media[index] = audio.with_(formats=tuple(formats), attributes=(*audio.attributes, rtpmap))
    return toward(sd.with_(media=tuple(media)), sent)


def anchor_answer(body: bytes, offer: bytes, host: str, port: int, sent: bytes) -> bytes:
    """The peer's answer with our media address and port in it, relayed to the party whose
    ``offer`` went out through :func:`anchor_offer`. When the answerer chose the G.711 law the
    bridge added, the answer names the offerer's own law instead, so the offerer sends and
    expects what it offered and the relay transcodes between the two legs. ``sent`` is what
    the bridge last sent that party (:func:`toward`)."""
    sd = rewrite_connection(parse(body), address=host, port=port, session_version_bump=False)
    index = sd.audio_index
    try:
        offered = parse(offer).audio
    except RemoteProtocolError:
        return toward(sd, sent)
    if index is None or offered is None or sd.media[index].is_rejected:
        return toward(sd, sent)
    audio = sd.media[index]
    names = {c.name.upper() for c in offered.codecs}
    formats, attributes = list(audio.formats), list(audio.attributes)
    for codec in audio.codecs:
        law = codec.name.upper()
        if law not in _G711 or law in names or _G711[law][1] not in names:
            continue
        ours = next(c for c in offered.codecs if c.name.upper() == _G711[law][1])
        pt = str(codec.payload_type)
        formats = [str(ours.payload_type) if f == pt else f for f in formats]
        attributes = [
            Attribute(name="rtpmap", value=ours.rtpmap)
            if a.name == "rtpmap" and (a.value or "").split(" ", 1)[0] == pt
            else a
            for a in attributes
        ]
    media = list(sd.media)
    media[index] = audio.with_(formats=tuple(dict.fromkeys(formats)), attributes=tuple(attributes))
    return toward(sd.with_(media=tuple(media)), sent)


Remote = tuple[str, int, int | None, int | None]
"""Host, port, first voice payload type, telephone-event payload type (None: not offered)."""
_remotes: OrderedDict[int, tuple[bytes, Remote | None]] = OrderedDict()


def remote_of(body: bytes) -> Remote | None:
    """Where the party wants its RTP, its preferred payload type and its RFC 4733
    telephone-event payload type; None when unusable."""
    key = id(body)
    hit = _remotes.get(key)
    if hit is not None and hit[0] is body:
        return hit[1]
    remote = _remote_of(body)
    _remotes[key] = (body, remote)
    if len(_remotes) > _REMEMBERED:
        _remotes.popitem(last=False)
    return remote


def _remote_of(body: bytes) -> Remote | None:
    try:
        sd = parse(body)
    except RemoteProtocolError:
        return None
    endpoint = sd.audio_endpoint
    audio = sd.audio
    if endpoint is None or audio is None:
        return None
    codec = primary_codec(audio)
    return (
        endpoint[0],
        endpoint[1],
        codec.payload_type if codec is not None else None,
        telephone_event_payload_type(audio),
    )


def is_hold(body: bytes) -> bool:
    """Whether this offer stops the writer receiving audio (RFC 3264 §8.4, or RFC 2543's
    c=0.0.0.0): the other party is then on hold."""
    try:
        return parse(body).is_hold
    except RemoteProtocolError:
        return False
