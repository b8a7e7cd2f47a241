"""SDP rewriting for media anchoring: each party is told to send RTP to the bridge.

RFC 3264 §8: our side of each leg is its own session; we keep the peer's codecs and
direction and only replace the connection address and the audio port.

The call core reads each body twice, once to anchor it for the other party and once to point
our media at its sender, so the last few parses are remembered. The key is the body *object*,
not its content: two messages with equal SDP are still parsed once each.
"""

from __future__ import annotations

from collections import OrderedDict

from bridge.sip.errors import RemoteProtocolError
from bridge.sip.sdp import SessionDescription, primary_codec, rewrite_connection

_REMEMBERED = 256
_parsed: OrderedDict[int, tuple[bytes, SessionDescription]] = OrderedDict()


def parse(body: bytes) -> SessionDescription:
    """:meth:`SessionDescription.parse`, remembered for this very ``body`` object."""
    key = id(body)
    hit = _parsed.get(key)
    if hit is not None and hit[0] is body:
        return hit[1]
    sd = SessionDescription.parse(body)
    # Holding the body keeps its id from being reused by another object while remembered.
    _parsed[key] = (body, sd)
    if len(_parsed) > _REMEMBERED:
        _parsed.popitem(last=False)
    return sd


def anchor(body: bytes, host: str, port: int) -> bytes:
    """The peer's SDP with our media address and port in it."""
    sd = parse(body)
    return bytes(rewrite_connection(sd, address=host, port=port, session_version_bump=True))


def remote_of(body: bytes) -> tuple[str, int, int | None] | None:
    """Where the party wants its RTP, and its preferred payload type; None when unusable."""
    try:
        sd = parse(body)
    except RemoteProtocolError:
        return None
    endpoint = sd.audio_endpoint
    audio = sd.audio
    if endpoint is None or audio is None:
        return None
    codec = primary_codec(audio)
    return endpoint[0], endpoint[1], codec.payload_type if codec is not None else None
