"""The HTTP sidecar: REST for tickets and calls, live events, the console page, metrics.

It runs on the engine's event loop. Handlers validate input with pydantic, check the caller's
role, store ticket changes (on the store's own thread) and only then publish them. Every error
leaves as ``{"error": code, "detail": ...}``: 400 bad body, 401 no or invalid credentials, 403
not allowed, 404 unknown, 409/422 when the ticket or call state does not allow the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from bridge.sidecar import websocket
from bridge.sidecar.auth import AuthConfig, Permission, Principal, Role
from bridge.sidecar.bodies import (
    OwnershipBody,
    RejectBody,
    SuggestBody,
    SuperviseBody,
    TicketListQuery,
    TransferBody,
)
from bridge.sidecar.context import (
    SIDECAR,
    Sidecar,
    check_ticket_access,
    read_body,
    read_query,
    require,
    sidecar_of,
)
from bridge.sidecar.control import CallControl, ControlError
from bridge.sidecar.errors import ApiError, bearer_challenge, json_error
from bridge.sidecar.events import EventHub, publish_ticket
from bridge.sidecar.links import LinkError, LinkSigner, ticket_path
from bridge.sidecar.metrics import CONTENT_TYPE, MetricsRegistry
from bridge.tickets import lifecycle
from bridge.tickets.errors import TicketError
from bridge.tickets.lifecycle import EventKind, Transition
from bridge.tickets.model import FeedbackInput, Ticket, TicketDraft, new_ticket_id
from bridge.tickets.store import TicketQuery, TicketStore

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _ticket_id(request: web.Request) -> str:
    return request.match_info["ticket_id"]


# -- middleware -------------------------------------------------------------------------------


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    sidecar = sidecar_of(request)
    requests = sidecar.metrics.counter(
        "bridge_http_requests_total", "HTTP requests served", ("method", "route", "status")
    )
    try:
        response = await handler(request)
    except ApiError as exc:
        response = json_error(exc.status, exc.error, exc.detail, headers=exc.headers)
    except ValidationError as exc:
        response = json_error(400, "bad_request", _validation_detail(exc))
    except (TicketError, ControlError, LinkError) as exc:
        headers = bearer_challenge(exc.error) if exc.http_status == 401 else None
        response = json_error(exc.http_status, exc.error, exc.detail, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = (exc.reason or "error").lower().replace(" ", "_")
        response = json_error(exc.status, code, exc.reason)
    except Exception:
        # The route, never the body: bodies carry caller numbers and ticket text.
        log.exception("sidecar handler failed on %s %s", request.method, _route_label(request))
        response = json_error(500, "internal", "internal error")
    requests.inc(method=request.method, route=_route_label(request), status=str(response.status))
    return response


# -- plain routes -----------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics_page(request: web.Request) -> web.Response:
    body = sidecar_of(request).metrics.render()
    return web.Response(body=body.encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})


def _console_page() -> bytes:
    return resources.files("bridge.sidecar").joinpath("static/console.html").read_bytes()


CONSOLE_PAGE = web.AppKey("console_page", bytes)


async def console(request: web.Request) -> web.Response:
    return web.Response(body=request.app[CONSOLE_PAGE], content_type="text/html", charset="utf-8")


# -- tickets ----------------------------------------------------------------------------------


def _ticket_reply(transition: Transition) -> dict[str, Any]:
    return {
        "ticket": transition.ticket.model_dump(mode="json"),
        "event": transition.event.to_json(),
    }


async def _create_ticket(sidecar: Sidecar, draft: TicketDraft, principal: Principal) -> Transition:
    if draft.sending_seat is None and principal.seat is not None:
        draft = draft.model_copy(update={"sending_seat": principal.seat})
    now = sidecar.clock()
    transition = lifecycle.create(
        draft, ticket_id=new_ticket_id(now), actor=principal.name, now=now
    )
    await sidecar.store.create(transition)
    sidecar.metrics.counter("bridge_tickets_created_total", "Tickets created", ("origin",)).inc(
        origin=draft.origin
    )
    publish_ticket(sidecar.hub, transition)
    return transition


async def create_ticket(request: web.Request) -> web.Response:
    principal = require(request, Permission.CREATE_TICKET)
    draft = await read_body(request, TicketDraft)
    sidecar = sidecar_of(request)
    transition = await _create_ticket(sidecar, draft, principal)
    ticket_id = transition.ticket.id
    reply = {**_ticket_reply(transition), "ticket_url": sidecar.ticket_url(ticket_id)}
    return web.json_response(reply, status=201, headers={"Location": ticket_path(ticket_id)})


async def list_tickets(request: web.Request) -> web.Response:
    principal = require(request, Permission.READ_TICKETS)
    query = read_query(request, TicketListQuery)
    if principal.role is Role.PEER:
        if query.destination not in (None, principal.platform):
            raise ApiError(403, "forbidden", "peers list only tickets sent to their platform")
        query = query.model_copy(update={"destination": principal.platform})
    tickets = await sidecar_of(request).store.list_tickets(TicketQuery(**query.model_dump()))
    return web.json_response({"tickets": [t.model_dump(mode="json") for t in tickets]})


async def get_ticket(request: web.Request) -> web.Response:
    sidecar = sidecar_of(request)
    ticket_id = _ticket_id(request)
    link_token = request.query.get("token")
    principal: Principal | None = None
    if link_token is not None:
        sidecar.signer.verify(ticket_id, link_token, sidecar.clock())
    else:
        principal = require(request, Permission.READ_TICKETS)
    ticket = await sidecar.store.get(ticket_id)
    if ticket is None:
        raise ApiError(404, "ticket_not_found", f"no ticket {ticket_id}")
    if principal is not None:
        check_ticket_access(principal, ticket)
    events = await sidecar.store.events_for(ticket_id)
    return web.json_response(
        {"ticket": ticket.model_dump(mode="json"), "events": [e.to_json() for e in events]}
    )


async def _change_ticket(
    request: web.Request,
    principal: Principal,
    change: Callable[[Ticket, float], Transition],
) -> web.Response:
    """Apply a lifecycle step atomically in the store, then publish it."""
    sidecar = sidecar_of(request)
    now = sidecar.clock()

    def checked(ticket: Ticket) -> Transition:
        check_ticket_access(principal, ticket)
        return change(ticket, now)

    transition = await sidecar.store.update(_ticket_id(request), checked)
    publish_ticket(sidecar.hub, transition)
    return web.json_response(_ticket_reply(transition), status=201)


async def post_feedback(request: web.Request) -> web.Response:
    principal = require(request, Permission.POST_FEEDBACK)
    body = await read_body(request, FeedbackInput)
    response = await _change_ticket(
        request,
        principal,
        lambda t, now: lifecycle.add_feedback(
            t, outcome=body.outcome, actor=principal.name, now=now
        ),
    )
    sidecar_of(request).metrics.counter(
        "bridge_ticket_feedback_total", "Feedback entries appended to tickets"
    ).inc()
    return response


async def accept_ticket(request: web.Request) -> web.Response:
    principal = require(request, Permission.DECIDE_TICKET)
    await read_body(request, _EmptyBody, empty_ok=True)
    return await _change_ticket(
        request, principal, lambda t, now: lifecycle.accept(t, actor=principal.name, now=now)
    )


async def reject_ticket(request: web.Request) -> web.Response:
    principal = require(request, Permission.DECIDE_TICKET)
    body = await read_body(request, RejectBody)
    return await _change_ticket(
        request,
        principal,
        lambda t, now: lifecycle.reject(t, reason=body.reason, actor=principal.name, now=now),
    )


async def decide_ownership(request: web.Request) -> web.Response:
    principal = require(request, Permission.DECIDE_TICKET)
    body = await read_body(request, OwnershipBody)
    return await _change_ticket(
        request,
        principal,
        lambda t, now: lifecycle.decide_ownership(
            t, platform=body.platform, rule=body.rule, note=body.note, actor=principal.name, now=now
        ),
    )


class _EmptyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- calls ------------------------------------------------------------------------------------


def _call_id(request: web.Request) -> str:
    return request.match_info["call_id"]


async def list_calls(request: web.Request) -> web.Response:
    require(request, Permission.READ_CALLS)
    return web.json_response({"calls": await sidecar_of(request).control.list_calls()})


async def get_call(request: web.Request) -> web.Response:
    require(request, Permission.READ_CALLS)
    call = await sidecar_of(request).control.get_call(_call_id(request))
    if call is None:
        raise ApiError(404, "call_not_found", f"no call {_call_id(request)}")
    return web.json_response({"call": call})


async def transfer_call(request: web.Request) -> web.Response:
    principal = require(request, Permission.TRANSFER)
    body = await read_body(request, TransferBody)
    sidecar = sidecar_of(request)
    call_id = _call_id(request)
    # Look the call up before storing anything, so a wrong id leaves no orphan ticket.
    if await sidecar.control.get_call(call_id) is None:
        raise ApiError(404, "call_not_found", f"no call {call_id}")
    if body.ticket is not None:
        ticket = (await _create_ticket(sidecar, body.ticket, principal)).ticket
    else:
        assert body.ticket_id is not None
        found = await sidecar.store.get(body.ticket_id)
        if found is None:
            raise ApiError(404, "ticket_not_found", f"no ticket {body.ticket_id}")
        check_ticket_access(principal, found)
        if EventKind.TRANSFER_REQUESTED not in lifecycle.allowed_events(found.state):
            raise ApiError(409, "invalid_transition", f"ticket {found.id} is {found.state.value}")
        ticket = found
    result = await sidecar.control.transfer(
        call_id, body.target, body.mode, ticket, actor=principal.name
    )
    current = await sidecar.store.get(ticket.id) or ticket
    return web.json_response(
        {
            "call": result,
            "ticket": current.model_dump(mode="json"),
            "ticket_url": sidecar.ticket_url(ticket.id),
        },
        status=202,
    )


async def supervise_call(request: web.Request) -> web.Response:
    """202 while the supervisor's phone rings (the outcome follows as call events); 200 when
    the mode of a supervisor already on the call changed. Several supervisors may be on one
    call, each its own supervision; a request names which."""
    principal = require(request, Permission.SUPERVISE)
    body = await read_body(request, SuperviseBody)
    result = await sidecar_of(request).control.supervise(
        _call_id(request), body.supervisor, body.mode, actor=principal.name
    )
    return web.json_response(
        {"supervision": result}, status=202 if result.get("state") == "ringing" else 200
    )


async def reload_dialplan(request: web.Request) -> web.Response:
    require(request, Permission.RELOAD_DIALPLAN)
    await read_body(request, _EmptyBody, empty_ok=True)
    result = await sidecar_of(request).control.reload_dialplan()
    if not result.get("ok"):
        raise ApiError(422, "invalid_dialplan", result.get("errors", []))
    return web.json_response(result)


async def suggest_route(request: web.Request) -> web.Response:
    require(request, Permission.SUGGEST_ROUTE)
    body = await read_body(request, SuggestBody)
    suggestions = await sidecar_of(request).control.suggest_route(body.text)
    return web.json_response({"suggestions": suggestions})


# -- the application --------------------------------------------------------------------------


async def _close_subscriptions(app: web.Application) -> None:
    app[SIDECAR].hub.close()


def create_app(
    *,
    store: TicketStore,
    control: CallControl,
    auth: AuthConfig,
    signer: LinkSigner,
    hub: EventHub,
    base_url: str,
    clock: Callable[[], float] = time.time,
    metrics: MetricsRegistry | None = None,
) -> web.Application:
    """The sidecar application; run it with an ``AppRunner`` on the engine's loop.

    ``base_url`` is how receivers reach this sidecar (it goes into ticket links); ``metrics`` is
    the registry the engine also writes to (a private one when omitted).
    """
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app[SIDECAR] = Sidecar(
        store=store,
        control=control,
        auth=auth,
        signer=signer,
        hub=hub,
        base_url=base_url.rstrip("/"),
        clock=clock,
        metrics=metrics or MetricsRegistry(),
    )
    app[CONSOLE_PAGE] = _console_page()
    app.on_shutdown.append(_close_subscriptions)
    routes: Mapping[tuple[str, str], Handler] = {
        ("GET", "/"): console,
        ("GET", "/healthz"): healthz,
        ("GET", "/metrics"): metrics_page,
        ("POST", "/api/v1/tickets"): create_ticket,
        ("GET", "/api/v1/tickets"): list_tickets,
        ("GET", "/api/v1/tickets/{ticket_id}"): get_ticket,
        ("POST", "/api/v1/tickets/{ticket_id}/feedback"): post_feedback,
        ("POST", "/api/v1/tickets/{ticket_id}/accept"): accept_ticket,
        ("POST", "/api/v1/tickets/{ticket_id}/reject"): reject_ticket,
        ("POST", "/api/v1/tickets/{ticket_id}/ownership"): decide_ownership,
        ("GET", "/api/v1/calls"): list_calls,
        ("GET", "/api/v1/calls/{call_id}"): get_call,
        ("POST", "/api/v1/calls/{call_id}/transfer"): transfer_call,
        ("POST", "/api/v1/calls/{call_id}/supervise"): supervise_call,
        ("POST", "/api/v1/admin/dialplan/reload"): reload_dialplan,
        ("POST", "/api/v1/route/suggest"): suggest_route,
        ("GET", "/api/v1/events"): websocket.events,
    }
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    return app
