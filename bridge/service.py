"""The HTTP side of one bridge process: ticket store, sidecar app, live events, reloads.

:class:`Service` implements the sidecar's :class:`~bridge.sidecar.control.CallControl` on top of
the engine, turns the core's call events into live events and metrics, and exports the media's
figures (:mod:`bridge.media_figures`) on /metrics.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from bridge import native
from bridge.audit_journal import AuditJournal
from bridge.audit_writer import AuditWriter
from bridge.calls.call import Call, CallEvent
from bridge.config import Config
from bridge.engine import Engine
from bridge.media_figures import MediaFigures, export_media_metrics
from bridge.sidecar.app import create_app
from bridge.sidecar.auth import AuthConfig, Permission
from bridge.sidecar.context import require
from bridge.sidecar.control import (
    CallNotFound,
    CallStateConflict,
    SuperviseMode,
    UnprocessableRequest,
)
from bridge.sidecar.errors import ApiError
from bridge.sidecar.events import EventHub
from bridge.sidecar.links import LinkSigner
from bridge.sidecar.metrics import MetricsRegistry
from bridge.sip.errors import LocalProtocolError
from bridge.storage_metrics import MeasuredStore, export_storage_metrics
from bridge.tickets.backends import open_store
from bridge.tickets.model import Ticket, TransferMode
from bridge.tickets.store import AuditEntry, TicketDatabase
from bridge.transfers import TransferCoordinator, ticket_headers

log = logging.getLogger("bridge.service")

AGENT_EVENTS = frozenset({"resume_refused", "resume_failed"})
"""Call events addressed to the seats concerned as well as to the console: the bridge could
not take a caller the agent handed over off hold (:mod:`bridge.calls.reoffer`), and the agent
is the one to act. A transfer's own failure reaches that seat as a ticket event."""


class Service:
    def __init__(self, engine: Engine, config: Config) -> None:
        self.engine = engine
        self.config = config
        self.hub = EventHub()
        self.metrics = MetricsRegistry()
        self.signer = LinkSigner(
            config.sidecar.link_secret,
            base_url=config.sidecar.public_url,
            ttl_seconds=config.sidecar.link_ttl_s,
        )
        self.store: TicketDatabase | None = None
        self.transfers: TransferCoordinator | None = None
        self.audit_writer = AuditWriter(AuditJournal(config.resolve(config.storage.audit_journal)))
        self._runner: web.AppRunner | None = None
        self._calls_total = self.metrics.counter(
            "bridge_call_events_total", "Call state changes", ("kind",)
        )
        self._reloads = self.metrics.counter(
            "bridge_dialplan_reloads_total", "Dial-plan reloads", ("result",)
        )
        export_media_metrics(self.metrics, self._media_figures, workers=bool(config.media.workers))
        self.metrics.gauge(
            "bridge_call_core_compiled",
            "1 while the call core runs compiled (make native), 0 as Python (about 1.5x the CPU)",
        ).set_function(lambda: float(native.active()))
        engine.event_listeners.append(self._on_call_events)
        self.listen: tuple[str, int] = config.sidecar.address

    def _media_figures(self) -> MediaFigures:
        return self.engine.media.media_figures()

    async def start(self) -> None:
        storage = self.config.storage
        opened = await open_store(
            storage.url, base_dir=self.config.base_dir, max_connections=storage.max_connections
        )
        export_storage_metrics(
            self.metrics,
            opened,
            self.audit_writer.pending,
            audit_journal=lambda: self.audit_writer.journal.entries,
        )
        # The sidecar and the transfers use the store through this one wrapper: /metrics times
        # its writes and counts its failures once.
        self.store = MeasuredStore(opened, self.metrics)
        self.audit_writer.start(self.store)
        app = create_app(
            store=self.store,
            control=self,
            auth=AuthConfig.from_token_configs(self.config.sidecar.tokens),
            signer=self.signer,
            hub=self.hub,
            base_url=self.config.sidecar.public_url,
            metrics=self.metrics,
        )
        self.transfers = TransferCoordinator(self.engine, self.store, self.hub, self.signer)
        self.transfers.start()
        app.router.add_get("/api/v1/audit", self._audit_route)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = self.config.sidecar.address
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        for sock in getattr(site._server, "sockets", None) or ():
            name = sock.getsockname()
            self.listen = (str(name[0]), int(name[1]))
        log.info("sidecar listening on %s:%d", *self.listen)

    async def close(self) -> None:
        await self.audit_writer.close()
        if self.transfers is not None:
            await self.transfers.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.store is not None:
            await self.store.close()

    # -- audit log -----------------------------------------------------------------------

    def audit(self, entries: list[AuditEntry]) -> None:
        """Queue entries for the append-only audit log, written in batches off the loop, kept
        and retried while the store is down (:mod:`bridge.audit_writer`)."""
        self.audit_writer.add(entries)

    async def _audit_route(self, request: web.Request) -> web.Response:
        """GET /api/v1/audit?subject=CALL_ID&limit=N: supervisors and admins only."""
        require(request, Permission.SEE_ALL_EVENTS)
        try:
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
        except ValueError as exc:
            raise ApiError(400, "bad_query", "limit must be a number") from exc
        assert self.store is not None
        entries = await self.store.audit(request.query.get("subject"), limit)
        return web.json_response({"entries": [e.to_json() for e in entries]})

    # -- live events ---------------------------------------------------------------------

    def _on_call_events(self, events: list[CallEvent]) -> None:
        wall = time.time()
        self.audit(
            [
                AuditEntry(
                    at=wall,
                    # Who asked, for steps taken on someone's request (a supervisor's mode).
                    actor=str(event.data.get("actor", "bridge")),
                    kind=f"call.{event.kind}",
                    subject=event.call_id,
                    data={"state": str(event.state), **_plain(event.data)},
                )
                for event in events
            ]
        )
        for event in events:
            self._calls_total.inc(kind=event.kind)
            self.hub.publish(
                {
                    "type": "call",
                    "call_id": event.call_id,
                    "kind": event.kind,
                    "state": str(event.state),
                    "at": time.time(),
                    "data": _plain(event.data),
                },
                seats=self._seats_concerned(event),
            )

    def _seats_concerned(self, event: CallEvent) -> tuple[str, ...]:
        """The seats an :data:`AGENT_EVENTS` event goes to, as an agent's screen subscribes
        by seat: the agent who handed the call over (the seat its ticket events reach), and
        each party of the refused exchange that is a seat (the one the caller talks to)."""
        if event.kind not in AGENT_EVENTS:
            return ()
        call = self.engine.core.calls.get(event.call_id)
        if call is None:
            return ()
        seats = [call.agent_seat]
        leg = call.legs.get(str(event.data.get("leg")))
        if leg is not None:
            for party in (leg, call.other(leg)):
                if party is not None and self.engine.seats.known(party.peer):
                    seats.append(party.peer)
        return tuple(dict.fromkeys(seat for seat in seats if seat))

    # -- CallControl ---------------------------------------------------------------------

    async def list_calls(self) -> list[dict[str, Any]]:
        return [self._shown(call) for call in self.engine.core.calls.values()]

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        call = self.engine.core.calls.get(call_id)
        return self._shown(call) if call is not None else None

    def _shown(self, call: Call) -> dict[str, Any]:
        """The call's summary with its legs' media figures and its supervisions (ringing or
        joined, the earliest asked first)."""
        summary = _with_media(call)
        supervisions = self.engine.core.supervision.of_call(call.call_id)
        summary["supervisions"] = [supervision.summary() for supervision in supervisions]
        return summary

    async def transfer(
        self, call_id: str, target: str, mode: TransferMode, ticket: Ticket, *, actor: str
    ) -> dict[str, Any]:
        assert self.transfers is not None
        return await self.transfers.begin(call_id, target, mode, ticket, actor=actor)

    async def supervise(
        self, call_id: str, supervisor: str, mode: SuperviseMode, *, actor: str
    ) -> dict[str, Any]:
        """Ring the supervisor into the call, or change the mode of that supervisor's
        supervision when they are already on it (or ringing). How it goes on (joined, failed,
        left) reaches the client as call events."""
        engine = self.engine
        supervision_desk = engine.core.supervision
        call = engine.core.calls.get(call_id)
        if call is None:
            raise CallNotFound(f"no call {call_id}")
        try:
            if supervision_desk.find(call_id, supervisor) is None:
                supervision_desk.check_room(call_id)
                destinations = engine.routing.resolve_supervisor(supervisor, engine.now())
                if not destinations:
                    raise UnprocessableRequest(f"no destination for supervisor {supervisor!r}")
                headers = await self._ticket_headers(call.ticket_id)
                # The look-up awaited: a request for the same supervisor may have started it.
                if supervision_desk.find(call_id, supervisor) is None:
                    return supervision_desk.start(
                        call_id, supervisor, mode, destinations, engine.now(),
                        actor=actor, headers=headers,
                    ).summary()  # fmt: skip
            supervision = supervision_desk.change_mode(
                call_id, supervisor, mode, engine.now(), actor=actor
            )
        except LookupError as exc:
            raise CallNotFound(f"no call {call_id}") from exc
        except LocalProtocolError as exc:
            raise CallStateConflict(exc.detail) from exc
        finally:
            engine.flush()  # the INVITE (or the refusal's event) leaves before the reply
        return supervision.summary()

    async def _ticket_headers(self, ticket_id: str | None) -> tuple[tuple[str, str], ...]:
        """The ticket headers a transfer of this call carried; none for a call without one
        (the core then passes on an X-Ticket-Id the call arrived with)."""
        if ticket_id is None or self.store is None:
            return ()
        ticket = await self.store.get(ticket_id)
        if ticket is None:
            return (("X-Ticket-Id", ticket_id),)
        return ticket_headers(ticket, self.signer.ticket_url(ticket_id, time.time()))

    async def reload_dialplan(self) -> dict[str, Any]:
        return self._reload("api")

    def reload_dialplan_from_signal(self) -> None:
        self._reload("SIGHUP")

    def _reload(self, trigger: str) -> dict[str, Any]:
        outcome = self.engine.routing.holder.reload()
        if outcome.ok:
            self.engine.routing.reloaded()
            self._reloads.inc(result="ok")
            log.info("dial plan reloaded (%s)", trigger)
        else:
            self._reloads.inc(result="error")
            log.warning("dial plan reload refused (%s): %d errors", trigger, len(outcome.problems))
        self.audit(
            [
                AuditEntry(
                    at=time.time(),
                    actor=trigger,
                    kind="dialplan.reload" if outcome.ok else "dialplan.reload_refused",
                    subject=outcome.path,
                    data={
                        "generation": outcome.generation,
                        "sha256": outcome.sha256,
                        "problems": list(outcome.problems),
                        "changes": list(outcome.changes),
                    },
                )
            ]
        )
        result = {
            "ok": outcome.ok,
            "errors": list(outcome.problems),
            "changes": list(outcome.changes),
            "trigger": trigger,
        }
        self.hub.publish({"type": "dialplan_reload", "at": time.time(), **result})
        return result

    async def suggest_route(self, text: str) -> list[dict[str, Any]]:
        router = self.engine.routing.router
        return [
            {"category": key, "label": router.label(key), "score": score}
            for key, score in router.suggest(text)
        ]


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """Only plain values leave the process: names, states, statuses (never numbers)."""
    return {k: v for k, v in data.items() if isinstance(v, str | int | float)}


def _with_media(call: Call) -> dict[str, Any]:
    """The call's summary with each leg's RTP statistics (RFC 3550: packets, loss, jitter)."""
    summary = call.summary()
    for entry in summary["legs"]:
        leg = call.legs.get(entry["id"])
        stats = getattr(getattr(leg, "media", None), "stats", None)
        if stats is not None:
            snapshot = stats.snapshot()
            entry["media"] = {
                "codec": getattr(leg.media, "codec", None) if leg is not None else None,
                "packets_received": snapshot.packets_received,
                "packets_sent": snapshot.packets_sent,
                "packets_lost": snapshot.packets_lost,
                "jitter_ms": round(snapshot.jitter_ms, 3),
            }
    return summary
