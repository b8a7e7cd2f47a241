"""Errors of the SIP layer, split by whose fault they are.

A :class:`RemoteProtocolError` means the peer sent something we cannot accept: it maps to the
response status we answer with (RFC 3261 §21.4), or to a silent drop when it was a response or an
ACK, which cannot be answered. A :class:`LocalProtocolError` means our own code asked for
something the protocol forbids; it maps to 500 if it ever reaches a peer.
"""

from __future__ import annotations


class SipError(Exception):
    status: int = 500
    reason: str = "Server Internal Error"

    def __init__(self, detail: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason


class RemoteProtocolError(SipError):
    """The peer's message violates RFC 3261; answer with ``status`` (400 unless stated)."""

    status = 400
    reason = "Bad Request"


class LocalProtocolError(SipError):
    """We tried to do something the protocol does not allow."""
