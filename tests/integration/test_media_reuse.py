"""Released media port pairs are parked and reused instead of closed and bound again.

Creating, binding and closing two sockets costs system calls on every call, so the engine's relay
keeps a released pair bound; late packets from the phone that hung up are dropped while it waits,
and only a pair parked for ``reuse_after`` seconds is handed to a new call.
"""

from __future__ import annotations

import random
import socket

from integration.rtp_phones import HOST, Phone, rtp
from peers.process import wait_until

from bridge.media.relay import MediaRelay


def relay_with(reuse_after: float | None, max_parked: int = 2048) -> MediaRelay:
    base = random.randrange(42000, 58000, 2)
    return MediaRelay(HOST, base, base + 20, reuse_after=reuse_after, max_parked=max_parked)


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


async def test_a_parked_pair_drops_late_packets_then_carries_the_next_call(
    phones: list[Phone],
) -> None:
    caller, seat, hung_up = phones[:3]
    relay = relay_with(reuse_after=0.0)
    try:
        first = relay.allocate()
        port = first.port
        relay.release(first)
        assert (relay.parked, relay.pool.in_use, relay.pool.parked) == (1, 0, 1)
        assert not bindable(port), "a parked pair stays bound"
        hung_up.send(rtp(0, 1, 0, 0x1A7E, b"\xff" * 160), (HOST, port))
        await wait_until(
            lambda: relay.counters.late_after_release == 1, within=5, what="late packet dropped"
        )

        a_leg = relay.allocate()
        b_leg = relay.allocate()
        assert a_leg.port == port
        assert (relay.parked, relay.pool.in_use) == (0, 2)
        a_leg.set_remote(HOST, caller.port)
        b_leg.set_remote(HOST, seat.port)
        relay.connect(a_leg, b_leg)
        caller.send(rtp(0, 1, 0, 0xCA11, b"\xff" * 160), a_leg)
        seat.send(rtp(0, 1, 0, 0x5EA7, b"\xff" * 160), b_leg)
        await seat.wait_for_packets(1)
        await caller.wait_for_packets(1)
        assert seat.received[0][1].ssrc == b_leg.out.ssrc
        assert caller.received[0][1].ssrc == a_leg.out.ssrc
        assert relay.counters.late_after_release == 1
    finally:
        relay.close()
    assert relay.pool.in_use == relay.pool.parked == 0


async def test_a_pair_is_not_reused_before_its_quarantine_ends() -> None:
    relay = relay_with(reuse_after=60.0)
    try:
        first = relay.allocate()
        relay.release(first)
        second = relay.allocate()
        assert second.port != first.port
        assert relay.parked == 1
    finally:
        relay.close()
    # Closing the relay closes parked pairs too (the loop frees the sockets on its next pass).
    await wait_until(lambda: bindable(first.port), within=5, what="the parked port is freed")


async def test_without_room_to_park_the_pair_is_closed() -> None:
    relay = relay_with(reuse_after=0.0, max_parked=0)
    try:
        first = relay.allocate()
        relay.release(first)
        assert relay.parked == 0
        assert bindable(first.port)
        assert relay.pool.in_use == 0
    finally:
        relay.close()
