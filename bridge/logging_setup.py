"""Structured (JSON lines) logs that never carry a caller's number in clear.

Code avoids logging numbers in the first place; the filter is the safety net for anything that
slips through (a URI in an exception message, say): every run of 7 or more digits, the length
of a landline or mobile number, is masked to its first three and last two digits.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_NUMBER = re.compile(r"(?<!\d)(\d{3})\d{2,}(\d{2})(?!\d)")
_LONG_NUMBER = re.compile(r"(?<!\d)\d{7,}(?!\d)")


def mask_numbers(text: str) -> str:
    return _LONG_NUMBER.sub(lambda m: _NUMBER.sub(r"\1****\2", m.group(0)), text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask_numbers(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = mask_numbers(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
