"""The transaction layer: all live transactions of one SIP endpoint and their timers.

See :mod:`bridge.sip.transaction.machines` for the theory of operation. This module only
finds the transaction a message or timer belongs to and carries out the table's actions.

Timers live in one heap with lazy deletion: a heap entry is valid only while its transaction
still holds the same token for that timer, so stopping a timer is a dict operation, and the
heap is compacted when stale entries outnumber live ones (counted as timers are stopped, so
the cancelled timers of finished calls never outgrow the timers still running). Lookups are
dicts keyed as §17.1.3 and §17.2.3 match, plus two small indexes (the Accepted server INVITEs
by dialog for the 2xx ACK, the transactions by destination for transport errors), so nothing
scans all transactions. The layer returns events and queues datagrams; it never touches a socket.
"""

from __future__ import annotations

import heapq
import itertools
import sys

from bridge.sip.errors import LocalProtocolError, RemoteProtocolError
from bridge.sip.message import Message, Request, Response, make_response
from bridge.sip.transaction.events import (
    AckTimeout,
    Address,
    ClientTimeout,
    ClientTransportError,
    Event,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    ServerTimeout,
    ServerTransportError,
)
from bridge.sip.transaction.machines import (
    CLIENT_INVITE,
    CLIENT_NON_INVITE,
    RETRANSMIT_TIMERS,
    SERVER_INVITE,
    SERVER_NON_INVITE,
    Do,
    In,
    Input,
    St,
    State,
    Table,
    Timer,
    Tm,
    status_input,
)
from bridge.sip.transaction.wire import (
    MAGIC_COOKIE,
    build_non2xx_ack,
    client_key,
    is_reliable,
    response_address,
    response_fallback,
    server_key,
    stamp_via,
)


def _transport_name(transport: str) -> str:
    """Upper case and interned: every transaction over UDP shares one ``"UDP"`` string."""
    return sys.intern(transport.upper())


class _Transaction:
    """One transaction. ``request`` is None once the table has dropped it (``Do.DROP_REQUEST``,
    see "What a transaction keeps" in :mod:`.machines`); so are ``request_out`` and
    ``response_out`` once nothing can resend them."""

    __slots__ = (
        "ack_index",
        "ack_out",
        "acks",
        "cancelled",
        "destination",
        "fallback",
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
        fallback: Address | None = None,
    ) -> None:
        self.key = key
        self.table = table
        self.state = state
        self.request: Request | None = request
        self.destination = destination
        self.fallback = fallback
        self.transport = transport
        self.reliable = is_reliable(transport)
        self.is_client = is_client
        self.request_out: Outgoing | None = None
        self.response_out: Outgoing | None = None
        self.ack_out: Outgoing | None = None
        # client INVITE Accepted: To tag of each 2xx seen -> our ACK for it once the TU sent
        # one; None (no dict at all) in every other transaction
        self.acks: dict[str | None, Outgoing | None] | None = None
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
        self._stale = 0  # heap entries whose timer was stopped or re-armed since
        self._tokens = itertools.count()
        self._outgoing: list[Outgoing] = []
        self._events: list[Event] = []

    def __len__(self) -> int:
        return len(self._transactions)

    # ------------------------------------------------------------------ inputs from the wire

    def receive(self, message: Message, source: Address, transport: str, now: float) -> list[Event]:
        """Feed one parsed message. A request the layer cannot key raises RemoteProtocolError
        (answer it statelessly); an unmatched or malformed response is dropped (§18.1.2)."""
        transport = _transport_name(transport)
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
        self._fire(tx, status_input(response.status), now, message=response)

    def _receive_request(
        self, request: Request, source: Address, transport: str, now: float
    ) -> None:
        original_via = request.top_via
        key = server_key(request, original_via)
        via = stamp_via(request, source, original_via)
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
            fallback=response_fallback(via, transport),
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
        transport = _transport_name(transport)
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
        if not self._fire(tx, status_input(response.status), now, message=response):
            raise LocalProtocolError(
                f"cannot send {response.status} in state {tx.state.name} of {server_key}"
            )
        return True

    def send_ack(
        self, client_key: str | None, ack: Request, destination: Address, transport: str
    ) -> None:
        """Send the ACK for a 2xx (its own transaction-less request, §13.2.2.4) and, while the
        INVITE transaction lives, re-send it for every retransmission of that 2xx."""
        out = Outgoing(
            data=bytes(ack), destination=destination, transport=_transport_name(transport)
        )
        self._outgoing.append(out)
        tx = self._transactions.get(client_key) if client_key is not None else None
        if tx is not None and tx.state is St.ACCEPTED and tx.acks is not None:
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
                self._stale -= 1
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
            self._stale -= 1
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
            # Built once, on entering Completed, while the request is still held.
            if tx.ack_out is None and tx.request is not None and isinstance(message, Response):
                ack = build_non2xx_ack(tx.request, message)
                tx.ack_out = Outgoing(
                    data=bytes(ack), destination=tx.destination, transport=tx.transport
                )
            if tx.ack_out is not None:
                self._outgoing.append(tx.ack_out)
        elif action is Do.REACK_OR_PASS_UP:
            assert isinstance(message, Response)
            tag = message.to.tag
            if tx.acks is None or tag not in tx.acks:
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
            assert tx.request is not None  # Proceeding: dropped only after the ACK
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
            self._stop_timers(tx)
        elif action is Do.STOP_RETRANSMIT:
            for timer in RETRANSMIT_TIMERS:
                if tx.timers.pop(timer, None) is not None:
                    self._stale += 1
        elif action is Do.GUARD_IF_CANCELLED:
            if tx.cancelled:
                self._arm(tx, Tm.CANCEL_GUARD, now)
        elif action is Do.EXPECT_ACK:
            request = tx.request
            assert request is not None  # entering Accepted: dropped only after the ACK
            tx.ack_index = (request.call_id, request.from_.tag, request.cseq.seq)
            self._accepted_by_dialog[tx.ack_index] = tx.key
        elif action is Do.DROP_REQUEST:
            tx.request = None
        elif action is Do.DROP_REQUEST_OUT:
            tx.request_out = None
        elif action is Do.DROP_RESPONSE_OUT:
            tx.response_out = None
        else:
            self._report(tx, action)

    def _report(self, tx: _Transaction, action: Do) -> None:
        """The events for the TU. Only a server transport error can come after the request
        was dropped (non-INVITE Completed); every other report comes from a state that still
        holds it (see "What a transaction keeps" in :mod:`.machines`)."""
        request = tx.request
        if action is Do.REPORT_TRANSPORT_ERROR and not tx.is_client:
            self._events.append(ServerTransportError(server_key=tx.key, request=request))
            return
        assert request is not None, f"{action.name} in {tx.state.name} of {tx.key}"
        if action is Do.REPORT_TIMEOUT:
            self._events.append(ClientTimeout(client_key=tx.key, request=request))
        elif action is Do.REPORT_ACK_TIMEOUT:
            self._events.append(AckTimeout(server_key=tx.key, request=request))
        elif action is Do.REPORT_SERVER_TIMEOUT:
            self._events.append(ServerTimeout(server_key=tx.key, request=request))
        elif action is Do.REPORT_TRANSPORT_ERROR:
            self._events.append(ClientTransportError(client_key=tx.key, request=request))

    def _pass_up(
        self, tx: _Transaction, message: Message | None, origin: tuple[Address, str] | None
    ) -> None:
        if isinstance(message, Response):
            if tx.table is CLIENT_INVITE and 200 <= message.status < 300:
                if tx.acks is None:
                    tx.acks = {}
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
        out = Outgoing(
            data=bytes(message),
            destination=tx.destination,
            transport=tx.transport,
            fallback=tx.fallback,
        )
        self._outgoing.append(out)
        return out

    def _arm(self, tx: _Transaction, timer: Timer, now: float) -> None:
        duration = self._durations[tx.reliable][timer]
        if duration is None:
            return
        if timer in RETRANSMIT_TIMERS:
            tx.interval = duration
        self._arm_after(tx, timer, now, duration)

    def _arm_after(self, tx: _Transaction, timer: Timer, now: float, delay: float) -> None:
        token = next(self._tokens)
        if tx.timers.get(timer) is not None:
            self._stale += 1  # re-armed before it fired: its entry is dead
        tx.timers[timer] = token
        if delay <= 0:
            # Zero-length timers (reliable transports) fire now; the caller's transition is
            # complete because arming is always the last step of a row.
            del tx.timers[timer]
            self._fire(tx, timer, now)
            return
        heapq.heappush(self._heap, (now + delay, token, tx.key, timer))
        if 2 * self._stale > len(self._heap) + 1024:  # stale > live + 1024
            self._compact()

    def _stop_timers(self, tx: _Transaction) -> None:
        self._stale += len(tx.timers)
        tx.timers.clear()

    def _compact(self) -> None:
        # In place: handle_timers may be iterating over this very list.
        live = self._transactions
        self._heap[:] = [
            entry
            for entry in self._heap
            if (tx := live.get(entry[2])) is not None and tx.timers.get(entry[3]) == entry[1]
        ]
        heapq.heapify(self._heap)
        self._stale = 0

    def _add(self, tx: _Transaction) -> None:
        self._transactions[tx.key] = tx
        self._by_destination.setdefault((tx.destination, tx.transport), set()).add(tx.key)

    def _remove(self, tx: _Transaction) -> None:
        if self._transactions.get(tx.key) is tx:
            del self._transactions[tx.key]
        self._stop_timers(tx)
        where = (tx.destination, tx.transport)
        keys = self._by_destination.get(where)
        if keys is not None:
            keys.discard(tx.key)
            if not keys:
                del self._by_destination[where]
        if tx.ack_index is not None and self._accepted_by_dialog.get(tx.ack_index) == tx.key:
            del self._accepted_by_dialog[tx.ack_index]
