"""Time the SIP message parser and serialiser on a typical INVITE with SDP.

A plain script, no SIPp: ``python bench/bench_parser.py [N]`` prints microseconds per message,
the best of several batches (the machine is shared, so the minimum is the honest figure).
Every message has its own branch and tags, so the parser's memo of header values cannot answer
for it; the figure includes the eager checks every message gets (start line, From, To, Via,
CSeq, Call-ID, Max-Forwards, Content-Length).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from bridge.sip.message import Message, parse_message

INVITE = Path(__file__).resolve().parent.parent / "tests" / "data" / "golden" / "invite_sdp.sip"


def best_us(action: Callable[[], object], count: int, rounds: int = 15) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def variants(template: bytes, count: int, offset: int) -> list[bytes]:
    return [
        template.replace(b"z9hG4bK-524287-1", b"z9hG4bK-%07d" % (offset + i)).replace(
            b"tag=8f2c1a7e", b"tag=%08x" % (offset + i)
        )
        for i in range(count)
    ]


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    template = INVITE.read_bytes()
    batches = iter([variants(template, batch, k * batch) for k in range(16)])

    def parse_batch() -> None:
        for data in next(batches):
            parse_message(data)

    parsed: list[Message] = [parse_message(data) for data in variants(template, batch, 10**6)]

    def serialise_batch() -> None:
        for message in parsed:
            bytes(message)

    parse_us = best_us(parse_batch, batch)
    serialise_us = best_us(serialise_batch, batch)
    print(f"typical INVITE ({len(template)} bytes), best of 15 batches of {batch} messages")
    print(f"parse      {parse_us:6.2f} us/message")
    print(f"serialise  {serialise_us:6.2f} us/message")


if __name__ == "__main__":
    main()
