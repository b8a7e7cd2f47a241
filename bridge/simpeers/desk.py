"""The desks' computers in the demo: what an agent's desktop and a receiving platform do over HTTP.

A sending desk asks the bridge to transfer a call with a ticket (``POST
/api/v1/calls/{id}/transfer``); a receiving platform follows its ticket events on the events
WebSocket (the screen pop that shows the ticket while the transferred call rings) and opens the
ticket from the signed ``Call-Info`` link that arrived in the INVITE, without any token: the link
is the credential (design.md, ticket headers). A supervisor's desk asks the bridge to ring its
phone into a call (``POST /api/v1/calls/{id}/supervise``) and follows how that goes from the
call events on the same WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bridge.sip.message import Request

TICKET_HEADERS = ("X-Ticket-Id", "Call-Info", "User-to-User", "Priority", "Referred-By")
"""What a transfer INVITE carries for the receiving side, in the order the demo shows them."""


def ticket_headers(invite: Request) -> dict[str, str]:
    """The ticket headers present on ``invite``."""
    found = {}
    for name in TICKET_HEADERS:
        value = invite.headers.get(name)
        if value is not None:
            found[name] = value
    return found


def call_info_url(value: str) -> str | None:
    """The URL of a ``Call-Info: <url>;purpose=ticket`` value (RFC 3261 §20.9)."""
    text = value.strip()
    if not text.startswith("<") or ">" not in text:
        return None
    url, _, params = text[1:].partition(">")
    return url if "purpose=ticket" in params else None


@dataclass(slots=True)
class HttpReply:
    status: int
    body: dict[str, Any]


class Desk:
    """HTTP client of the bridge's sidecar, as one desk's software uses it."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url
        self.token = token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def transfer(
        self, call_id: str, target: str, mode: str, ticket: dict[str, Any]
    ) -> HttpReply:
        url = f"{self.base_url}/api/v1/calls/{call_id}/transfer"
        body = {"target": target, "mode": mode, "ticket": ticket}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=body, headers=self._headers()) as reply,
        ):
            return HttpReply(reply.status, await _json(reply))

    async def supervise(self, call_id: str, supervisor: str, mode: str) -> HttpReply:
        url = f"{self.base_url}/api/v1/calls/{call_id}/supervise"
        body = {"supervisor": supervisor, "mode": mode}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=body, headers=self._headers()) as reply,
        ):
            return HttpReply(reply.status, await _json(reply))

    async def calls(self) -> HttpReply:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.base_url}/api/v1/calls", headers=self._headers()) as reply,
        ):
            return HttpReply(reply.status, await _json(reply))


async def open_ticket_link(url: str) -> HttpReply:
    """GET the signed ticket link as the receiving PBX or its desk would, with no token."""
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return HttpReply(reply.status, await _json(reply))


async def _json(reply: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await reply.json(content_type=None)
    except (json.JSONDecodeError, aiohttp.ContentTypeError):
        return {}
    return body if isinstance(body, dict) else {}


@dataclass(slots=True)
class ScreenPop:
    """A subscription to the events WebSocket, collecting ticket and call messages: a
    platform's screen pop, or a supervisor's console (which sees every call)."""

    tickets: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    subscribed: dict[str, Any] = field(default_factory=dict)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _session: aiohttp.ClientSession | None = None
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, base_url: str, token: str, *, platform: str = "", seat: str = "", within: float = 5.0
    ) -> ScreenPop:
        """Subscribe (``platform=``/``seat=`` filters) and return once the bridge confirmed the
        subscription, so nothing published afterwards is missed."""
        pop = cls()
        query = {key: value for key, value in (("platform", platform), ("seat", seat)) if value}
        pop._session = aiohttp.ClientSession()
        try:
            ws = await pop._session.ws_connect(
                f"{base_url}/api/v1/events",
                params=query,
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientWSTimeout(ws_close=within),
            )
            first = await asyncio.wait_for(ws.receive_json(), within)
        except BaseException:
            await pop._session.close()
            raise
        pop.subscribed = first if isinstance(first, dict) else {}
        pop._reader = asyncio.get_running_loop().create_task(pop._read(ws))
        return pop

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async with ws:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                if not isinstance(data, dict) or data.get("type") not in ("ticket", "call"):
                    continue
                async with self._arrived:
                    (self.tickets if data["type"] == "ticket" else self.calls).append(data)
                    self._arrived.notify_all()

    async def wait_for(self, kind: str, ticket_id: str, within: float) -> dict[str, Any] | None:
        """The ``kind`` event (ringing, transferred, ...) of ``ticket_id``, or None in time."""
        return await self._wait(
            lambda m: m.get("kind") == kind and m["ticket"].get("id") == ticket_id,
            self.tickets,
            within,
        )

    async def wait_for_call(self, kind: str, call_id: str, within: float) -> dict[str, Any] | None:
        """The ``kind`` event (supervisor_joined, ...) of call ``call_id``, or None in time."""
        return await self._wait(
            lambda m: m.get("kind") == kind and m.get("call_id") == call_id, self.calls, within
        )

    async def _wait(
        self,
        wanted: Callable[[dict[str, Any]], bool],
        messages: list[dict[str, Any]],
        within: float,
    ) -> dict[str, Any] | None:
        def found() -> dict[str, Any] | None:
            return next((message for message in messages if wanted(message)), None)

        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: found() is not None), within)
            except TimeoutError:
                return None
        return found()

    def call_kinds(self, call_id: str) -> list[str]:
        return [str(m.get("kind")) for m in self.calls if m.get("call_id") == call_id]

    def kinds(self, ticket_id: str) -> list[str]:
        return [str(m.get("kind")) for m in self.tickets if m["ticket"].get("id") == ticket_id]

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()
