"""The dial plan every call benchmark runs on: a carrier trunk (the SIPp caller) into the 12345
desk, calls to 110 sent to the 110 desk's trunk; ``extra`` adds what one bench needs more."""

from __future__ import annotations

PLAN = """
name = "bench"
[defaults]
ring_timeout = 30
[[trunks]]
name = "carrier"
destinations = ["sip:12345@127.0.0.1:{caller_port}"]
sources = ["127.0.0.1:{caller_port}"]
[[trunks]]
name = "pbx-110"
destinations = ["sip:110@127.0.0.1:{desk_110_port}"]
[[platforms]]
key = "12345"
label = "12345 hotline"
trunk = "carrier"
desk = true
[[platforms]]
key = "110"
label = "110 police desk"
trunk = "pbx-110"
desk = true
[[inbound]]
name = "to 110"
called = {{ exact = "110" }}
platform = "110"
[[categories]]
key = "criminal"
label = "criminal"
[[rules]]
origins = ["12345"]
categories = ["criminal"]
action = "transfer"
to = "110"
[[rules]]
origins = ["110"]
categories = ["criminal"]
action = "keep"
[overrides.urgent]
to = "110"
"""


def bench_plan(*, caller_port: int, desk_110_port: int, extra: str = "") -> str:
    return PLAN.format(caller_port=caller_port, desk_110_port=desk_110_port) + extra
