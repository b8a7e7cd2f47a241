"""SDP session descriptions (RFC 4566) and the audio offer/answer model (RFC 3264).

Theory of operation: a description is parsed into immutable values that keep every line the
bridge does not interpret (unknown attributes, bandwidth, keys, timing repeats) in its original
order, so ``bytes(SessionDescription.parse(data)) == data`` for any well-ordered description with
CRLF line ends. The bridge anchors media, so the only edits it makes to a peer's description are
the ones that redirect audio through its relay (:func:`rewrite_connection`) or change direction
(:func:`with_direction`); everything else travels unchanged to the other leg. Offers and answers
the bridge writes itself come from :func:`make_offer` and :func:`answer`.

Errors are the peer's fault and carry the status to answer with: 400 for a description that is
not SDP at all, 488 (RFC 3261 §21.4.26) for one we understand but cannot accept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from bridge.sip.errors import LocalProtocolError, RemoteProtocolError

NOT_ACCEPTABLE = 488

# RFC 4566 §5: the order of lines at session and media level. Lines of the same rank keep their
# relative order; t= and r= share a rank because each r= belongs to the t= before it.
_SESSION_RANK = {"v": 0, "o": 1, "s": 2, "i": 3, "u": 4, "e": 5, "p": 6, "c": 7, "b": 8,
                 "t": 9, "r": 9, "z": 10, "k": 11, "a": 12}  # fmt: skip
_MEDIA_RANK = {"i": 1, "c": 2, "b": 3, "k": 4, "a": 5}
_SESSION_EXTRA = frozenset("iuepbzk")
_MEDIA_EXTRA = frozenset("ibk")

# RFC 3551 §6: static payload types, used when an offer omits a=rtpmap for them.
_STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1), 3: ("GSM", 8000, 1), 4: ("G723", 8000, 1), 5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1), 7: ("LPC", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1),
    10: ("L16", 44100, 2), 11: ("L16", 44100, 1), 12: ("QCELP", 8000, 1), 13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1), 15: ("G728", 8000, 1), 16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1), 18: ("G729", 8000, 1),
}  # fmt: skip

# Profiles the relay can carry: plain RTP. AVPF is a superset whose feedback we simply never send.
RTP_PROFILES = frozenset({"RTP/AVP", "RTP/AVPF"})

# ICE and RTCP-address attributes describe the peer's own transport addresses. Once the bridge
# anchors media they point past it, so they are dropped rather than passed on (RFC 8445 §4,
# RFC 3605 §2.1).
_TRANSPORT_ATTRIBUTES = frozenset(
    {"rtcp", "candidate", "remote-candidates", "ice-ufrag", "ice-pwd", "ice-options",
     "ice-lite", "ice-mismatch", "end-of-candidates"}
)  # fmt: skip

HOLD_ADDRESS = "0.0.0.0"


class Direction(StrEnum):
    """RFC 3264 §5.1 stream directions, named from the point of view of the side that wrote them."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, *, sends: bool, receives: bool) -> Direction:
        return _BY_FLAGS[sends, receives]

    def mirrored(self) -> Direction:
        """The direction the other side sees: what one sends, the other receives (§6.1)."""
        return Direction.from_flags(sends=self.receives, receives=self.sends)


_DIRECTIONS = frozenset(d.value for d in Direction)
_BY_FLAGS = {(d.sends, d.receives): d for d in Direction}


@dataclass(frozen=True, slots=True, kw_only=True)
class Codec:
    """One RTP payload format: an m= format with its a=rtpmap and a=fmtp (RFC 4566 §6)."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    def same_format(self, other: Codec) -> bool:
        """Encoding names compare case-insensitively; payload types are per-session labels
        (RFC 3264 §6.1), so they take no part in matching."""
        return (
            self.name.lower() == other.name.lower()
            and self.clock_rate == other.clock_rate
            and self.channels == other.channels
        )

    @property
    def rtpmap(self) -> str:
        tail = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.payload_type} {self.name}/{self.clock_rate}{tail}"

    @property
    def is_telephone_event(self) -> bool:
        return self.name.lower() == "telephone-event"

    @property
    def is_comfort_noise(self) -> bool:
        return self.name.lower() == "cn"

    @property
    def carries_audio(self) -> bool:
        """Named events and comfort noise ride along a voice codec; alone they make no call."""
        return not (self.is_telephone_event or self.is_comfort_noise)


PCMU = Codec(payload_type=0, name="PCMU", clock_rate=8000)
PCMA = Codec(payload_type=8, name="PCMA", clock_rate=8000)
# RFC 4733 §3.2: events 0-15 are the DTMF digits and A-D; 16 is flash, used for hook-flash
# transfer on some PBXs.
TELEPHONE_EVENT = Codec(payload_type=101, name="telephone-event", clock_rate=8000, fmtp="0-16")
DEFAULT_CODECS: tuple[Codec, ...] = (PCMA, PCMU, TELEPHONE_EVENT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attribute:
    """``a=name`` (``value`` None) or ``a=name:value`` (RFC 4566 §5.13)."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"

    @classmethod
    def parse(cls, text: str) -> Attribute:
        name, colon, value = text.partition(":")
        if not name:
            raise RemoteProtocolError(f"SDP attribute without a name: a={text!r}")
        return cls(name=name, value=value if colon else None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """``o=`` (RFC 4566 §5.2). ``session_version`` must grow whenever the session changes
    (RFC 3264 §8), which is how a peer tells a real re-offer from a repeated one."""

    username: str = "-"
    session_id: int
    session_version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )

    @classmethod
    def parse(cls, text: str) -> Origin:
        parts = text.split()
        if len(parts) != 6 or not parts[1].isdigit() or not parts[2].isdigit():
            raise RemoteProtocolError(f"bad SDP origin o={text!r}")
        return cls(
            username=parts[0],
            session_id=int(parts[1]),
            session_version=int(parts[2]),
            nettype=parts[3],
            addrtype=parts[4],
            address=parts[5],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """``c=`` (RFC 4566 §5.7); ``address`` keeps any multicast ``/ttl`` suffix as written."""

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @classmethod
    def parse(cls, text: str) -> Connection:
        parts = text.split()
        if len(parts) != 3:
            raise RemoteProtocolError(f"bad SDP connection c={text!r}")
        return cls(nettype=parts[0], addrtype=parts[1], address=parts[2])

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls(addrtype="IP6" if ":" in address else "IP4", address=address)

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    @property
    def is_hold(self) -> bool:
        """RFC 2543 hold: the old way of saying "do not send to me" (RFC 3264 §8.4)."""
        return self.host == HOLD_ADDRESS


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """``t=`` with the ``r=`` lines that belong to it (RFC 4566 §5.9, §5.10)."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Timing:
        parts = text.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise RemoteProtocolError(f"bad SDP timing t={text!r}")
        return cls(start=int(parts[0]), stop=int(parts[1]))


Line = tuple[str, str]


_CODECS: dict[int, tuple[MediaDescription, tuple[Codec, ...]]] = {}
_CODECS_REMEMBERED = 512


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaDescription:
    """One ``m=`` section (RFC 4566 §5.14). ``lines`` holds i=, b=, k= and any further c= lines
    verbatim; ``attributes`` keeps every a= line in order, understood or not."""

    media: str
    port: int
    port_count: int | None = None
    proto: str
    formats: tuple[str, ...]
    connection: Connection | None = None
    lines: tuple[Line, ...] = ()
    attributes: tuple[Attribute, ...] = ()

    @property
    def is_rejected(self) -> bool:
        """Port 0 disables a stream in an offer and rejects it in an answer (RFC 3264 §5.1, §6)."""
        return self.port == 0

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name:value``; None when absent or a bare flag."""
        for attr in self.attributes:
            if attr.name == name:
                return attr.value
        return None

    def has_attribute(self, name: str) -> bool:
        return any(attr.name == name for attr in self.attributes)

    @property
    def direction(self) -> Direction | None:
        """The stream's own direction attribute; the session default applies when None."""
        return _direction_of(self.attributes)

    @property
    def payload_types(self) -> list[int]:
        return [int(f) for f in self.formats if f.isdigit()]

    @property
    def codecs(self) -> list[Codec]:
        """Formats in the order offered, named by a=rtpmap or the RFC 3551 static table.
        Dynamic types without an rtpmap are unusable and skipped."""
        # Asked several times per call of the same (frozen) description: remembered by object.
        hit = _CODECS.get(id(self))
        if hit is not None and hit[0] is self:
            return list(hit[1])
        out = self._codecs()
        if len(_CODECS) >= _CODECS_REMEMBERED:
            _CODECS.clear()
        _CODECS[id(self)] = (self, tuple(out))
        return out

    def _codecs(self) -> list[Codec]:
        rtpmaps: dict[int, tuple[str, int, int]] = {}
        fmtps: dict[int, str] = {}
        for attr in self.attributes:
            if attr.value is None:
                continue
            pt_text, _, rest = attr.value.partition(" ")
            if not pt_text.isdigit():
                continue
            if attr.name == "rtpmap":
                parsed = _parse_rtpmap(rest)
                if parsed is not None:
                    rtpmaps.setdefault(int(pt_text), parsed)
            elif attr.name == "fmtp":
                fmtps.setdefault(int(pt_text), rest.strip())
        out: list[Codec] = []
        for pt in self.payload_types:
            entry = rtpmaps.get(pt) or _STATIC_PAYLOAD_TYPES.get(pt)
            if entry is None:
                continue
            name, rate, channels = entry
            out.append(
                Codec(
                    payload_type=pt,
                    name=name,
                    clock_rate=rate,
                    channels=channels,
                    fmtp=fmtps.get(pt),
                )
            )
        return out

    def codec(self, payload_type: int) -> Codec | None:
        for codec in self.codecs:
            if codec.payload_type == payload_type:
                return codec
        return None

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        if value is None:
            return None
        try:
            return int(float(value.strip()))
        except ValueError:
            return None

    @property
    def rtcp(self) -> tuple[int, str | None] | None:
        """``a=rtcp:port [IN IP4 addr]`` (RFC 3605); None means RTP port + 1 on the same host."""
        value = self.attribute("rtcp")
        if value is None:
            return None
        parts = value.split()
        if not parts or not parts[0].isdigit():
            return None
        return int(parts[0]), parts[3] if len(parts) == 4 else None

    def with_(self, **changes: object) -> MediaDescription:
        return replace(self, **changes)  # type: ignore[arg-type]

    def _serialise(self, out: list[str]) -> None:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        out.append(f"m={' '.join((self.media, port, self.proto, *self.formats))}")
        typed: list[tuple[int, str]] = [(_MEDIA_RANK[k], f"{k}={v}") for k, v in self.lines]
        if self.connection is not None:
            typed.append((_MEDIA_RANK["c"], f"c={self.connection}"))
        typed.sort(key=lambda item: item[0])
        out.extend(text for _, text in typed)
        out.extend(f"a={attr}" for attr in self.attributes)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDescription:
    """A whole description. ``lines`` holds i=, u=, e=, p=, b=, z=, k= verbatim."""

    version: int = 0
    origin: Origin
    session_name: str | None = "-"
    connection: Connection | None = None
    times: tuple[Timing, ...] = (Timing(),)
    lines: tuple[Line, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = field(default=())

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        return _parse(data)

    def __bytes__(self) -> bytes:
        out = [f"v={self.version}", f"o={self.origin}"]
        if self.session_name is not None:
            out.append(f"s={self.session_name}")
        typed: list[tuple[int, str]] = [(_SESSION_RANK[k], f"{k}={v}") for k, v in self.lines]
        if self.connection is not None:
            typed.append((_SESSION_RANK["c"], f"c={self.connection}"))
        for timing in self.times:
            typed.append((_SESSION_RANK["t"], f"t={timing.start} {timing.stop}"))
            typed.extend((_SESSION_RANK["r"], f"r={r}") for r in timing.repeats)
        typed.sort(key=lambda item: item[0])
        out.extend(text for _, text in typed)
        out.extend(f"a={attr}" for attr in self.attributes)
        for media in self.media:
            media._serialise(out)
        return ("\r\n".join(out) + "\r\n").encode("utf-8")

    def with_(self, **changes: object) -> SessionDescription:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def audio_index(self) -> int | None:
        """The audio stream the bridge relays: the first enabled m=audio, else the first one."""
        first: int | None = None
        for i, media in enumerate(self.media):
            if media.media != "audio":
                continue
            if not media.is_rejected:
                return i
            if first is None:
                first = i
        return first

    @property
    def audio(self) -> MediaDescription | None:
        index = self.audio_index
        return None if index is None else self.media[index]

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """A media-level c= overrides the session one (RFC 4566 §5.7)."""
        return media.connection or self.connection

    def direction_for(self, media: MediaDescription) -> Direction:
        """Media attribute, else session attribute, else sendrecv (RFC 3264 §5.1)."""
        return media.direction or _direction_of(self.attributes) or Direction.SENDRECV

    @property
    def direction(self) -> Direction:
        audio = self.audio
        if audio is None:
            return _direction_of(self.attributes) or Direction.SENDRECV
        return self.direction_for(audio)

    @property
    def is_hold(self) -> bool:
        """The writer asks not to be sent audio: sendonly or inactive (RFC 3264 §8.4), or the
        RFC 2543 ``c=0.0.0.0`` form that older phones still send."""
        audio = self.audio
        if audio is None or audio.is_rejected:
            return False
        if not self.direction_for(audio).receives:
            return True
        conn = self.connection_for(audio)
        return conn is not None and conn.is_hold

    @property
    def audio_endpoint(self) -> tuple[str, int] | None:
        """Where to send the writer's audio; None when the stream is rejected or on old-style
        hold, where there is nowhere to send."""
        audio = self.audio
        if audio is None or audio.is_rejected:
            return None
        conn = self.connection_for(audio)
        if conn is None or conn.is_hold:
            return None
        return conn.host, audio.port


def _direction_of(attributes: Iterable[Attribute]) -> Direction | None:
    for attr in attributes:
        if attr.value is None and attr.name in _DIRECTIONS:
            return Direction(attr.name)
    return None


def _parse_rtpmap(text: str) -> tuple[str, int, int] | None:
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].isdigit():
        return None
    channels = 1
    if len(parts) == 3:
        if not parts[2].isdigit():
            return None
        channels = int(parts[2])
    return parts[0], int(parts[1]), channels


def _parse(data: bytes) -> SessionDescription:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("SDP is not UTF-8 (RFC 4566 §5)") from exc
    raw_lines = [line.rstrip("\r") for line in text.split("\n")]
    lines = [line for line in raw_lines if line]
    if not lines or lines[0] != "v=0":
        raise RemoteProtocolError("SDP must start with v=0 (RFC 4566 §5.1)")
    origin: Origin | None = None
    session_name: str | None = None
    connection: Connection | None = None
    times: list[Timing] = []
    extra: list[Line] = []
    attributes: list[Attribute] = []
    media: list[MediaDescription] = []
    current: _MediaBuilder | None = None
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=":
            raise RemoteProtocolError(f"bad SDP line {line[:60]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            if current is not None:
                media.append(current.build())
            current = _MediaBuilder.start(value)
        elif current is not None:
            current.add(kind, value)
        elif kind == "o" and origin is None:
            origin = Origin.parse(value)
        elif kind == "s" and session_name is None:
            session_name = value
        elif kind == "c" and connection is None:
            connection = Connection.parse(value)
        elif kind == "t":
            times.append(Timing.parse(value))
        elif kind == "r" and times:
            times[-1] = replace(times[-1], repeats=(*times[-1].repeats, value))
        elif kind == "a":
            attributes.append(Attribute.parse(value))
        elif kind in _SESSION_EXTRA:
            extra.append((kind, value))
        elif kind in "vosc":
            raise RemoteProtocolError(f"SDP repeats its {kind}= line (RFC 4566 §5)")
        else:
            # RFC 4566 §5: a description with a type letter we do not know must be ignored
            # as a whole, which for an offer means refusing it.
            raise RemoteProtocolError(f"unexpected SDP line {kind}=", status=NOT_ACCEPTABLE)
    if current is not None:
        media.append(current.build())
    if origin is None:
        raise RemoteProtocolError("SDP without o= (RFC 4566 §5.2)")
    sd = SessionDescription(
        origin=origin,
        session_name=session_name,
        connection=connection,
        times=tuple(times),
        lines=tuple(extra),
        attributes=tuple(attributes),
        media=tuple(media),
    )
    for m in sd.media:
        if not m.is_rejected and sd.connection_for(m) is None:
            raise RemoteProtocolError("SDP stream without c= (RFC 4566 §5.7)")
    return sd


@dataclass(slots=True)
class _MediaBuilder:
    """Collects the lines of one m= section while parsing."""

    head: MediaDescription
    connection: Connection | None = None
    lines: list[Line] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)

    @classmethod
    def start(cls, value: str) -> _MediaBuilder:
        parts = value.split()
        if len(parts) < 3:
            raise RemoteProtocolError(f"bad SDP media m={value!r}")
        port_text, slash, count_text = parts[1].partition("/")
        if (
            not port_text.isdigit()
            or int(port_text) > 65535
            or (slash and not count_text.isdigit())
        ):
            raise RemoteProtocolError(f"bad SDP media port m={value!r}")
        head = MediaDescription(
            media=parts[0],
            port=int(port_text),
            port_count=int(count_text) if slash else None,
            proto=parts[2],
            formats=tuple(parts[3:]),
        )
        return cls(head=head)

    def add(self, kind: str, value: str) -> None:
        if kind == "a":
            self.attributes.append(Attribute.parse(value))
        elif kind == "c" and self.connection is None:
            self.connection = Connection.parse(value)
        elif kind in _MEDIA_EXTRA or kind == "c":
            self.lines.append((kind, value))
        else:
            raise RemoteProtocolError(
                f"unexpected SDP line {kind}= in media", status=NOT_ACCEPTABLE
            )

    def build(self) -> MediaDescription:
        head = self.head  # built directly: dataclasses.replace costs more than the rest
        return MediaDescription(
            media=head.media,
            port=head.port,
            port_count=head.port_count,
            proto=head.proto,
            formats=head.formats,
            connection=self.connection,
            lines=tuple(self.lines),
            attributes=tuple(self.attributes),
        )


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
        origin=_our_origin(address, session_id, session_version),
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
        origin=_our_origin(local_address, session_id, session_version),
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
    """Give ``new`` the o= identity of what we last sent on this dialog: same session id, and
    a version one higher only if something other than o= changed (RFC 3264 §8)."""
    if previous is None:
        return new
    same_origin = replace(new.origin, session_id=previous.origin.session_id,
                          session_version=previous.origin.session_version)  # fmt: skip
    unchanged = bytes(new.with_(origin=same_origin)) == bytes(previous.with_(origin=same_origin))
    version = previous.origin.session_version + (0 if unchanged else 1)
    return new.with_(origin=replace(same_origin, session_version=version))


def _set_direction(attributes: list[Attribute], direction: Direction) -> list[Attribute]:
    out: list[Attribute] = []
    placed = False
    for attr in attributes:
        if attr.value is None and attr.name in _DIRECTIONS:
            if not placed:
                out.append(Attribute(name=direction.value))
                placed = True
        else:
            out.append(attr)
    if not placed:
        out.append(Attribute(name=direction.value))
    return out


def _our_origin(address: str, session_id: int, session_version: int) -> Origin:
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
