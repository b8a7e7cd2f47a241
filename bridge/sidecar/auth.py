"""Bearer tokens, roles and what each role may do.

Tokens come from the config (``[[sidecar.tokens]]``: token, name, role, optional seat and
platform). A presented token is looked up by its SHA-256 digest, so the comparison time does not
depend on how much of a secret an attacker guessed. :data:`GRANTS` is the one table of who may
do what; peers (the other platform's systems) are further limited to tickets addressed to their
platform, which the routes check with :func:`may_access_ticket`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from bridge.tickets.model import PlatformId, SeatId, Ticket


class Role(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    PEER = "peer"


class Permission(StrEnum):
    CREATE_TICKET = "create_ticket"
    READ_TICKETS = "read_tickets"
    DECIDE_TICKET = "decide_ticket"
    POST_FEEDBACK = "post_feedback"
    READ_CALLS = "read_calls"
    TRANSFER = "transfer"
    SUGGEST_ROUTE = "suggest_route"
    SUPERVISE = "supervise"
    RELOAD_DIALPLAN = "reload_dialplan"
    SUBSCRIBE_EVENTS = "subscribe_events"
    SEE_ALL_EVENTS = "see_all_events"


P = Permission
_AGENT = frozenset(
    {
        P.CREATE_TICKET,
        P.READ_TICKETS,
        P.DECIDE_TICKET,
        P.POST_FEEDBACK,
        P.READ_CALLS,
        P.TRANSFER,
        P.SUGGEST_ROUTE,
        P.SUBSCRIBE_EVENTS,
    }
)
_SUPERVISOR = _AGENT | {P.SUPERVISE, P.SEE_ALL_EVENTS}

GRANTS: Mapping[Role, frozenset[Permission]] = {
    Role.AGENT: _AGENT,
    Role.SUPERVISOR: _SUPERVISOR,
    Role.ADMIN: _SUPERVISOR | {P.RELOAD_DIALPLAN},
    Role.PEER: frozenset({P.READ_TICKETS, P.DECIDE_TICKET, P.POST_FEEDBACK, P.SUBSCRIBE_EVENTS}),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is calling. For a peer, ``platform`` is the platform it speaks for."""

    name: str
    role: Role
    seat: str | None = None
    platform: str | None = None

    def may(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]


def may_access_ticket(principal: Principal, ticket: Ticket) -> bool:
    """Peers see only tickets sent to their platform; staff roles see all."""
    if principal.role is not Role.PEER:
        return True
    return ticket.destination is not None and ticket.destination == principal.platform


class ApiToken(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr = Field(min_length=16)
    name: str = Field(min_length=1, max_length=128)
    role: Role
    seat: SeatId | None = None
    platform: PlatformId | None = None

    @model_validator(mode="before")
    @classmethod
    def _peer_speaks_for_a_platform(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("role") == "peer" and not data.get("platform"):
            return {**data, "platform": data.get("name")}
        return data


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: tuple[ApiToken, ...] = ()
    _by_digest: dict[bytes, Principal] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _tokens_are_distinct(self) -> AuthConfig:
        digests = [_digest(t.token.get_secret_value()) for t in self.tokens]
        if len(set(digests)) != len(digests):
            raise ValueError("the same token is configured twice")
        return self

    def model_post_init(self, context: Any, /) -> None:
        for entry in self.tokens:
            self._by_digest[_digest(entry.token.get_secret_value())] = Principal(
                name=entry.name, role=entry.role, seat=entry.seat, platform=entry.platform
            )

    @classmethod
    def from_token_configs(cls, tokens: Iterable[BaseModel]) -> AuthConfig:
        """Build from the config file's ``sidecar.tokens`` entries (same field names)."""
        return cls(tokens=tuple(ApiToken.model_validate(t.model_dump()) for t in tokens))

    def authenticate(self, presented: str) -> Principal | None:
        return self._by_digest.get(_digest(presented))


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of ``Authorization: Bearer <token>`` (RFC 6750 §2.1), else None."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()
