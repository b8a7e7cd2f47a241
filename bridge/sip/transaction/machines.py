"""The four transaction state machines of RFC 3261 §17 (with RFC 6026's Accepted state).

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

What a transaction keeps
------------------------
Once a transaction has its final response it only absorbs retransmissions until a timer ends
it, and over UDP that is most of its life (Timers D, J, L, M: 32 s; K, I: 5 s). The rows that
enter those states therefore drop what can no longer be used, named by ``DROP_*`` actions:

* the client's request bytes (``DROP_REQUEST_OUT``) once no Timer A/E can fire again;
* the parsed request (``DROP_REQUEST``) once no event for the TU can carry it. It stays in
  the client INVITE's Completed state, whose transport error the TU still gets as a
  ``ClientTransportError`` with the request (Figure 5 of §17.1.1.2), and in the server INVITE's
  Accepted and Completed states, which are still waiting for the ACK: Timer L reports an
  ``AckTimeout`` (§13.3.1.4, the TU must send BYE) and Timer H a ``ServerTimeout`` (§17.2.1),
  both with the INVITE. A server non-INVITE in Completed (§17.2.2) has sent its final answer
  and only resends it, so its ``ServerTransportError`` carries no request;
* the server's last response (``DROP_RESPONSE_OUT``) once nothing resends it: after the ACK
  (Confirmed, §17.2.1; Accepted after the ACK, RFC 6026 §7.1).

The server INVITE machine answers 100 Trying itself only if the TU stays silent for 200 ms
(§17.2.1), so a TU that sends its own 100 or 180 at once costs no extra datagram.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import TypeAlias


class _KeyEnum(Enum):
    """Members are singletons compared by identity; hashing them by identity runs in C, where
    Enum's own hash (of the name) is a Python call. They key the tables on every message."""

    __hash__ = object.__hash__


class State(_KeyEnum):
    CALLING = auto()
    TRYING = auto()
    PROCEEDING = auto()
    COMPLETED = auto()
    CONFIRMED = auto()
    ACCEPTED = auto()  # RFC 6026: 2xx sent/received, waiting out retransmissions
    ACKED = auto()  # server Accepted after the ACK for our 2xx: only absorbs now
    TERMINATED = auto()


class Input(_KeyEnum):
    PROVISIONAL = auto()  # 1xx received (client) or passed down by the TU (server)
    SUCCESS = auto()  # 2xx, same two directions
    FAILURE = auto()  # 300-699, same two directions
    RETRANSMISSION = auto()  # the server transaction's request arrived again
    ACK = auto()
    CANCEL_SENT = auto()  # the TU sent a CANCEL for this client INVITE
    TRANSPORT_ERROR = auto()


class Timer(_KeyEnum):
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


class Do(_KeyEnum):
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
    DROP_REQUEST = auto()  # the parsed request: no event can carry it any more
    DROP_REQUEST_OUT = auto()  # client: the request's bytes, no Timer A/E can resend them
    DROP_RESPONSE_OUT = auto()  # server: the last response, nothing resends it any more


Action: TypeAlias = Do | Timer
Table: TypeAlias = dict[tuple[State, Input | Timer], tuple[State, tuple[Action, ...]]]

St, In, Tm = State, Input, Timer

_INVITE_FINAL = (Do.STOP_TIMERS, Do.SEND_ACK, Do.PASS_UP, Do.DROP_REQUEST_OUT, Tm.D)
_INVITE_2XX = (Do.STOP_TIMERS, Do.PASS_UP, Do.DROP_REQUEST, Do.DROP_REQUEST_OUT, Tm.M)

CLIENT_INVITE: Table = {
    (St.CALLING, In.PROVISIONAL): (
        St.PROCEEDING,
        (Do.STOP_TIMERS, Do.PASS_UP, Do.DROP_REQUEST_OUT, Do.GUARD_IF_CANCELLED),
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

_NON_INVITE_FINAL = (Do.STOP_TIMERS, Do.PASS_UP, Do.DROP_REQUEST, Do.DROP_REQUEST_OUT, Tm.K)

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
    (St.COMPLETED, In.ACK): (
        St.CONFIRMED,
        (Do.STOP_TIMERS, Do.DROP_REQUEST, Do.DROP_RESPONSE_OUT, Tm.I),
    ),
    (St.COMPLETED, Tm.G): (St.COMPLETED, (Do.RESEND_RESPONSE, Do.BACK_OFF)),
    (St.COMPLETED, Tm.H): (St.TERMINATED, (Do.REPORT_SERVER_TIMEOUT,)),
    (St.COMPLETED, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (St.CONFIRMED, Tm.I): (St.TERMINATED, ()),
    (St.ACCEPTED, In.SUCCESS): (St.ACCEPTED, (Do.SEND_RESPONSE,)),
    (St.ACCEPTED, In.ACK): (
        St.ACKED,
        (Do.STOP_RETRANSMIT, Do.PASS_UP, Do.DROP_REQUEST, Do.DROP_RESPONSE_OUT),
    ),
    (St.ACCEPTED, Tm.RETRANSMIT_2XX): (St.ACCEPTED, (Do.RESEND_RESPONSE, Do.BACK_OFF)),
    (St.ACCEPTED, Tm.L): (St.TERMINATED, (Do.REPORT_ACK_TIMEOUT,)),
    (St.ACCEPTED, In.TRANSPORT_ERROR): (St.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (St.ACKED, Tm.L): (St.TERMINATED, ()),
}

_SERVER_FINAL = (Do.STOP_TIMERS, Do.SEND_RESPONSE, Do.DROP_REQUEST, Tm.J)

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

RETRANSMIT_TIMERS = (Tm.A, Tm.E, Tm.G, Tm.RETRANSMIT_2XX)


def status_input(status: int) -> Input:
    if status < 200:
        return In.PROVISIONAL
    return In.SUCCESS if status < 300 else In.FAILURE
