"""Logs never carry a caller's number in clear (design.md: personal data)."""

from __future__ import annotations

import json
import logging
import sys

from bridge.logging_setup import JsonFormatter, mask_numbers


def test_phone_numbers_are_masked_but_short_codes_and_ports_are_not() -> None:
    assert mask_numbers("caller 13800138000 rang") == "caller 138****00 rang"
    assert mask_numbers("landline 07715551234") == "landline 077****34"
    assert (
        mask_numbers("dialled 110 then 12345 on port 5060") == "dialled 110 then 12345 on port 5060"
    )


def test_json_lines_mask_numbers_in_messages_and_tracebacks() -> None:
    record = logging.LogRecord(
        "bridge.calls", logging.ERROR, __file__, 1, "from %s", ("sip:13912345678@x",), None
    )
    try:
        raise ValueError("bad user 13912345678")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "13912345678" not in line
    assert entry["msg"] == "from sip:139****78@x"
    assert entry["level"] == "error"
