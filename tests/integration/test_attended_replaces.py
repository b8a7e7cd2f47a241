"""Attended transfer finished by the agent's phone: REFER with Replaces (RFC 3891, RFC 3515).

SIPp caller → bridge → SIPp agent (call A). The agent consults the target in a second call
through the bridge (call B, another SIPp with a known Call-ID and tag), then REFERs the caller
with Replaces naming call B. The bridge joins caller and target and hangs up both agent legs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from integration.bridge_under_test import BridgeUnderTest, sipp_caller
from peers.ports import PortAllocator
from peers.sipp import SippRun

from bridge.media_workers import WorkerMedia

pytestmark = pytest.mark.peers("sipp")

CONSULT_PLAN = """
[[trunks]]
name = "agent-phone"
sources = ["127.0.0.1:{consult_port}"]
[[trunks]]
name = "target"
destinations = ["sip:12313@127.0.0.1:{target_port}"]
[[platforms]]
key = "12313"
label = "烟草专线"
trunk = "target"
[[inbound]]
name = "consult 12313"
called = {{ exact = "12313" }}
platform = "12313"
"""


@pytest.mark.parametrize(
    "media_extra",
    ["", "workers = 2"],
    ids=["media-in-process", "media-workers"],  # the second joins legs of two workers
)
async def test_refer_with_replaces_joins_the_caller_and_the_consulted_target(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    sipp: Callable[..., SippRun],
    tmp_path: Path,
    ports: PortAllocator,
    media_extra: str,
) -> None:
    keys = {"consult_id": "consult-1.bridge-test", "consult_tag": "agenttag42"}
    agent = sipp("uas_refer_replaces", name="agent", duration_ms=2500, keys=keys, timeout=20)
    target = sipp("uas_basic", name="target", timeout=20)
    caller = sipp_caller(tmp_path, ports, duration_ms=7000, timeout=20)
    consult = sipp_caller(
        tmp_path,
        ports,
        "uac_consult",
        name="consult",
        service="12313",
        keys=keys,
        timeout=20,
        extra_args=["-cid_str", "consult-%u.bridge-test"],
    )
    service = await bridge(
        carrier_port=caller.port,
        pbx_ports=[agent.port],
        extra_plan=CONSULT_PLAN.format(consult_port=consult.port, target_port=target.port),
        media_extra=media_extra,
        media_ports=128,
    )
    calls = service.watch_calls()
    await agent.started()
    await target.started()
    caller.remote_args(service.sip_address).start()
    try:
        call_a = await calls.answered()
        consult.remote_args(service.sip_address).start()
        await calls.answered()  # the consultation is up
        (await agent.wait()).assert_ok(successful=1)  # REFER 202, NOTIFY 200, BYE
        (await consult.wait()).assert_ok(successful=1)  # the bridge hung up the consultation
        (await caller.wait()).assert_ok(successful=1)  # the caller talked on with the target
        (await target.wait()).assert_ok(successful=1)  # and its BYE reached the target
        await service.wait_idle()
        assert service.service is not None
        assert service.service.store is not None
        trail = await service.service.store.audit(call_a, limit=50)
        assert any(e.data.get("replaced_by") for e in trail)
        media = service.engine.media if service.engine is not None else None
        if isinstance(media, WorkerMedia):
            assert media.dispatch.moves == 1, "the target's leg moved to the caller's worker"
            assert not media.dispatch.legs
    finally:
        caller.kill()
        consult.kill()
