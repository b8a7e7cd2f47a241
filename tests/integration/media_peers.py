"""SIPp phones whose audio is a socket the test owns, and a call through the bridge between them.

Each phone's SDP names a port (``-key audio_port``) where a test's RTP peer listens, so the
test sends and checks the audio itself while SIPp carries the signalling.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from integration.bridge_under_test import BridgeUnderTest, CallWatcher, sipp_caller
from peers.ports import PortAllocator
from peers.sipp import SippRun

from bridge.media import g711

BridgeFactory = Callable[..., Awaitable[BridgeUnderTest]]
CODEC_NAMES = {g711.PCMU: "PCMU", g711.PCMA: "PCMA"}


def answer_at_port(
    sipp: Callable[..., SippRun], name: str, audio_port: int, codec: int, *, timeout: float
) -> SippRun:
    """A SIPp phone (started) that answers in ``codec`` only, at ``audio_port``."""
    keys = {
        "audio_port": str(audio_port),
        "answer_pt": str(codec),
        "answer_codec": CODEC_NAMES[codec],
    }
    return sipp("uas_answer_at_port", name=name, timeout=timeout, keys=keys)


def caller_at_port(
    tmp_path: Path,
    ports: PortAllocator,
    audio_port: int,
    scenario: str = "uac_pcma_at_port",
    **options: Any,
) -> SippRun:
    """A SIPp caller on the carrier's side (not started yet) whose audio is at ``audio_port``;
    ``options`` (duration_ms, timeout, name, service...) go to :func:`sipp_caller`."""
    return sipp_caller(tmp_path, ports, scenario, keys={"audio_port": str(audio_port)}, **options)


async def call_through_bridge(
    bridge: BridgeFactory,
    caller: SippRun,
    callee: SippRun,
    *others: SippRun,
    **bridge_options: Any,
) -> tuple[BridgeUnderTest, CallWatcher]:
    """Starts a bridge with ``caller`` as its carrier and ``callee`` as its PBX
    (``bridge_options`` besides: the extra_plan naming ``others``, t1_ms...), waits for
    ``callee`` and ``others`` to listen, then starts the caller's call to it. Returns the
    bridge and the watcher of its calls."""
    service = await bridge(carrier_port=caller.port, pbx_ports=[callee.port], **bridge_options)
    calls = service.watch_calls()
    for phone in (callee, *others):
        await phone.started()
    caller.remote_args(service.sip_address).start()
    return service, calls
