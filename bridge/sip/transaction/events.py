"""What the transaction layer hands back: datagrams to send and events for the TU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from bridge.sip.message import Request, Response

Address: TypeAlias = tuple[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """Bytes for the transport. A response over a reliable transport goes over the connection
    its request came on, which the transport knows by the request's source: ``destination``.
    If that one is closed, RFC 3261 §18.2.2 has a new one opened to ``fallback``, the Via's
    ``received`` address and sent-by port: the source port was the peer's ephemeral one, and
    nothing listens there. A failure is reported for ``destination``, which is how the
    transaction layer knows the transaction."""

    data: bytes
    destination: Address
    transport: str
    fallback: Address | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A new request. ``server_key`` is None for an ACK (to our 2xx, or stray): it has no
    transaction of its own (§17.1.1.3) and needs no response."""

    request: Request
    source: Address
    transport: str
    server_key: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived:
    """A response for a client transaction; ``client_key`` is None for a 2xx to an INVITE whose
    transaction is gone: the TU must ACK it again (§13.2.2.4)."""

    response: Response
    client_key: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTimeout:
    """Timer B/F (or the §9.1 CANCEL guard) fired: the TU treats it as a 408 (§8.1.3.1)."""

    client_key: str
    request: Request


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTransportError:
    """The request could not be sent: the TU treats it as a 503 (§8.1.3.1)."""

    client_key: str
    request: Request


@dataclass(frozen=True, slots=True, kw_only=True)
class AckTimeout:
    """Our 2xx to an INVITE got no ACK within 64*T1: the TU should send BYE (§13.3.1.4)."""

    server_key: str
    request: Request


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTimeout:
    """A server transaction ended without its exchange completing: Timer H (no ACK for our
    non-2xx final, §17.2.1) or a non-INVITE the TU never answered. Informational."""

    server_key: str
    request: Request


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTransportError:
    """A response could not be delivered (§17.2.4); the transaction is gone.

    ``request`` is None when a non-INVITE transaction failed in Completed: it had sent its
    final response and, only resending it now (§17.2.2), had dropped the request so as not to
    hold it for Timer J's 64*T1. The TU's part of that exchange is over; ``server_key`` still
    names the transaction. The INVITE states that can fail keep the INVITE."""

    server_key: str
    request: Request | None


Event: TypeAlias = (
    RequestReceived
    | ResponseReceived
    | ClientTimeout
    | ClientTransportError
    | AckTimeout
    | ServerTimeout
    | ServerTransportError
)
