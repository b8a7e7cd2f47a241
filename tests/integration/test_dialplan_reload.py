"""Hot reload under load (issue: dial plans): calls keep flowing, a bad plan changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from integration.bridge_under_test import ADMIN_HEADERS, BridgeUnderTest, sipp_caller
from peers.ports import PortAllocator
from peers.sipp import SippRun

from bridge.tickets.sqlite_store import SqliteTicketStore

pytestmark = pytest.mark.peers("sipp")


async def reload(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with session.post(f"{url}/api/v1/admin/dialplan/reload", headers=ADMIN_HEADERS) as resp:
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
    caller = sipp_caller(
        tmp_path,
        ports,
        "uac",
        name="carrier",
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
    answered = service.watch_calls()
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
