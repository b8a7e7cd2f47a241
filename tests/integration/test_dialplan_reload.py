"""Hot reload under load (issue: dial plans): calls keep flowing, a bad plan changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from integration.bridge_under_test import BridgeUnderTest
from peers.ports import PortAllocator
from peers.sipp import SippRun

from bridge.calls.call import CallEvent
from bridge.tickets.sqlite_store import SqliteTicketStore

pytestmark = pytest.mark.peers("sipp")

ADMIN = {"Authorization": "Bearer admin-token-0123456789"}


async def reload(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with session.post(f"{url}/api/v1/admin/dialplan/reload", headers=ADMIN) as resp:
        body: dict[str, object] = await resp.json()
        return {"status": resp.status, **body}


async def test_reload_under_load_follows_the_valid_plan_and_refuses_the_bad_one(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    sipp: Callable[..., SippRun],
    tmp_path: Path,
    ports: PortAllocator,
) -> None:
    first = sipp("uas", calls=1000, name="pbx-a", timeout=40, trace_messages=False)
    second = sipp("uas", calls=1000, name="pbx-b", timeout=40, trace_messages=False)
    caller = SippRun(
        "uac",
        workdir=tmp_path,
        allocator=ports,
        name="carrier",
        service="110",
        calls=120,
        rate=20,
        timeout=40,
        trace_messages=False,
    )
    service = await bridge(carrier_port=caller.port, pbx_ports=[first.port])
    await first.started()
    await second.started()
    caller.remote_args(service.sip_address).start()
    plan = service.plan_path.read_text(encoding="utf-8")
    answered = _AnsweredCounter()
    assert service.engine is not None
    service.engine.event_listeners.append(answered)
    try:
        async with aiohttp.ClientSession() as session:
            await answered.reach(20)
            service.plan_path.write_text(
                plan.replace(f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"),
                encoding="utf-8",
            )
            good = await reload(session, service.http_url)
            assert good["status"] == 200
            assert good["ok"] is True, good
            await answered.reach(40)
            service.plan_path.write_text(plan + "\n[[trunks]]\nname = 1\n", encoding="utf-8")
            bad = await reload(session, service.http_url)
            assert bad["status"] == 422
            assert bad["error"] == "invalid_dialplan"
            errors = bad["detail"]
            assert isinstance(errors, list)
            assert errors
            assert all(str(e).startswith(str(service.plan_path)) for e in errors)
        result = await caller.wait()
        result.assert_ok(successful=120)
        await service.wait_idle()
        by_a = answered.by_destination.get(f"127.0.0.1:{first.port}", 0)
        by_b = answered.by_destination.get(f"127.0.0.1:{second.port}", 0)
        assert by_a >= 20
        assert by_b > 20, "after the refused plan, routing kept following the last valid one"
        assert by_a + by_b == 120
        assert service.service is not None
        await service.service.close()  # flushes the audit writer
        service.service = None
        store = await SqliteTicketStore.open(str(service.workdir / "bridge.sqlite3"))
        try:
            reloads = await store.audit(str(service.plan_path))
            assert [e.kind for e in reloads] == ["dialplan.reload_refused", "dialplan.reload"]
            assert reloads[0].data["problems"]
            assert reloads[1].actor == "api"
            answered_calls = [e for e in await store.audit(limit=1000) if e.kind == "call.answered"]
            assert len(answered_calls) == 120
        finally:
            await store.close()
    finally:
        caller.kill()


class _AnsweredCounter:
    """Listens to the bridge's call events and wakes waiters at a number of answered calls."""

    def __init__(self) -> None:
        self.count = 0
        self.by_destination: dict[str, int] = {}
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def __call__(self, events: list[CallEvent]) -> None:
        for event in events:
            if event.kind == "answered":
                self.count += 1
                where = str(event.data["destination"])
                self.by_destination[where] = self.by_destination.get(where, 0) + 1
        for target, event in self._waiters:
            if self.count >= target:
                event.set()

    async def reach(self, target: int, within: float = 20.0) -> None:
        event = asyncio.Event()
        self._waiters.append((target, event))
        self(events=[])
        await asyncio.wait_for(event.wait(), within)
