"""The call-control interface the engine offers the HTTP API, and its errors.

The sidecar knows nothing of legs and dialogs: it validates the request, stores the ticket and
asks :class:`CallControl`. The engine implements it and raises the errors below, which the
sidecar turns into 404 (no such call), 409 (the call's state does not allow it) or 422 (the
request names something that cannot be done, such as an unknown target).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Protocol

from bridge.tickets.model import Ticket, TransferMode

SuperviseMode = Literal["listen", "whisper", "barge"]


class ControlError(Exception):
    http_status: ClassVar[int] = 409
    error: ClassVar[str] = "call_state"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class CallNotFound(ControlError):
    http_status = 404
    error = "call_not_found"


class CallStateConflict(ControlError):
    http_status = 409
    error = "call_state"


class UnprocessableRequest(ControlError):
    http_status = 422
    error = "unprocessable"


class CallControl(Protocol):
    """Implemented by the engine. Results are JSON-ready dicts (no personal data in logs)."""

    async def list_calls(self) -> list[dict[str, Any]]: ...

    async def get_call(self, call_id: str) -> dict[str, Any] | None: ...

    async def transfer(
        self, call_id: str, target: str, mode: TransferMode, ticket: Ticket, *, actor: str
    ) -> dict[str, Any]:
        """Start a transfer of ``call_id`` carrying ``ticket`` (already stored, state draft
        or failed). The engine records ``transfer_requested`` before the INVITE leaves."""
        ...

    async def supervise(
        self, call_id: str, supervisor: str, mode: SuperviseMode, *, actor: str
    ) -> dict[str, Any]:
        """Ring ``supervisor`` into an answered call (``state`` "ringing"), or change the mode
        of that supervisor's supervision when they are already on it (``state`` "joined", or
        "ringing" while their phone rings). Other supervisors of the call are left as they
        are; one supervisor too many is a :class:`CallStateConflict`. Result: ``call_id``,
        ``supervisor``, ``mode``, ``state``."""
        ...

    async def reload_dialplan(self) -> dict[str, Any]:
        """``{"ok": True, ...}`` when the new plan is in force, else ``{"ok": False,
        "errors": ["FILE:LINE: message", ...]}`` and the old plan stays."""
        ...

    async def suggest_route(self, text: str) -> list[dict[str, Any]]: ...
