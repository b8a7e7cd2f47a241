"""The agent's transfer key: DTMF digits collected into the dial plan's feature codes.

Theory of operation
-------------------
Digits from the agent's leg (RFC 4733 events or SIP INFO) are appended to a per-call buffer.
Because the plan's checker guarantees no code is a prefix of another, a complete code acts at
once; a buffer that is no code's prefix is dropped; a pause longer than the plan's digit
timeout starts over. The buffer's states are: empty → collecting (a code's prefix) → a complete
code (then empty again). Digits never reach the far party: the relay swallows the agent's
telephone-events, so the codes stay private.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PARTIAL = "partial"

Matcher = Callable[[str], Any]
"""The router's ``match_feature_code``: a code object, ``"partial"`` or None."""


@dataclass(slots=True)
class KeyBuffer:
    digits: str = ""
    last_at: float = 0.0

    def feed(self, digit: str, now: float, match: Matcher, timeout: float) -> Any | None:
        """The feature code completed by ``digit``, if any."""
        if self.digits and now - self.last_at > timeout:
            self.digits = ""
        self.last_at = now
        self.digits += digit
        found = match(self.digits)
        if found == PARTIAL:
            return None
        self.digits = ""
        if found is None:
            # Not a code: start over, so "1*1" still finds "*1".
            retry = match(digit)
            if retry == PARTIAL:
                self.digits = digit
            return retry if retry not in (None, PARTIAL) else None
        return found
