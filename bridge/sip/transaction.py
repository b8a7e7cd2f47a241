"""SIP transactions (RFC 3261 §17 with RFC 6026's Accepted state), sans-IO.

Theory of operation
-------------------
A transaction is one request and the responses to it. The layer owns four state machines,
each written as ONE table ``(state, input) -> (next state, actions)``:

* client INVITE (§17.1.1, RFC 6026 §7.2), client non-INVITE (§17.1.2),
* server INVITE (§17.2.1, RFC 6026 §7.1), server non-INVITE (§17.2.2).

Inputs are messages (a response class, a retransmitted request, an ACK), responses the TU
passes down, a transport error, or a timer. A pair missing from a table is absorbed: that is
how retransmissions die here instead of reaching the TU. Actions are either :class:`Do`
steps or a :class:`Timer`, meaning "arm that timer"; a timer of zero length (D, I, J, K over a
reliable transport) fires at once, so such transactions end in the same call.

Beyond the RFC's transaction duties the layer also does the parts of the TU that only exist to
make INVITE reliable end to end, because every user of this layer would otherwise repeat them:
it retransmits a 2xx until the ACK comes (§13.3.1.4) and re-sends our ACK for each retransmitted
2xx (§13.2.2.4). Two guards that the RFC leaves to the TU stop leaks: an INVITE we cancelled
ends 64*T1 after the CANCEL even if no final response ever comes (§9.1), and a non-INVITE
server transaction that the TU never answers ends when the client has given up (Timer F).

Timers live in one heap with lazy deletion: a heap entry is valid only while its transaction
still holds the same token for that timer, so stopping a timer is a dict operation and the
heap is compacted when stale entries outnumber live ones.

The layer returns events and queues datagrams (:class:`Outgoing`); it never touches a socket.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from dataclasses import dataclass
from enum import Enum, auto
from typing import TypeAlias

from bridge.sip.errors import LocalProtocolError, RemoteProtocolError
from bridge.sip.headers import Headers, Via
from bridge.sip.message import Message, Request, Response, make_response
from bridge.sip.uri import has_param

Address: TypeAlias = tuple[str, int]

MAGIC_COOKIE = "z9hG4bK"
RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "WS", "WSS"})


def new_branch() -> str:
    """A branch unique in space and time, with the §8.1.1.7 magic cookie."""
    return MAGIC_COOKIE + secrets.token_hex(8)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    data: bytes
    destination: Address
    transport: str


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
    """A response could not be delivered (§17.2.4); the transaction is gone."""

    server_key: str
    request: Request


Event: TypeAlias = (
    RequestReceived
    | ResponseReceived
    | ClientTimeout
    | ClientTransportError
    | AckTimeout
    | ServerTimeout
    | ServerTransportError
)


# --------------------------------------------------------------------------- state machines


class State(Enum):
    CALLING = auto()
    TRYING = auto()
    PROCEEDING = auto()
    COMPLETED = auto()
    CONFIRMED = auto()
    ACCEPTED = auto()  # RFC 6026: 2xx sent/received, waiting out retransmissions
    ACKED = auto()  # server Accepted after the ACK for our 2xx: only absorbs now
    TERMINATED = auto()


class Input(Enum):
    PROVISIONAL = auto()  # 1xx received (client) or passed down by the TU (server)
    SUCCESS = auto()  # 2xx, same two directions
    FAILURE = auto()  # 300-699, same two directions
    RETRANSMISSION = auto()  # the server transaction's request arrived again
    ACK = auto()
    CANCEL_SENT = auto()  # the TU sent a CANCEL for this client INVITE
    TRANSPORT_ERROR = auto()


class Timer(Enum):
    A = auto()
    B = auto()
    D = auto()
    E = auto()
    F = auto()
    G = auto()
    H = auto()
    I = auto()  # noqa: E741 - the RFC's name
    J = auto()
    K = auto()
    L = auto()
    M = auto()
    RETRANSMIT_2XX = auto()  # §13.3.1.4, the TU's 2xx retransmission
    TRYING_100 = auto()  # §17.2.1: answer 100 ourselves if the TU is silent for 200 ms
    CANCEL_GUARD = auto()  # §9.1: give up on a cancelled INVITE after 64*T1
    ANSWER_GUARD = auto()  # a non-INVITE the TU never answered, dropped after 64*T1


class Do(Enum):
    PASS_UP = auto()  # hand the message to the TU
    SEND_ACK = auto()  # client: ACK a non-2xx final (§17.1.1.3)
    REACK_OR_PASS_UP = auto()  # client Accepted: a 2xx again (§13.2.2.4)
    RETRANSMIT_REQUEST = auto()
    SEND_RESPONSE = auto()  # server: the TU's response becomes the one retransmitted
    SEND_TRYING = auto()
    RESEND_RESPONSE = auto()
    BACK_OFF = auto()  # re-arm the retransmit timer that fired at double the interval
    REARM_AT_T2 = auto()  # Timer E in Proceeding (§17.1.2.2)
    STOP_TIMERS = auto()
    STOP_RETRANSMIT = auto()
    GUARD_IF_CANCELLED = auto()
    EXPECT_ACK = auto()  # index the Accepted server INVITE by dialog, for the 2xx ACK
    REPORT_TIMEOUT = auto()
    REPORT_ACK_TIMEOUT = auto()
    REPORT_SERVER_TIMEOUT = auto()
    REPORT_TRANSPORT_ERROR = auto()


Action: TypeAlias = Do | Timer
Table: TypeAlias = dict[tuple[State, Input | Timer], tuple[State, tuple[Action, ...]]]

St, In, Tm = State, Input, Timer

_INVITE_FINAL = (Do.STOP_TIMERS, Do.SEND_ACK, Do.PASS_UP, Tm.D)
_INVITE_2XX = (Do.STOP_TIMERS, Do.PASS_UP, Tm.M)

CLIENT_INVITE: Table = {
    (St.CALLING, In.PROVISIONAL): (
        St.PROCEEDING,
        (Do.STOP_TIMERS, Do.PASS_UP, Do.GUARD_IF_CANCELLED),
    ),
    (St.CALLING, In.SUCCESS): (St.ACCEPTED, _INVITE_2XX),
    (St.CALLING, In.FAILURE): (St.COMPLETED, _INVITE_FINAL),
    (St.CALLING, In.CANCEL_SENT): (St.CALLING, ()),  # Timer B already bounds it
    (St.CALLING, Tm.A): (St.CALLING, (Do.RETRANSMIT_REQUEST, Do.BACK_OFF)),
    (St.CALLING, Tm.B): (St.TERMINATED, (Do.REPORT_TIMEOUT,)),
    (St.CALLING, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (St.PROCEEDING, In.PROVISIONAL): (St.PROCEEDING, (Do.PASS_UP,)),
    (St.PROCEEDING, In.SUCCESS): (St.ACCEPTED, _INVITE_2XX),
    (St.PROCEEDING, In.FAILURE): (St.COMPLETED, _INVITE_FINAL),
    (St.PROCEEDING, In.CANCEL_SENT): (St.PROCEEDING, (Tm.CANCEL_GUARD,)),
    (St.PROCEEDING, Tm.CANCEL_GUARD): (St.TERMINATED, (Do.REPORT_TIMEOUT,)),
    (St.PROCEEDING, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (St.COMPLETED, In.FAILURE): (St.COMPLETED, (Do.SEND_ACK,)),
    (St.COMPLETED, Tm.D): (St.TERMINATED, ()),
    (St.COMPLETED, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (St.ACCEPTED, In.SUCCESS): (St.ACCEPTED, (Do.REACK_OR_PASS_UP,)),
    (St.ACCEPTED, Tm.M): (St.TERMINATED, ()),
}

_NON_INVITE_FINAL = (Do.STOP_TIMERS, Do.PASS_UP, Tm.K)

CLIENT_NON_INVITE: Table = {
    (St.TRYING, In.PROVISIONAL): (St.PROCEEDING, (Do.PASS_UP,)),
    (St.TRYING, In.SUCCESS): (St.COMPLETED, _NON_INVITE_FINAL),
    (St.TRYING, In.FAILURE): (St.COMPLETED, _NON_INVITE_FINAL),
    (St.TRYING, Tm.E): (St.TRYING, (Do.RETRANSMIT_REQUEST, Do.BACK_OFF)),
    (St.TRYING, Tm.F): (St.TERMINATED, (Do.REPORT_TIMEOUT,)),
    (St.TRYING, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (St.PROCEEDING, In.PROVISIONAL): (St.PROCEEDING, (Do.PASS_UP,)),
    (St.PROCEEDING, In.SUCCESS): (St.COMPLETED, _NON_INVITE_FINAL),
    (St.PROCEEDING, In.FAILURE): (St.COMPLETED, _NON_INVITE_FINAL),
    (St.PROCEEDING, Tm.E): (St.PROCEEDING, (Do.RETRANSMIT_REQUEST, Do.REARM_AT_T2)),
    (St.PROCEEDING, Tm.F): (St.TERMINATED, (Do.REPORT_TIMEOUT,)),
    (St.PROCEEDING, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (St.COMPLETED, Tm.K): (St.TERMINATED, ()),
}

SERVER_INVITE: Table = {
    (St.PROCEEDING, Tm.TRYING_100): (St.PROCEEDING, (Do.SEND_TRYING,)),
    (St.PROCEEDING, In.RETRANSMISSION): (St.PROCEEDING, (Do.RESEND_RESPONSE,)),
    (St.PROCEEDING, In.PROVISIONAL): (St.PROCEEDING, (Do.STOP_TIMERS, Do.SEND_RESPONSE)),
    (St.PROCEEDING, In.SUCCESS): (
        St.ACCEPTED,
        (Do.STOP_TIMERS, Do.SEND_RESPONSE, Do.EXPECT_ACK, Tm.RETRANSMIT_2XX, Tm.L),
    ),
    (St.PROCEEDING, In.FAILURE): (St.COMPLETED, (Do.STOP_TIMERS, Do.SEND_RESPONSE, Tm.G, Tm.H)),
    (St.PROCEEDING, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (St.COMPLETED, In.RETRANSMISSION): (St.COMPLETED, (Do.RESEND_RESPONSE,)),
    (St.COMPLETED, In.ACK): (St.CONFIRMED, (Do.STOP_TIMERS, Tm.I)),
    (St.COMPLETED, Tm.G): (St.COMPLETED, (Do.RESEND_RESPONSE, Do.BACK_OFF)),
    (St.COMPLETED, Tm.H): (St.TERMINATED, (Do.REPORT_SERVER_TIMEOUT,)),
    (St.COMPLETED, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (St.CONFIRMED, Tm.I): (St.TERMINATED, ()),
    (St.ACCEPTED, In.SUCCESS): (St.ACCEPTED, (Do.SEND_RESPONSE,)),
    (St.ACCEPTED, In.ACK): (St.ACKED, (Do.STOP_RETRANSMIT, Do.PASS_UP)),
    (St.ACCEPTED, Tm.RETRANSMIT_2XX): (St.ACCEPTED, (Do.RESEND_RESPONSE, Do.BACK_OFF)),
    (St.ACCEPTED, Tm.L): (St.TERMINATED, (Do.REPORT_ACK_TIMEOUT,)),
    (St.ACCEPTED, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (St.ACKED, Tm.L): (St.TERMINATED, ()),
}

_SERVER_FINAL = (Do.STOP_TIMERS, Do.SEND_RESPONSE, Tm.J)

SERVER_NON_INVITE: Table = {
    (St.TRYING, In.PROVISIONAL): (St.PROCEEDING, (Do.SEND_RESPONSE,)),
    (St.TRYING, In.SUCCESS): (St.COMPLETED, _SERVER_FINAL),
    (St.TRYING, In.FAILURE): (St.COMPLETED, _SERVER_FINAL),
    (St.TRYING, Tm.ANSWER_GUARD): (St.TERMINATED, (Do.REPORT_SERVER_TIMEOUT,)),
    (St.TRYING, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (St.PROCEEDING, In.RETRANSMISSION): (St.PROCEEDING, (Do.RESEND_RESPONSE,)),
    (St.PROCEEDING, In.PROVISIONAL): (St.PROCEEDING, (Do.SEND_RESPONSE,)),
    (St.PROCEEDING, In.SUCCESS): (St.COMPLETED, _SERVER_FINAL),
    (St.PROCEEDING, In.FAILURE): (St.COMPLETED, _SERVER_FINAL),
    (St.PROCEEDING, Tm.ANSWER_GUARD): (St.TERMINATED, (Do.REPORT_SERVER_TIMEOUT,)),
    (St.PROCEEDING, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (St.COMPLETED, In.RETRANSMISSION): (St.COMPLETED, (Do.RESEND_RESPONSE,)),
    (St.COMPLETED, Tm.J): (St.TERMINATED, ()),
    (St.COMPLETED, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
}

_RETRANSMIT_TIMERS = (Tm.A, Tm.E, Tm.G, Tm.RETRANSMIT_2XX)


def _status_input(status: int) -> Input:
    if status < 200:
        return In.PROVISIONAL
    return In.SUCCESS if status < 300 else In.FAILURE


# --------------------------------------------------------------------------- keys and helpers


def client_key(branch: str, method: str) -> str:
    """§17.1.3: a response matches by the top Via branch and the CSeq method."""
    return f"{branch} {method}"


def server_key(request: Request, via: Via, *, method: str | None = None) -> str:
    """§17.2.3: branch, sent-by and method, with ACK matching the INVITE.

    Requests without the magic cookie (RFC 2543 peers) get a key from the fields their
    retransmissions and non-2xx ACKs keep unchanged; full §17.2.3 fallback matching is not done.
    """
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    sent_by = f"{via.host.lower()}:{via.port or ''}"
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return f"{branch} {sent_by} {method}"
    cseq = request.cseq
    return f"2543 {request.call_id} {request.from_.tag} {cseq.seq} {sent_by} {method}"


def is_reliable(transport: str) -> bool:
    return transport.upper() in RELIABLE_TRANSPORTS


def _bare_host(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def stamp_via(request: Request, source: Address) -> Via:
    """§18.2.1 + RFC 3581: record where the request really came from in its top Via, so every
    response built from it (make_response copies Via) goes back the way it came."""
    via = request.top_via
    host, port = source
    stamped = via
    if has_param(via.params, "rport"):
        stamped = stamped.with_param("received", host).with_param("rport", str(port))
    elif _bare_host(via.host) != host:
        stamped = stamped.with_param("received", host)
    if stamped is not via:
        _replace_top_via(request, str(stamped))
    return stamped


def _replace_top_via(request: Request, value: str) -> None:
    """Headers has no in-place replace (message.py belongs to another module); rebuild."""
    items: list[tuple[str, str]] = []
    done = False
    for name, old in request.headers:
        if not done and name == "Via":
            items.append((name, value))
            done = True
        else:
            items.append((name, old))
    request.headers = Headers(items)


def response_address(via: Via, source: Address, transport: str) -> Address:
    """§18.2.2 (with RFC 3581): where responses to a request go."""
    if is_reliable(transport):
        return source
    rport = via.param("rport")
    host = via.param("received") or _bare_host(via.host)
    if rport and rport.isdigit():
        return host, int(rport)
    return host, via.port or 5060


def build_non2xx_ack(request: Request, response: Response) -> Request:
    """§17.1.1.3: the ACK for a 300-699 is part of the INVITE transaction, so it keeps the
    INVITE's Request-URI, top Via and Route set; only To (with the response's tag) is new."""
    headers = Headers()
    headers.add("Via", request.headers.get("Via") or "")
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", request.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq.seq} ACK")
    return Request(method="ACK", uri=request.uri, headers=headers)


def build_cancel(invite: Request) -> Request:
    """§9.1: a CANCEL must match the INVITE's transaction hop by hop (same top Via branch) and
    reach the same place (same Request-URI and Route set)."""
    headers = Headers()
    headers.add("Via", invite.headers.get("Via") or "")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        headers.add(name, invite.headers.get(name) or "")
    headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
    return Request(method="CANCEL", uri=invite.uri, headers=headers)


# --------------------------------------------------------------------------- the layer


class _Transaction:
    __slots__ = (
        "ack_index",
        "ack_out",
        "acks",
        "cancelled",
        "destination",
        "interval",
        "is_client",
        "key",
        "reliable",
        "request",
        "request_out",
        "response_out",
        "state",
        "table",
        "timers",
        "transport",
    )

    def __init__(
        self,
        *,
        key: str,
        table: Table,
        state: State,
        request: Request,
        destination: Address,
        transport: str,
        is_client: bool,
    ) -> None:
        self.key = key
        self.table = table
        self.state = state
        self.request = request
        self.destination = destination
        self.transport = transport
        self.reliable = is_reliable(transport)
        self.is_client = is_client
        self.request_out: Outgoing | None = None
        self.response_out: Outgoing | None = None
        self.ack_out: Outgoing | None = None
        # client Accepted: To tag of each 2xx seen -> our ACK for it once the TU sent one
        self.acks: dict[str | None, Outgoing | None] = {}
        self.ack_index: tuple[str, str | None, int] | None = None
        self.cancelled = False
        self.interval = 0.0
        self.timers: dict[Timer, int] = {}


class TransactionLayer:
    """All live transactions of one SIP endpoint, keyed as §17.1.3/§17.2.3 match them."""

    def __init__(self, *, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0) -> None:
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        long = 64 * t1
        # None: not armed on that kind of transport; 0: fires at once (§17, "zero for reliable").
        unreliable: dict[Timer, float | None] = {
            Tm.A: t1, Tm.B: long, Tm.D: max(32.0, long), Tm.E: t1, Tm.F: long, Tm.G: t1, Tm.H: long,
            Tm.I: t4, Tm.J: long, Tm.K: t4, Tm.L: long, Tm.M: long, Tm.RETRANSMIT_2XX: t1,
            Tm.CANCEL_GUARD: long, Tm.ANSWER_GUARD: long, Tm.TRYING_100: 0.2,
        }  # fmt: skip
        reliable = dict(unreliable)
        reliable.update({Tm.A: None, Tm.E: None, Tm.G: None, Tm.D: 0, Tm.I: 0, Tm.J: 0, Tm.K: 0})
        self._durations = {False: unreliable, True: reliable}
        self._transactions: dict[str, _Transaction] = {}
        self._accepted_by_dialog: dict[tuple[str, str | None, int], str] = {}
        self._by_destination: dict[tuple[Address, str], set[str]] = {}
        self._heap: list[tuple[float, int, str, Timer]] = []
        self._tokens = itertools.count()
        self._outgoing: list[Outgoing] = []
        self._events: list[Event] = []

    def __len__(self) -> int:
        return len(self._transactions)

    # ------------------------------------------------------------------ inputs from the wire

    def receive(self, message: Message, source: Address, transport: str, now: float) -> list[Event]:
        """Feed one parsed message. A request the layer cannot key raises RemoteProtocolError
        (answer it statelessly); an unmatched or malformed response is dropped (§18.1.2)."""
        transport = transport.upper()
        if isinstance(message, Response):
            self._receive_response(message, now)
        else:
            self._receive_request(message, source, transport, now)
        return self._take_events()

    def _receive_response(self, response: Response, now: float) -> None:
        try:
            branch = response.top_via.branch
            method = response.cseq.method
        except RemoteProtocolError:
            return
        tx = self._transactions.get(client_key(branch or "", method))
        if tx is None:
            if method == "INVITE" and 200 <= response.status < 300:
                self._events.append(ResponseReceived(response=response, client_key=None))
            return
        self._fire(tx, _status_input(response.status), now, message=response)

    def _receive_request(
        self, request: Request, source: Address, transport: str, now: float
    ) -> None:
        original_via = request.top_via
        key = server_key(request, original_via)
        via = stamp_via(request, source)
        tx = self._transactions.get(key)
        if request.method == "ACK":
            if tx is None:
                cseq = request.cseq
                dialog = (request.call_id, request.from_.tag, cseq.seq)
                found = self._accepted_by_dialog.get(dialog)
                tx = self._transactions.get(found) if found is not None else None
            if tx is None:
                self._events.append(
                    RequestReceived(
                        request=request, source=source, transport=transport, server_key=None
                    )
                )
            else:
                self._fire(tx, In.ACK, now, message=request, origin=(source, transport))
            return
        if tx is not None:
            self._fire(tx, In.RETRANSMISSION, now)
            return
        invite = request.method == "INVITE"
        tx = _Transaction(
            key=key,
            table=SERVER_INVITE if invite else SERVER_NON_INVITE,
            state=St.PROCEEDING if invite else St.TRYING,
            request=request,
            destination=response_address(via, source, transport),
            transport=transport,
            is_client=False,
        )
        self._add(tx)
        self._events.append(
            RequestReceived(request=request, source=source, transport=transport, server_key=key)
        )
        self._arm(tx, Tm.TRYING_100 if invite else Tm.ANSWER_GUARD, now)

    def transport_error(self, destination: Address, transport: str, now: float) -> list[Event]:
        """The transport could not reach ``destination`` (ICMP error, failed TCP connect):
        every transaction sending there fails (§17.1.1.2, §17.1.2.2, §17.2.4)."""
        keys = self._by_destination.get((destination, transport.upper()))
        for key in list(keys or ()):
            tx = self._transactions.get(key)
            if tx is not None:
                self._fire(tx, In.TRANSPORT_ERROR, now)
        return self._take_events()

    # ------------------------------------------------------------------ inputs from the TU

    def send_request(
        self, request: Request, destination: Address, transport: str, now: float
    ) -> str:
        """Start a client transaction for ``request``, whose top Via already has a fresh
        branch; returns its key."""
        if request.method == "ACK":
            raise LocalProtocolError("an ACK is not a transaction: use send_ack")
        branch = request.top_via.branch
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            raise LocalProtocolError("the top Via needs a branch with the magic cookie")
        key = client_key(branch, request.method)
        if key in self._transactions:
            raise LocalProtocolError(f"branch {branch} is already in use for {request.method}")
        transport = transport.upper()
        invite = request.method == "INVITE"
        tx = _Transaction(
            key=key,
            table=CLIENT_INVITE if invite else CLIENT_NON_INVITE,
            state=St.CALLING if invite else St.TRYING,
            request=request,
            destination=destination,
            transport=transport,
            is_client=True,
        )
        self._add(tx)
        tx.request_out = self._send(request, tx)
        for timer in (Tm.A, Tm.B) if invite else (Tm.E, Tm.F):
            self._arm(tx, timer, now)
        if request.method == "CANCEL":
            invite_tx = self._transactions.get(client_key(branch, "INVITE"))
            if invite_tx is not None:
                invite_tx.cancelled = True
                self._fire(invite_tx, In.CANCEL_SENT, now)
        return key

    def send_response(self, server_key: str, response: Response, now: float) -> bool:
        """Send the TU's response through its server transaction. Returns False when the
        transaction is already gone (a race with a timer or transport error, not a bug)."""
        tx = self._transactions.get(server_key)
        if tx is None or tx.is_client:
            return False
        if not self._fire(tx, _status_input(response.status), now, message=response):
            raise LocalProtocolError(
                f"cannot send {response.status} in state {tx.state.name} of {server_key}"
            )
        return True

    def send_ack(
        self, client_key: str | None, ack: Request, destination: Address, transport: str
    ) -> None:
        """Send the ACK for a 2xx (its own transaction-less request, §13.2.2.4) and, while the
        INVITE transaction lives, re-send it for every retransmission of that 2xx."""
        out = Outgoing(data=bytes(ack), destination=destination, transport=transport.upper())
        self._outgoing.append(out)
        tx = self._transactions.get(client_key) if client_key is not None else None
        if tx is not None and tx.state is St.ACCEPTED:
            tx.acks[ack.to.tag] = out

    def send_stateless(self, message: Message, destination: Address, transport: str) -> None:
        self._outgoing.append(
            Outgoing(data=bytes(message), destination=destination, transport=transport.upper())
        )

    def find_invite_server(self, cancel: Request) -> str | None:
        """§9.2: the INVITE server transaction a CANCEL is meant for (same key but the method)."""
        key = server_key(cancel, cancel.top_via, method="INVITE")
        tx = self._transactions.get(key)
        return key if tx is not None and not tx.is_client else None

    def state_of(self, key: str) -> State | None:
        tx = self._transactions.get(key)
        return tx.state if tx is not None else None

    # ------------------------------------------------------------------ time and output

    def handle_timers(self, now: float) -> list[Event]:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, token, key, timer = heapq.heappop(heap)
            tx = self._transactions.get(key)
            if tx is None or tx.timers.get(timer) != token:
                continue
            del tx.timers[timer]
            # Re-arming from the deadline, not from ``now``, keeps the RFC schedule exact
            # however late the caller polls.
            self._fire(tx, timer, deadline)
        return self._take_events()

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            _, token, key, timer = heap[0]
            tx = self._transactions.get(key)
            if tx is not None and tx.timers.get(timer) == token:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def take_outgoing(self) -> list[Outgoing]:
        out, self._outgoing = self._outgoing, []
        return out

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------------ the machine

    def _fire(
        self,
        tx: _Transaction,
        event: Input | Timer,
        now: float,
        *,
        message: Message | None = None,
        origin: tuple[Address, str] | None = None,
    ) -> bool:
        row = tx.table.get((tx.state, event))
        if row is None:
            return False
        tx.state, actions = row
        for action in actions:
            if isinstance(action, Timer):
                self._arm(tx, action, now)
            else:
                self._do(tx, action, event, now, message, origin)
        if tx.state is St.TERMINATED:
            self._remove(tx)
        return True

    def _do(
        self,
        tx: _Transaction,
        action: Do,
        event: Input | Timer,
        now: float,
        message: Message | None,
        origin: tuple[Address, str] | None,
    ) -> None:
        if action is Do.PASS_UP:
            self._pass_up(tx, message, origin)
        elif action is Do.SEND_ACK:
            if tx.ack_out is None and isinstance(message, Response):
                ack = build_non2xx_ack(tx.request, message)
                tx.ack_out = Outgoing(
                    data=bytes(ack), destination=tx.destination, transport=tx.transport
                )
            if tx.ack_out is not None:
                self._outgoing.append(tx.ack_out)
        elif action is Do.REACK_OR_PASS_UP:
            assert isinstance(message, Response)
            tag = message.to.tag
            if tag not in tx.acks:
                self._pass_up(tx, message, origin)
            elif (ack_out := tx.acks[tag]) is not None:
                self._outgoing.append(ack_out)
        elif action is Do.RETRANSMIT_REQUEST:
            if tx.request_out is not None:
                self._outgoing.append(tx.request_out)
        elif action is Do.SEND_RESPONSE:
            assert isinstance(message, Response)
            tx.response_out = self._send(message, tx)
        elif action is Do.SEND_TRYING:
            tx.response_out = self._send(make_response(tx.request, 100), tx)
        elif action is Do.RESEND_RESPONSE:
            if tx.response_out is not None:
                self._outgoing.append(tx.response_out)
        elif action is Do.BACK_OFF:
            assert isinstance(event, Timer)
            doubled = tx.interval * 2
            tx.interval = doubled if event is Tm.A else min(doubled, self.t2)
            self._arm_after(tx, event, now, tx.interval)
        elif action is Do.REARM_AT_T2:
            assert isinstance(event, Timer)
            tx.interval = self.t2
            self._arm_after(tx, event, now, self.t2)
        elif action is Do.STOP_TIMERS:
            tx.timers.clear()
        elif action is Do.STOP_RETRANSMIT:
            for timer in _RETRANSMIT_TIMERS:
                tx.timers.pop(timer, None)
        elif action is Do.GUARD_IF_CANCELLED:
            if tx.cancelled:
                self._arm(tx, Tm.CANCEL_GUARD, now)
        elif action is Do.EXPECT_ACK:
            request = tx.request
            tx.ack_index = (request.call_id, request.from_.tag, request.cseq.seq)
            self._accepted_by_dialog[tx.ack_index] = tx.key
        elif action is Do.REPORT_TIMEOUT:
            self._events.append(ClientTimeout(client_key=tx.key, request=tx.request))
        elif action is Do.REPORT_ACK_TIMEOUT:
            self._events.append(AckTimeout(server_key=tx.key, request=tx.request))
        elif action is Do.REPORT_SERVER_TIMEOUT:
            self._events.append(ServerTimeout(server_key=tx.key, request=tx.request))
        elif action is Do.REPORT_TRANSPORT_ERROR:
            if tx.is_client:
                self._events.append(ClientTransportError(client_key=tx.key, request=tx.request))
            else:
                self._events.append(ServerTransportError(server_key=tx.key, request=tx.request))

    def _pass_up(
        self, tx: _Transaction, message: Message | None, origin: tuple[Address, str] | None
    ) -> None:
        if isinstance(message, Response):
            if tx.request.method == "INVITE" and 200 <= message.status < 300:
                tx.acks[message.to.tag] = None
            self._events.append(ResponseReceived(response=message, client_key=tx.key))
        elif isinstance(message, Request):
            source, transport = origin or (tx.destination, tx.transport)
            self._events.append(
                RequestReceived(
                    request=message, source=source, transport=transport, server_key=None
                )
            )

    def _send(self, message: Message, tx: _Transaction) -> Outgoing:
        out = Outgoing(data=bytes(message), destination=tx.destination, transport=tx.transport)
        self._outgoing.append(out)
        return out

    def _arm(self, tx: _Transaction, timer: Timer, now: float) -> None:
        duration = self._durations[tx.reliable][timer]
        if duration is None:
            return
        if timer in _RETRANSMIT_TIMERS:
            tx.interval = duration
        self._arm_after(tx, timer, now, duration)

    def _arm_after(self, tx: _Transaction, timer: Timer, now: float, delay: float) -> None:
        token = next(self._tokens)
        tx.timers[timer] = token
        if delay <= 0:
            # Zero-length timers (reliable transports) fire now; the caller's transition is
            # complete because arming is always the last step of a row.
            del tx.timers[timer]
            self._fire(tx, timer, now)
            return
        heapq.heappush(self._heap, (now + delay, token, tx.key, timer))
        if len(self._heap) > 1024 + 8 * len(self._transactions):
            self._compact()

    def _compact(self) -> None:
        live = self._transactions
        self._heap = [
            entry
            for entry in self._heap
            if (tx := live.get(entry[2])) is not None and tx.timers.get(entry[3]) == entry[1]
        ]
        heapq.heapify(self._heap)

    def _add(self, tx: _Transaction) -> None:
        self._transactions[tx.key] = tx
        self._by_destination.setdefault((tx.destination, tx.transport), set()).add(tx.key)

    def _remove(self, tx: _Transaction) -> None:
        if self._transactions.get(tx.key) is tx:
            del self._transactions[tx.key]
        tx.timers.clear()
        where = (tx.destination, tx.transport)
        keys = self._by_destination.get(where)
        if keys is not None:
            keys.discard(tx.key)
            if not keys:
                del self._by_destination[where]
        if tx.ack_index is not None and self._accepted_by_dialog.get(tx.ack_index) == tx.key:
            del self._accepted_by_dialog[tx.ack_index]
