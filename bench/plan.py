"""The bridge config and dial plan every call benchmark runs on: a throwaway config on loopback
(``bench_config``), and a plan with a carrier trunk (the SIPp caller) into the 12345 desk, calls to
110 sent to the 110 desk's trunk (``bench_plan``); ``extra`` adds what one bench needs more."""

from __future__ import annotations

CONFIG = """
[sip]
listen = "127.0.0.1:{sip_port}"
{sip_extra}
[media]
port_min = {media_min}
port_max = {media_max}
{media_extra}
[sidecar]
listen = "127.0.0.1:{http_port}"
link_secret = "bench-secret-0123456789-abcdef"
[storage]
url = "{storage_url}"
[registrar]
realm = "bridge"
[dialplan]
path = "plan.toml"
[log]
level = "warning"
[shutdown]
grace_s = 2
"""

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


def bench_config(
    *,
    sip_port: int,
    media_min: int,
    media_max: int,
    http_port: int,
    extra: str = "",
    sip_extra: str = "",
    media_extra: str = "",
    storage_url: str = "sqlite:///bridge.sqlite3",
) -> str:
    """``extra`` is appended as is: TOML tables (e.g. ``[[sidecar.tokens]]``) may follow others;
    ``sip_extra`` goes into ``[sip]`` (``max_call_rate = 450``), ``media_extra`` into
    ``[media]`` (``workers = 2``); ``storage_url`` is ``[storage] url`` (a file in the run's
    work directory unless a bench runs with ``--storage postgresql``, see ``bench/storage.py``)."""
    return (
        CONFIG.format(
            sip_port=sip_port,
            media_min=media_min,
            media_max=media_max,
            http_port=http_port,
            sip_extra=sip_extra,
            media_extra=media_extra,
            storage_url=storage_url,
        )
        + extra
    )


HOTLINE_PLAN = """
[[trunks]]
name = "pbx-12315"
destinations = ["sip:12315@127.0.0.1:{desk_port}"]
[[platforms]]
key = "12315"
label = "12315 consumer hotline"
trunk = "pbx-12315"
[[inbound]]
name = "to 12315"
called = {{ exact = "12315" }}
platform = "12315"
"""
"""Calls to 12315 reach the same desk as calls to 110, but are not urgent: admission limits
apply to them (calls to 110 are never refused)."""
