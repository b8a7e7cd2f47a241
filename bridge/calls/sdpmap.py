"""SDP rewriting for media anchoring: each party is told to send RTP to the bridge.

RFC 3264 §8: our side of each leg is its own session; we keep the peer's codecs and
direction and only replace the connection address and the audio port.
"""

from __future__ import annotations

from bridge.sip.errors import RemoteProtocolError
from bridge.sip.sdp import SessionDescription, primary_codec, rewrite_connection


def anchor(body: bytes, host: str, port: int) -> bytes:
    """The peer's SDP with our media address and port in it."""
    sd = SessionDescription.parse(body)
    return bytes(rewrite_connection(sd, address=host, port=port, session_version_bump=True))


def remote_of(body: bytes) -> tuple[str, int, int | None] | None:
    """Where the party wants its RTP, and its preferred payload type; None when unusable."""
    try:
        sd = SessionDescription.parse(body)
    except RemoteProtocolError:
        return None
    endpoint = sd.audio_endpoint
    audio = sd.audio
    if endpoint is None or audio is None:
        return None
    codec = primary_codec(audio)
    return endpoint[0], endpoint[1], codec.payload_type if codec is not None else None
