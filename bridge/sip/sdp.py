"""SDP session descriptions (RFC 4566) and the audio offer/answer model (RFC 3264).

Theory of operation: a description is parsed into immutable values that keep every line the
bridge does not interpret (unknown attributes, bandwidth, keys, timing repeats) in its original
order, so ``bytes(SessionDescription.parse(data)) == data`` for any well-ordered description with
CRLF line ends. The bridge anchors media, so the only edits it makes to a peer's description are
the ones that redirect audio through its relay (:func:`rewrite_connection`) or change direction
(:func:`with_direction`), and its o= line, for which the bridge's own session with the receiving
party stands in (RFC 3264 §8, :func:`follow_version`); everything else travels unchanged to the
other leg. Offers and answers the bridge writes itself come from :func:`make_offer` and
:func:`answer`.

Errors are the peer's fault and carry the status to answer with: 400 for a description that is
not SDP at all, 488 (RFC 3261 §21.4.26) for one we understand but cannot accept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from bridge.sip.errors import RemoteProtocolError

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


DIRECTIONS = frozenset(d.value for d in Direction)
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


_CODECS: dict[tuple[tuple[str, ...], tuple[Attribute, ...]], tuple[Codec, ...]] = {}
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
        # Asked several times per call, of descriptions rewritten from one another and of
        # phones that offer the same formats call after call: remembered by what they derive
        # from, the formats and the attributes.
        key = (self.formats, self.attributes)
        hit = _CODECS.get(key)
        if hit is not None:
            return list(hit)
        out = self._codecs()
        if len(_CODECS) >= _CODECS_REMEMBERED:
            _CODECS.clear()
        _CODECS[key] = tuple(out)
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
        if attr.value is None and attr.name in DIRECTIONS:
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
