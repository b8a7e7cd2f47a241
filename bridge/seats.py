"""Agent seats: digest authentication (RFC 3261 §22, RFC 8760) and registration (§10).

Seats prove who they are with digest credentials from the config before they may register or
place calls. A REGISTER without valid credentials gets 401 with one challenge per algorithm
(SHA-256 first); an INVITE gets 407 (§22.3: the bridge acts as the seat's proxy here).
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.calls.b2bua import new_tag
from bridge.calls.ports import Destination, Origin
from bridge.config import RegistrarConfig
from bridge.sip.digest import Algorithm, Challenger
from bridge.sip.message import Request, Response, make_response
from bridge.sip.registrar import Registrar

Address = tuple[str, int]


class SeatAuthority:
    def __init__(self, config: RegistrarConfig) -> None:
        self.passwords = {seat.user: seat.password for seat in config.seats}
        self.challenger = Challenger(
            config.realm,
            algorithms=tuple(Algorithm.parse(name) for name in config.digest_algorithms),
        )
        self.registrar = Registrar(
            min_expires=config.min_expires_s,
            default_expires=min(max(3600, config.min_expires_s), config.max_expires_s),
            max_expires=config.max_expires_s,
        )
        self.platform_of: Callable[[str], str | None] = lambda seat: None

    def known(self, name: str) -> bool:
        """Whether ``name`` is one of the configured seats (a leg's peer may be a trunk)."""
        return name in self.passwords

    def _verify(self, request: Request, header: str, now: float) -> tuple[str | None, bool]:
        """The authenticated seat id (or None) and whether the failure was a stale nonce."""
        value = request.headers.get(header)
        if value is None:
            return None, False
        verdict = self.challenger.verify(
            value,
            method=request.method,
            uri=str(request.uri),
            password_lookup=self.passwords.get,
            now=now,
        )
        if verdict.ok:
            return verdict.username, False
        return None, verdict.stale

    def _challenge(
        self, request: Request, status: int, header: str, now: float, stale: bool
    ) -> Response:
        response = make_response(request, status, to_tag=new_tag())
        for challenge in self.challenger.challenges(now, stale=stale):
            response.headers.add(header, str(challenge))
        return response

    def handle_register(
        self, request: Request, source: Address, transport: str, now: float
    ) -> Response:
        user, stale = self._verify(request, "Authorization", now)
        if user is None:
            return self._challenge(request, 401, "WWW-Authenticate", now, stale)
        self.registrar.expire(now)
        return self.registrar.handle_register(
            request,
            source=source,
            transport=transport,
            now=now,
            authenticated_user=user,
            to_tag=new_tag(),
        )

    def authenticate_invite(
        self, request: Request, source: Address, now: float
    ) -> Response | Origin:
        user, stale = self._verify(request, "Proxy-Authorization", now)
        if user is None:
            return self._challenge(request, 407, "Proxy-Authenticate", now, stale)
        platform = self.platform_of(user)
        if platform is None:
            return make_response(request, 403, "Seat Not In Dial Plan", to_tag=new_tag())
        return Origin(kind="seat", name=user, platform=platform)

    def destinations(self, seat: str, ring_timeout: float, now: float) -> list[Destination]:
        """Where a seat can be rung now: its registered contacts, reached where they registered
        from (the seat may be behind NAT; RFC 5626 §5.3 in spirit)."""
        out = []
        for binding in self.registrar.lookup(seat, now):
            out.append(
                Destination(
                    uri=binding.contact.uri,
                    address=binding.destination,
                    # The registrar keeps RFC 3261's lower-case token; the transport
                    # layer and our Via take the upper-case name ("TCP" selects TCP).
                    transport=binding.transport.upper(),
                    peer=seat,
                    ring_timeout=ring_timeout,
                )
            )
        return out
