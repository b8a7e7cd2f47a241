"""SIP transactions (RFC 3261 §17 with RFC 6026's Accepted state), sans-IO.

The TU feeds parsed messages, its own requests and responses, and the time; it gets back
events (:mod:`.events`) and datagrams to send. The state machines and their theory of
operation are in :mod:`.machines`, keys, addressing and the built ACK/CANCEL in :mod:`.wire`,
the layer tying them together in :mod:`.layer`.
"""

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
from bridge.sip.transaction.layer import TransactionLayer
from bridge.sip.transaction.machines import State
from bridge.sip.transaction.wire import (
    MAGIC_COOKIE,
    build_cancel,
    build_non2xx_ack,
    client_key,
    new_branch,
    response_address,
    response_fallback,
    server_key,
    stamp_via,
)

__all__ = [
    "MAGIC_COOKIE",
    "AckTimeout",
    "Address",
    "ClientTimeout",
    "ClientTransportError",
    "Event",
    "Outgoing",
    "RequestReceived",
    "ResponseReceived",
    "ServerTimeout",
    "ServerTransportError",
    "State",
    "TransactionLayer",
    "build_cancel",
    "build_non2xx_ack",
    "client_key",
    "new_branch",
    "response_address",
    "response_fallback",
    "server_key",
    "stamp_via",
]
