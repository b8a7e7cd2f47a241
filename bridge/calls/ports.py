"""What the call core needs from the world, as protocols, so the core stays sans-IO.

The engine supplies real implementations (the dial plan router, the media relay); unit tests
supply small fakes. Everything here is synchronous: the media relay binds, registers and
releases its sockets without awaiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bridge.sip.message import Request
from bridge.sip.uri import SipUri

Address = tuple[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """One place to ring, in failover order."""

    uri: SipUri
    address: Address
    transport: str
    peer: str
    ring_timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteResult:
    origin: str
    destinations: tuple[Destination, ...]
    reason: str
    urgent: bool = False
    """Bound for the plan's urgent platform (110): never refused by the admission limits."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """Who sent an out-of-dialog request: a trusted trunk or an authenticated seat."""

    kind: str  # "trunk" | "seat"
    name: str
    platform: str


class Routing(Protocol):
    def identify(self, request: Request, source: Address) -> Origin | None:
        """A trunk by source address, or None (then the request must come from a seat)."""

    def route(self, request: Request, origin: Origin, now: float) -> RouteResult | None:
        """Where an incoming call goes; None when the plan has no route for it."""

    def match_feature_code(self, digits: str) -> Any:
        """A feature code object (with ``action`` and ``destination``), "partial", or None."""

    @property
    def digit_timeout(self) -> float: ...


MediaLeg = Any
"""One anchored media endpoint (RTP + RTCP port pair) facing one party: it has ``host`` and
``port``; what else is the media implementation's business."""


MixMode = Literal["full", "listen", "whisper"]
"""A conference member's audibility, named as the media mixer names it."""


class Media(Protocol):
    def allocate(self, near: MediaLeg | None = None) -> MediaLeg:
        """Raise :class:`MediaUnavailable` when the port pool is exhausted.

        ``near`` is a leg of the same call: media split over worker processes puts the new
        leg beside it, so relaying between them never crosses a process."""

    def point(
        self,
        leg: MediaLeg,
        host: str,
        port: int,
        payload_type: int | None,
        *,
        telephone_event_pt: int | None,
    ) -> None:
        """Send this leg's audio to ``host:port`` as ``payload_type`` (from its SDP).

        ``telephone_event_pt`` is the leg's RFC 4733 event payload type in this session, or
        None when it has none: the type DTMF from the party is recognised by and the one
        events are sent to it as. A new offer may renumber it (RFC 3264 §8.3.2), so every
        point sets it, None included (payload_type None keeps the codec)."""

    def connect(self, a: MediaLeg, b: MediaLeg) -> None: ...

    def hold(self, leg: MediaLeg) -> None:
        """This leg hears the hold tone (or music) instead of anyone."""

    def unhold(self, leg: MediaLeg) -> None: ...

    def private_keys(self, leg: MediaLeg) -> None:
        """Detect this leg's DTMF but do not pass it on (the agent's transfer key)."""

    def conference(self, legs: list[MediaLeg]) -> None:
        """Everyone in ``legs`` hears everyone else (a three-way call). When some of them
        already share a conference holding no one else, it grows: they hear no gap and keep
        their modes; new members start at ``full``."""

    def set_mode(self, leg: MediaLeg, mode: MixMode, whisper_to: MediaLeg | None = None) -> None:
        """Who hears ``leg`` in its conference: everyone (``full``), no one (``listen``), or
        only ``whisper_to`` (``whisper``). The leg itself goes on hearing everyone."""

    def release(self, leg: MediaLeg) -> None: ...


class MediaUnavailable(Exception):
    """No media ports left: the call is refused with 503 rather than set up without audio."""
