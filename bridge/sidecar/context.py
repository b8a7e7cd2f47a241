"""What every handler needs: the shared state, who is calling, and the parsed input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from bridge.sidecar.auth import AuthConfig, Permission, Principal, bearer_token, may_access_ticket
from bridge.sidecar.control import CallControl
from bridge.sidecar.errors import ApiError
from bridge.sidecar.events import EventHub
from bridge.sidecar.links import LinkSigner
from bridge.sidecar.metrics import MetricsRegistry
from bridge.tickets.model import Ticket
from bridge.tickets.store import TicketStore

B = TypeVar("B", bound=BaseModel)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sidecar:
    """Everything the handlers share, stored on the app under :data:`SIDECAR`."""

    store: TicketStore
    control: CallControl
    auth: AuthConfig
    signer: LinkSigner
    hub: EventHub
    base_url: str
    clock: Callable[[], float]
    metrics: MetricsRegistry

    def ticket_url(self, ticket_id: str) -> str:
        return self.signer.url_for(self.base_url, ticket_id, self.clock())


SIDECAR = web.AppKey("sidecar", Sidecar)


def sidecar_of(request: web.Request) -> Sidecar:
    return request.app[SIDECAR]


def authenticate(request: web.Request, *, allow_query_token: bool = False) -> Principal:
    """The caller behind the bearer token; 401 when there is none or it is unknown.

    Browsers cannot set headers on a WebSocket, so the events route also accepts
    ``?access_token=`` (RFC 6750 §2.3).
    """
    token = bearer_token(request.headers.get("Authorization"))
    if token is None and allow_query_token:
        token = request.query.get("access_token")
    if token is None:
        raise ApiError(401, "unauthorized", "a bearer token is required")
    principal = sidecar_of(request).auth.authenticate(token)
    if principal is None:
        raise ApiError(401, "invalid_token", "unknown bearer token")
    return principal


def require(
    request: web.Request, permission: Permission, *, allow_query_token: bool = False
) -> Principal:
    principal = authenticate(request, allow_query_token=allow_query_token)
    if not principal.may(permission):
        raise ApiError(403, "forbidden", f"role {principal.role.value} may not {permission.value}")
    return principal


def check_ticket_access(principal: Principal, ticket: Ticket) -> None:
    if not may_access_ticket(principal, ticket):
        raise ApiError(403, "forbidden", "this ticket was not sent to your platform")


async def read_body(request: web.Request, model: type[B], *, empty_ok: bool = False) -> B:
    raw = await request.read()
    if not raw.strip():
        if empty_ok:
            return model()
        raise ApiError(400, "bad_request", "a JSON body is required")
    return model.model_validate_json(raw)


def read_query(
    request: web.Request, model: type[B], *, repeatable: frozenset[str] = frozenset()
) -> B:
    """Validate the query string; only the ``repeatable`` keys may appear more than once."""
    values: dict[str, Any] = {}
    for key in set(request.query):
        found = request.query.getall(key)
        if key in repeatable:
            values[key] = found
        elif len(found) > 1:
            raise ApiError(400, "bad_request", f"query parameter {key} given more than once")
        else:
            values[key] = found[0]
    return model.model_validate(values)
