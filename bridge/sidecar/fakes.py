"""A scripted :class:`~bridge.sidecar.control.CallControl` for tests and engine-less runs.

It keeps calls in a dict, records what it was asked, and, given a store, records
``transfer_requested`` on the ticket the way the engine does (store first, then act).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.sidecar.control import (
    CallNotFound,
    CallStateConflict,
    ControlError,
    SuperviseMode,
    UnprocessableRequest,
)
from bridge.tickets import lifecycle
from bridge.tickets.model import Ticket, TransferMode
from bridge.tickets.store import TicketStore


@dataclass(slots=True, kw_only=True)
class FakeCallControl:
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    store: TicketStore | None = None
    clock: Callable[[], float] = lambda: 0.0
    known_targets: frozenset[str] | None = None
    reload_result: Mapping[str, Any] = field(default_factory=lambda: {"ok": True})
    suggestions: list[dict[str, Any]] = field(default_factory=list)
    fail_next: ControlError | None = None
    transfers: list[dict[str, Any]] = field(default_factory=list)
    supervisions: list[dict[str, Any]] = field(default_factory=list)
    """Every supervise request, in order, with its actor."""
    max_supervisors: int = 4
    """Supervisors one call may have at once: the engine's
    :data:`bridge.calls.supervise.MAX_SUPERVISORS` (a unit test keeps them equal)."""
    reloads: int = 0

    def _call(self, call_id: str) -> dict[str, Any]:
        call = self.calls.get(call_id)
        if call is None:
            raise CallNotFound(f"no call {call_id}")
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        return call

    async def list_calls(self) -> list[dict[str, Any]]:
        return [self._shown(call_id, call) for call_id, call in self.calls.items()]

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        call = self.calls.get(call_id)
        return self._shown(call_id, call) if call is not None else None

    def _shown(self, call_id: str, call: dict[str, Any]) -> dict[str, Any]:
        """The scripted call with its supervisions, as the engine shows them."""
        return {**call, "supervisions": self._supervising(call_id)}

    def _supervising(self, call_id: str) -> list[dict[str, Any]]:
        """The latest request of each supervisor of the call, the earliest asked first."""
        latest: dict[str, dict[str, Any]] = {}
        for record in self.supervisions:
            if record["call_id"] == call_id:
                shown = {k: v for k, v in record.items() if k != "actor"}
                latest[record["supervisor"]] = {**latest.get(record["supervisor"], {}), **shown}
        return list(latest.values())

    async def transfer(
        self, call_id: str, target: str, mode: TransferMode, ticket: Ticket, *, actor: str
    ) -> dict[str, Any]:
        call = self._call(call_id)
        if call.get("state") != "answered":
            raise CallStateConflict(f"call {call_id} is {call.get('state')}")
        if self.known_targets is not None and target not in self.known_targets:
            raise UnprocessableRequest(f"no route to {target}")
        if self.store is not None:
            now = self.clock()
            await self.store.update(
                ticket.id,
                lambda t: lifecycle.request_transfer(
                    t, target=target, mode=mode, actor=actor, now=now, call_id=call_id
                ),
            )
        call["state"] = "transferring"
        record = {"call_id": call_id, "target": target, "mode": mode, "ticket_id": ticket.id}
        self.transfers.append({**record, "actor": actor})
        return {**record, "state": "transferring"}

    async def supervise(
        self, call_id: str, supervisor: str, mode: SuperviseMode, *, actor: str
    ) -> dict[str, Any]:
        """A supervisor's first request rings (``ringing``); a later one for the same
        supervisor finds them joined and changes the mode; other supervisors start their
        own, up to ``max_supervisors`` on a call."""
        call = self._call(call_id)
        if call.get("state") != "answered":
            raise CallStateConflict(f"call {call_id} is {call.get('state')}")
        supervising = {s["supervisor"] for s in self._supervising(call_id)}
        if supervisor not in supervising and len(supervising) >= self.max_supervisors:
            raise CallStateConflict(
                f"the call already has {self.max_supervisors} supervisors, "
                "as many as a call may have"
            )
        state = "joined" if supervisor in supervising else "ringing"
        record = {"call_id": call_id, "supervisor": supervisor, "mode": mode, "state": state}
        self.supervisions.append({**record, "actor": actor})
        return record

    async def reload_dialplan(self) -> dict[str, Any]:
        self.reloads += 1
        return dict(self.reload_result)

    async def suggest_route(self, text: str) -> list[dict[str, Any]]:
        return list(self.suggestions)
