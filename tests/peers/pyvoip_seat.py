"""pyVoIP 1.6.8 as an agent seat: registers to a server and answers the calls it sends.

pyVoIP is thread-based (a receive thread, a re-registration timer, two RTP threads per call,
one callback thread per incoming call). `PyVoIPSeat` records what happens in those threads as
events (registered, register_failed, call_incoming, call_answered, call_cancelled, call_ended)
that asyncio code awaits with a deadline: `await seat.wait_for("call_answered", 5)`.
pyVoIP's own warnings, which it raises in its threads, are recorded as "warning" events.

What pyVoIP 1.6.8 does on the wire (read from its source and seen against SIPp), so that the
bridge can be tested against it knowingly:
- It sends every packet to the registrar (server, port), whatever the Via or Contact says, so
  the bridge must be both its registrar and the origin of its calls.
- REGISTER goes to `sip:SERVER` (no port); To/From are `sip:USER@SERVER`. A first REGISTER with
  no credentials, then, on 401, one with `Authorization: Digest` (MD5, no qop) whose `uri` is
  `sip:SERVER;transport=UDP`, not the Request-URI: verify digests over the header's `uri`.
  It treats only 200 as success and gives up (status FAILED) after 3 failures; 407 is not
  handled. Every (re-/un-)registration uses a fresh Call-ID. Re-registration: expires - 5 s.
- Its receive thread starts one second after registering; an INVITE sent meanwhile waits in
  the socket and its retransmissions are then seen as further INVITEs (event "invite_repeat").
- It answers INVITE with 180 at once (whose Contact copies the caller's Contact), then calls
  the application one second later (a timer thread): answering takes >= 1 s.
- Its answer offers the codecs of the offer it knows (PCMU, PCMA, telephone-event 0-15),
  ptime 20, `a=sendrecv`; its own offers (outgoing calls, unused here) are PCMU + 101 only.
- CANCEL gets 200 but never a 487 for the INVITE, and pyVoIP would still answer the INVITE
  afterwards; this wrapper does not answer a cancelled call. The bridge must end the INVITE
  transaction itself (timer B/C).
- A BYE it sends as callee (`hangup`) copies the Via of the INVITE it received, i.e. the
  bridge's own sent-by and the INVITE's branch; its CSeq is the INVITE's CSeq + 1 and its
  Request-URI the caller's Contact. Answer it at the packet's source address (RFC 3581
  style), not at the Via, which points back at the bridge; match it by Call-ID and tags.
- Its 200 to a BYE carries a fresh random To-tag, not the dialog's: match responses by branch.
- Its ACK (to a 200 of its own INVITE) carries a new random To-tag (not used as callee).
- No answer at all to OPTIONS, REFER, NOTIFY, INFO, UPDATE: do not use them as keep-alives.
- It receives RFC 4733 DTMF (call.get_dtmf) but cannot send it; it cannot add SIP headers.
- Its threads report trouble with warnings.warn (e.g. RTP send failures); under pytest's
  "warnings are errors" those would become unhandled thread exceptions, so the seat records
  pyVoIP's warnings as "warning" events instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .ports import HOST, PortAllocator, default_allocator


@dataclass(frozen=True, slots=True, kw_only=True)
class SeatEvent:
    kind: str
    call_id: str = ""
    detail: str = ""
    at: float = field(default_factory=time.monotonic)


class _WarningsToEvents:
    """Stands in for the `warnings` module inside pyVoIP's modules (see module docstring)."""

    def __init__(self, record: Callable[[str], None]) -> None:
        self._record = record

    def warn(self, message: object, *args: Any, **kwargs: Any) -> None:
        self._record(str(message))

    def simplefilter(self, *args: Any, **kwargs: Any) -> None:
        """pyVoIP resets the process-wide filters after some warnings; ignore that."""


class PyVoIPSeat:
    """A pyVoIP phone registered as `username` to `server_host:server_port`.

    `answer=True` answers every call (about one second after the INVITE, pyVoIP's delay);
    `answer=False` lets calls ring (they stay in `calls` until cancelled or answered by
    `answer_call`). `register_timeout` bounds each wait for a registrar response.
    """

    def __init__(
        self,
        *,
        server_host: str = HOST,
        server_port: int,
        username: str,
        password: str,
        answer: bool = True,
        register_timeout: int = 3,
        allocator: PortAllocator | None = None,
    ) -> None:
        from pyVoIP.VoIP import VoIPPhone  # deferred: importing pyVoIP warns about audioop

        ports = allocator or default_allocator()
        self.username = username
        self.sip_port = ports.port()
        rtp_low = ports.block(10, align=2)
        self.auto_answer = answer
        self.events: list[SeatEvent] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._cancelled: set[str] = set()
        self._started = False
        seat = self

        class _SeatPhone(VoIPPhone):
            def callback(self, request: Any) -> None:
                if getattr(request, "method", None) == "CANCEL":
                    call_id = str(request.headers["Call-ID"])
                    seat._cancelled.add(call_id)
                    seat._record("call_cancelled", call_id)
                    return
                super().callback(request)

            def _callback_MSG_Invite(self, request: Any) -> None:
                call_id = str(request.headers["Call-ID"])
                known = call_id in self.calls
                super()._callback_MSG_Invite(request)
                seat._record("invite_repeat" if known else "call_incoming", call_id)

            def _callback_MSG_Bye(self, request: Any) -> None:
                super()._callback_MSG_Bye(request)
                seat._record("call_ended", str(request.headers["Call-ID"]))

            def fatal(self) -> None:
                seat._record("register_failed", detail="pyVoIP gave up registering")
                super().fatal()

        self.phone = _SeatPhone(
            server_host,
            server_port,
            username,
            password,
            myIP=HOST,
            callCallback=self._on_call,
            sipPort=self.sip_port,
            rtpPortLow=rtp_low,
            rtpPortHigh=rtp_low + 9,
        )
        self.phone.sip.register_timeout = register_timeout
        self._quiet_pyvoip_warnings()

    def _quiet_pyvoip_warnings(self) -> None:
        import pyVoIP.RTP
        import pyVoIP.VoIP.VoIP

        shim = _WarningsToEvents(lambda text: self._record("warning", detail=text))
        for module in (pyVoIP.RTP, pyVoIP.VoIP.VoIP):
            setattr(module, "warnings", shim)  # noqa: B010 (a module global, on purpose)

    @property
    def contact(self) -> str:
        return f"sip:{self.username}@{HOST}:{self.sip_port}"

    # -- pyVoIP threads -> events ------------------------------------------------------------

    def _record(self, kind: str, call_id: str = "", detail: str = "") -> None:
        with self._lock:
            self.events.append(SeatEvent(kind=kind, call_id=call_id, detail=detail))
            loop, changed = self._loop, self._changed
        if loop is not None and changed is not None:
            # RuntimeError: the loop is closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(changed.set)

    def _on_call(self, call: Any) -> None:
        """pyVoIP's per-call callback thread, one second after the INVITE."""
        call_id = str(call.call_id)
        if call_id in self._cancelled or not self.auto_answer:
            return
        self.answer_call(call)

    def answer_call(self, call: Any) -> None:
        try:
            call.answer()
        except Exception as exc:  # pyVoIP raises InvalidStateError and friends
            self._record("answer_failed", str(call.call_id), repr(exc))
            return
        self._record("call_answered", str(call.call_id))

    # -- asyncio side ------------------------------------------------------------------------

    async def start(self, within: float = 10.0) -> PyVoIPSeat:
        """Register; returns once registered, raises AssertionError if that failed."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._started = True
        await asyncio.wait_for(asyncio.to_thread(self._start_blocking), within)
        if self.status() != "REGISTERED":
            raise AssertionError(
                f"pyVoIP seat {self.username}: status {self.status()} after start; "
                f"events: {self.describe_events()}"
            )
        return self

    def _start_blocking(self) -> None:
        try:
            self.phone.start()
        except Exception as exc:
            self._record("register_failed", detail=repr(exc))
            return
        if self.status() == "REGISTERED":
            self._record("registered")
        else:
            self._record("register_failed", detail=f"status {self.status()}")

    def status(self) -> str:
        return str(self.phone.get_status().value)

    async def wait_for(
        self, kind: str, within: float = 5.0, *, count: int = 1, call_id: str | None = None
    ) -> SeatEvent:
        """Wait until `count` events of `kind` (for `call_id`, if given) have happened.

        Returns the `count`-th such event. Events recorded before the call count, so there is
        no race between causing something and waiting for it.
        """
        if self._loop is None or self._changed is None:
            raise RuntimeError("PyVoIPSeat.start() was not awaited")
        deadline = self._loop.time() + within
        while True:
            with self._lock:
                found = [
                    event
                    for event in self.events
                    if event.kind == kind and (call_id is None or event.call_id == call_id)
                ]
            if len(found) >= count:
                return found[count - 1]
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"pyVoIP seat {self.username}: {count} x {kind} not within {within} s; "
                    f"events: {self.describe_events()}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue

    def describe_events(self) -> str:
        with self._lock:
            return ", ".join(
                f"{e.kind}({e.call_id or e.detail})" if (e.call_id or e.detail) else e.kind
                for e in self.events
            )

    async def hangup(self, call_id: str | None = None) -> None:
        """Hang up an answered call (the only one if `call_id` is None): pyVoIP sends BYE."""
        calls = dict(self.phone.calls)
        if call_id is None:
            if len(calls) != 1:
                raise AssertionError(f"hangup: expected one call, have {list(calls)}")
            call_id = next(iter(calls))
        call = calls[call_id]
        await asyncio.to_thread(call.hangup)
        self._record("call_ended", call_id, "hung up by seat")

    async def stop(self, within: float = 10.0) -> None:
        """Hang up, unregister and stop pyVoIP's threads (they are not daemon threads)."""
        if not self._started:
            return
        self._started = False
        try:
            await asyncio.wait_for(asyncio.to_thread(self._stop_blocking), within)
        finally:
            self._loop = None

    def stop_sync(self) -> None:
        """Teardown without an event loop."""
        if self._started:
            self._started = False
            self._stop_blocking()

    def _stop_blocking(self) -> None:
        try:
            self.phone.stop()
        except Exception as exc:  # unregistering against a vanished registrar, and so on
            self._record("stop_failed", detail=repr(exc))
