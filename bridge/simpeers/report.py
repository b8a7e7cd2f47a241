"""How ``bridge demo`` prints its scene: each side labelled, numbers masked, verdicts kept."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable
from typing import TextIO

from bridge.calls.call import CallEvent
from bridge.logging_setup import mask_numbers

EVENT_LABELS = {
    "routed": "已路由",
    "no_route": "无路由",
    "progress": "对端振铃",
    "answered": "已接通，媒体经桥接锚定",
    "attempt_failed": "呼叫失败",
    "failover": "改呼下一个目的地",
    "caller_cancelled": "主叫取消",
    "hangup": "挂断",
    "legs_gone": "各方均已挂机，通话结束",
    "supervise_requested": "请求监听，呼叫班长话机",
    "supervisor_joined": "班长已加入",
    "supervise_mode_changed": "班长切换模式",
    "supervisor_left": "班长已离开",
    "supervise_failover": "班长话机未接通，改呼下一个目的地",
    "supervise_failed": "监听未成功",
    "transfer_failover": "转接目标未接通，改呼下一个目的地",
    "resume_refused": "话机拒绝恢复通话，稍后重试",
    "resume_failed": "恢复通话失败，通话保留，由坐席处理",
}


def _pad(text: str, width: int) -> str:
    """Left-align by display width: CJK characters take two columns in a terminal."""
    shown = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return text + " " * max(width - shown, 1)


class Script:
    """Prints the scene line by line, each side labelled, and keeps the verdicts."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self.failures: list[str] = []
        self.steps: list[tuple[str, bool]] = []

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def heading(self, text: str) -> None:
        self.print()
        self.print(text)

    def line(self, who: str, text: str, *, masked: bool = True) -> None:
        """One thing ``who`` saw; numbers masked unless the text holds none of a caller's
        (``masked=False`` for ticket ids and headers, which only look like numbers)."""
        elapsed = time.monotonic() - self.started
        self.print(f"  [{elapsed:6.2f}s] {_pad(who, 20)}{mask_numbers(text) if masked else text}")

    def voice(self, who: str) -> Callable[[str], None]:
        return lambda text: self.line(who, text)

    def check(self, ok: bool, text: str) -> bool:
        self.print(f"    {'✔' if ok else '✘'} {text}")
        if not ok:
            self.failures.append(text)
        return ok


def describe_call_event(event: CallEvent) -> str:
    """One line for what the bridge reported about a call, in the demo's words."""
    label = EVENT_LABELS.get(event.kind, event.kind)
    details = [f"{k}={v}" for k, v in event.data.items() if isinstance(v, str | int)]
    suffix = f"（{', '.join(details)}）" if details else ""
    return f"通话 {event.call_id} {label} → {event.state}{suffix}"


def without_link_token(value: str) -> str:
    """A Call-Info value with its link's signature elided: the link is a credential."""
    head, sep, rest = value.partition("?token=")
    if not sep:
        return value
    return f"{head}?token=…{rest[rest.find('>') :] if '>' in rest else ''}"


def hostport(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"
