"""SDP offer/answer for audio (RFC 3264) and the edits media anchoring makes to a description.

:mod:`bridge.sip.sdp` parses and writes descriptions; this module decides what to offer, how to
answer, and how to point a description at the bridge's media ports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from bridge.sip.errors import LocalProtocolError, RemoteProtocolError
from bridge.sip.sdp import (
    DEFAULT_CODECS,
    DIRECTIONS,
    NOT_ACCEPTABLE,
    RTP_PROFILES,
    Attribute,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SessionDescription,
)

# ICE and RTCP-address attributes describe the peer's own transport addresses. Once the bridge
# anchors media they point past it, so they are dropped rather than passed on (RFC 8445 §4,
# RFC 3605 §2.1).
_TRANSPORT_ATTRIBUTES = frozenset(
    {"rtcp", "candidate", "remote-candidates", "ice-ufrag", "ice-pwd", "ice-options",
     "ice-lite", "ice-mismatch", "end-of-candidates"}
)  # fmt: skip

# --- offer/answer (RFC 3264) ---------------------------------------------------------------


def make_offer(
    *,
    address: str,
    port: int,
    session_id: int,
    session_version: int = 1,
    codecs: Sequence[Codec] = DEFAULT_CODECS,
    direction: Direction = Direction.SENDRECV,
    ptime: int | None = 20,
) -> SessionDescription:
    """An offer for one audio stream (RFC 3264 §5). The codec order is our preference."""
    if not any(codec.carries_audio for codec in codecs):
        raise LocalProtocolError("an offer needs at least one voice codec")
    return SessionDescription(
        origin=our_origin(address, session_id, session_version),
        connection=Connection.for_address(address),
        media=(_audio_stream(codecs, port=port, direction=direction, ptime=ptime),),
    )


def answer(
    offer: SessionDescription,
    *,
    supported: Sequence[Codec],
    local_address: str,
    local_port: int,
    session_id: int,
    session_version: int = 1,
    direction: Direction | None = None,
    ptime: int | None = 20,
) -> SessionDescription:
    """Answer ``offer`` for the audio stream the bridge relays (RFC 3264 §6).

    The answer has one m= line per offered one, in the same order (§6); streams other than
    the relayed audio are refused with port 0. Codecs are the offered ones we support, in the
    offerer's order and under the offerer's payload types, which is what lets the relay pass
    packets through unchanged. ``direction`` is what we want for ourselves; the result is the
    most the offer allows of it (§6.1). An offer we cannot take raises 488.
    """
    index = offer.audio_index
    if index is None:
        raise RemoteProtocolError("offer has no audio stream", status=NOT_ACCEPTABLE)
    offered = offer.media[index]
    if offered.is_rejected:
        raise RemoteProtocolError("offer disables its audio stream", status=NOT_ACCEPTABLE)
    if offered.proto not in RTP_PROFILES:
        raise RemoteProtocolError(
            f"audio profile {offered.proto} is not plain RTP", status=NOT_ACCEPTABLE
        )
    codecs = negotiate_codecs(offered.codecs, supported)
    if not any(codec.carries_audio for codec in codecs):
        raise RemoteProtocolError("no voice codec in common", status=NOT_ACCEPTABLE)
    theirs = offer.direction_for(offered)
    conn = offer.connection_for(offered)
    their_receive = theirs.receives and not (conn is not None and conn.is_hold)
    ours = direction or Direction.SENDRECV
    agreed = Direction.from_flags(
        sends=ours.sends and their_receive, receives=ours.receives and theirs.sends
    )
    media = tuple(
        _audio_stream(codecs, port=local_port, direction=agreed, ptime=ptime, proto=m.proto)
        if i == index
        else MediaDescription(media=m.media, port=0, proto=m.proto, formats=m.formats)
        for i, m in enumerate(offer.media)
    )
    return SessionDescription(
        origin=our_origin(local_address, session_id, session_version),
        connection=Connection.for_address(local_address),
        media=media,
    )


def negotiate_codecs(offered: Sequence[Codec], supported: Sequence[Codec]) -> list[Codec]:
    """Offered codecs we also support, in offer order, keeping the offerer's payload types."""
    out: list[Codec] = []
    for theirs in offered:
        for ours in supported:
            if theirs.same_format(ours):
                out.append(replace(theirs, fmtp=_answer_fmtp(theirs, ours)))
                break
    return out


def _answer_fmtp(theirs: Codec, ours: Codec) -> str | None:
    """For telephone-event the answer names the events both sides handle (RFC 4733 §2.4.1);
    for other formats the offerer's parameters stand."""
    if not theirs.is_telephone_event:
        return theirs.fmtp
    if theirs.fmtp is None or ours.fmtp is None:
        return ours.fmtp or theirs.fmtp
    their_events, our_events = parse_event_list(theirs.fmtp), parse_event_list(ours.fmtp)
    if their_events is None or our_events is None:
        return ours.fmtp
    common = their_events & our_events
    return format_event_list(common) if common else ours.fmtp


def parse_event_list(text: str) -> frozenset[int] | None:
    """``0-15,66,70`` (RFC 4733 §2.4.1); None when it is not an event list."""
    events: set[int] = set()
    for item in text.replace(" ", "").split(","):
        low, dash, high = item.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            return None
        first, last = int(low), int(high) if dash else int(low)
        if last < first or last > 255:
            return None
        events.update(range(first, last + 1))
    return frozenset(events)


def format_event_list(events: Iterable[int]) -> str:
    ordered = sorted(set(events))
    runs: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(runs)


def telephone_event_payload_type(media: MediaDescription, clock_rate: int = 8000) -> int | None:
    """The payload type carrying RFC 4733 events at the voice clock rate, if negotiated."""
    for codec in media.codecs:
        if codec.is_telephone_event and codec.clock_rate == clock_rate:
            return codec.payload_type
    return None


def primary_codec(media: MediaDescription) -> Codec | None:
    """The first voice codec: the one a sender should use (RFC 3264 §5.1 preference order)."""
    return next((codec for codec in media.codecs if codec.carries_audio), None)


# --- edits for media anchoring ---------------------------------------------------------------


def rewrite_connection(
    sd: SessionDescription, *, address: str, port: int, session_version_bump: bool
) -> SessionDescription:
    """Point the relayed audio stream at the bridge and keep everything else.

    The peer's address is replaced in c= (wherever it applies to the audio stream) and in o=
    (so the far side never learns it). Other streams keep reaching the peer: if they relied on
    the session c= they get their own copy of it. ICE and a=rtcp describe the peer's ports and
    are dropped. An RFC 2543 ``c=0.0.0.0`` hold becomes its RFC 3264 form (§8.4), since our
    address replaces the zero one. ``session_version_bump`` is for when our side of the session
    changed (a new relay port), which o= must announce (§8).
    """
    index = sd.audio_index
    if index is None:
        raise RemoteProtocolError("no audio stream to anchor", status=NOT_ACCEPTABLE)
    ours = Connection.for_address(address)
    audio = sd.media[index]
    attributes = [a for a in audio.attributes if a.name not in _TRANSPORT_ATTRIBUTES]
    conn = sd.connection_for(audio)
    if conn is not None and conn.is_hold and not audio.is_rejected:
        held = Direction.from_flags(sends=sd.direction_for(audio).sends, receives=False)
        attributes = _set_direction(attributes, held)
    media = list(sd.media)
    for i, m in enumerate(media):
        if i != index and m.connection is None and sd.connection is not None:
            media[i] = m.with_(connection=sd.connection)
    media[index] = audio.with_(
        port=0 if audio.is_rejected else port,
        port_count=None,
        connection=ours if audio.connection is not None or sd.connection is None else None,
        attributes=tuple(attributes),
    )
    version = sd.origin.session_version + (1 if session_version_bump else 0)
    origin = replace(sd.origin, addrtype=ours.addrtype, address=address, session_version=version)
    return sd.with_(
        origin=origin,
        connection=ours if sd.connection is not None else None,
        media=tuple(media),
    )


def with_direction(
    sd: SessionDescription, direction: Direction, *, session_version_bump: bool = True
) -> SessionDescription:
    """Put the audio stream on hold or take it off (RFC 3264 §8.4) in a copy of ``sd``."""
    index = sd.audio_index
    if index is None:
        raise LocalProtocolError("no audio stream to change direction of")
    media = list(sd.media)
    media[index] = media[index].with_(
        attributes=tuple(_set_direction(list(media[index].attributes), direction))
    )
    version = sd.origin.session_version + (1 if session_version_bump else 0)
    return sd.with_(origin=replace(sd.origin, session_version=version), media=tuple(media))


def follow_version(
    previous: SessionDescription | None, new: SessionDescription
) -> SessionDescription:
    """Give ``new`` the o= line of what we last sent on this dialog, all of it but the version.

    RFC 3264 §8: a later SDP keeps that o= line except for the version, which goes up by one
    when the session changes; a version that does not go up promises an SDP identical to the
    one that had it. RFC 4566 §5.2 makes username, session id and address together the
    session's identity, so none of them may change either. The version therefore goes up
    only when something other than o= differs: a repeated description (a session refresh, a
    re-INVITE that changes nothing) keeps it, and a peer that compares versions, as many SBCs
    do, sees correctly that nothing changed."""
    if previous is None:
        return new
    unchanged = bytes(new.with_(origin=previous.origin)) == bytes(previous)
    version = previous.origin.session_version + (0 if unchanged else 1)
    return new.with_(origin=replace(previous.origin, session_version=version))


def _set_direction(attributes: list[Attribute], direction: Direction) -> list[Attribute]:
    out: list[Attribute] = []
    placed = False
    for attr in attributes:
        if attr.value is None and attr.name in DIRECTIONS:
            if not placed:
                out.append(Attribute(name=direction.value))
                placed = True
        else:
            out.append(attr)
    if not placed:
        out.append(Attribute(name=direction.value))
    return out


def our_origin(address: str, session_id: int, session_version: int = 1) -> Origin:
    """The bridge's o= line for a session it starts (RFC 4566 §5.2: no user ids, hence ``-``)."""
    conn = Connection.for_address(address)
    return Origin(
        session_id=session_id,
        session_version=session_version,
        addrtype=conn.addrtype,
        address=address,
    )


def _audio_stream(
    codecs: Sequence[Codec],
    *,
    port: int,
    direction: Direction,
    ptime: int | None,
    proto: str = "RTP/AVP",
) -> MediaDescription:
    attributes: list[Attribute] = []
    for codec in codecs:
        attributes.append(Attribute(name="rtpmap", value=codec.rtpmap))
        if codec.fmtp is not None:
            attributes.append(Attribute(name="fmtp", value=f"{codec.payload_type} {codec.fmtp}"))
    if ptime is not None:
        attributes.append(Attribute(name="ptime", value=str(ptime)))
    attributes.append(Attribute(name=direction.value))
    return MediaDescription(
        media="audio",
        port=port,
        proto=proto,
        formats=tuple(str(codec.payload_type) for codec in codecs),
        attributes=tuple(attributes),
    )
