"""Signed ticket links: the URL in ``Call-Info`` that lets only the receiver read the ticket.

The receiving PBX or seat has no account here; it holds the link. The token is
``{expiry}.{signature}`` where the signature is HMAC-SHA256 (RFC 2104) over the ticket id and
the expiry, so it cannot be moved to another ticket or extended. Verification recomputes it and
compares in constant time. Both parts are URL-safe and need no escaping inside ``<...>`` of a
SIP header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import ClassVar

DEFAULT_TTL_SECONDS = 3600.0

_TOKEN = re.compile(r"^(0|[1-9]\d{0,11})\.([A-Za-z0-9_-]{43})$")
"""Canonical decimal only: one token per (ticket, expiry), no zero-padded spellings of it."""


class LinkError(Exception):
    """The link does not grant access; ``http_status`` is what the sidecar answers."""

    http_status: ClassVar[int] = 401
    error: ClassVar[str] = "invalid_token"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ExpiredLink(LinkError):
    """Authentic, but past its expiry: the signature was right, the time is not."""

    http_status = 403
    error = "link_expired"


def ticket_path(ticket_id: str) -> str:
    return f"/api/v1/tickets/{ticket_id}"


class LinkSigner:
    def __init__(
        self,
        secret: bytes | str,
        *,
        base_url: str = "",
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
    ) -> None:
        key = secret.encode("utf-8") if isinstance(secret, str) else secret
        if len(key) < 16:
            raise ValueError("the link secret must be at least 16 bytes")
        if ttl_seconds <= 0:
            raise ValueError("the link lifetime must be positive")
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.ttl_seconds = ttl_seconds

    def _signature(self, ticket_id: str, expires: int) -> str:
        message = f"bridge-ticket-link\x00{ticket_id}\x00{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def token(self, ticket_id: str, now: float) -> str:
        expires = int(now + self.ttl_seconds)
        return f"{expires}.{self._signature(ticket_id, expires)}"

    def verify(self, ticket_id: str, token: str, now: float) -> None:
        """Return if ``token`` opens ``ticket_id`` at ``now``; raise :class:`LinkError` if not."""
        match = _TOKEN.match(token)
        if match is None:
            raise LinkError("malformed ticket link token")
        expires = int(match.group(1))
        expected = self._signature(ticket_id, expires)
        if not hmac.compare_digest(expected.encode("ascii"), match.group(2).encode("ascii")):
            raise LinkError("ticket link signature does not match")
        if now >= expires:
            raise ExpiredLink("ticket link has expired")

    def ticket_url(self, ticket_id: str, now: float) -> str:
        return self.url_for(self.base_url, ticket_id, now)

    def url_for(self, base_url: str, ticket_id: str, now: float) -> str:
        return f"{base_url.rstrip('/')}{ticket_path(ticket_id)}?token={self.token(ticket_id, now)}"
