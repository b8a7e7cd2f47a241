"""baresip as a headless softphone peer, driven over its ctrl_tcp JSON channel.

Each instance gets its own config directory (config, accounts, a tone WAV for its microphone),
its own SIP, control and RTP ports, and a bounded lifetime (`baresip -t SECONDS`), so a test that
forgets it cannot leave it running.

Control protocol (baresip ctrl_tcp module): netstrings `LEN:JSON,` both ways. Commands are
`{"command": NAME, "params": STRING, "token": T}` and get `{"response": true, "ok": BOOL,
"data": TEXT, "token": T}`; events arrive unasked as `{"event": true, "type": TYPE, ...}`
(CALL_INCOMING, CALL_RINGING, CALL_ESTABLISHED, CALL_CLOSED, REGISTER_OK, REGISTER_FAIL, ...).
Commands act on the current call.

Behaviour worth knowing (baresip 1.0.0):
- The microphone is `aufile` playing the WAV; at its end baresip closes the call ("end of file"),
  so the WAV is written as long as the process may live.
- DTMF goes out only as RFC 4733 events (`sndcode`), never SIP INFO.
- Its Contact user is `USER-0x...`, not the account's user: a registrar must route by the
  address of record (To), not by the Contact's user part.
- With a registrar, each `quit` first unregisters (REGISTER on the registration's Call-ID with
  ;expires=0 on the Contact) and waits for the answer.
- `transfer URI` sends REFER with Refer-To without angle brackets and no Referred-By; after the
  NOTIFY with 200 it reports "Call transfered" and sends BYE itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import signal
import struct
import wave
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .ports import HOST, PortAllocator, default_allocator, is_bound
from .process import PeerProcess, tail, wait_until

Event = dict[str, Any]
MODULE_PATH = "/usr/lib/baresip/modules"


def write_tone_wav(path: Path, seconds: float, *, frequency: float = 440.0) -> Path:
    """A 16-bit 8 kHz mono sine: the only WAV format baresip's aufile takes without 486."""
    rate = 8000
    frames = int(rate * seconds)
    one_period = [
        int(8000 * math.sin(2 * math.pi * frequency * i / rate)) for i in range(rate // 40)
    ]
    samples = itertools.islice(itertools.cycle(one_period), frames)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack(f"<{frames}h", *samples))
    return path


def encode_netstring(payload: Mapping[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return str(len(body)).encode() + b":" + body + b","


async def read_netstring(reader: asyncio.StreamReader) -> Any:
    length = await reader.readuntil(b":")
    body = await reader.readexactly(int(length[:-1]) + 1)
    if body[-1:] != b",":
        raise ValueError(f"netstring not terminated by ',': {body[-10:]!r}")
    return json.loads(body[:-1])


class BaresipError(AssertionError):
    """baresip refused a command or did not do what a test waited for."""


class Baresip:
    """One baresip process with a user agent `user`.

    Without `registrar` it listens directly (`regint=0`) and callers reach it at `self.uri`.
    With `registrar` ("host:port") it registers there every `regint` seconds as
    `sip:user@registrar`, authenticating with `password` (and `auth_user`, default `user`);
    `outbound` ("sip:host:port") sends everything through a proxy instead.
    `answermode` is "auto" (answer at once) or "manual" (wait for `accept()`).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        user: str = "agent1",
        lifetime: int = 30,
        answermode: str = "auto",
        registrar: str | None = None,
        password: str | None = None,
        auth_user: str | None = None,
        outbound: str | None = None,
        regint: int = 60,
        sip_trace: bool = True,
        allocator: PortAllocator | None = None,
    ) -> None:
        ports = allocator or default_allocator()
        self.user = user
        self.lifetime = lifetime
        self.config_dir = workdir / f"baresip-{user}-{id(self):x}"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = ports.port()
        self.ctrl_port = ports.port()
        self.rtp_low = ports.block(10, align=2)
        self.rtp_high = self.rtp_low + 9
        self.log_path = self.config_dir / "baresip.log"
        self.process: PeerProcess | None = None
        self.events: list[Event] = []
        self._consumed: set[int] = set()
        self._changed = asyncio.Event()
        self._replies: dict[str, asyncio.Future[Event]] = {}
        self._tokens = itertools.count(1)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._closed_reason: str | None = None

        wav = write_tone_wav(self.config_dir / "tone8k.wav", lifetime + 1)
        config = [
            f"sip_listen {HOST}:{self.sip_port}",
            f"net_interface {HOST}",
            "audio_player alsa,null",
            "audio_alert alsa,null",
            f"audio_source aufile,{wav}",
            f"rtp_ports {self.rtp_low}-{self.rtp_high}",
            f"module_path {MODULE_PATH}",
            "module g711.so",
            "module alsa.so",
            "module aufile.so",
            "module ctrl_tcp.so",
            "module_tmp uuid.so",
            "module_tmp account.so",
            "module_app menu.so",
            f"ctrl_tcp_listen {HOST}:{self.ctrl_port}",
        ]
        (self.config_dir / "config").write_text("\n".join(config) + "\n", encoding="utf-8")

        if registrar is None:
            aor = f"sip:{user}@{HOST}:{self.sip_port}"
            params = ["regint=0"]
        else:
            aor = f"sip:{user}@{registrar}"
            params = [f"regint={regint}"]
            if password is not None:
                params += [f"auth_user={auth_user or user}", f"auth_pass={password}"]
            if outbound is not None:
                params.append(f'outbound="{outbound}"')
        params += [f"answermode={answermode}", "audio_codecs=pcmu,pcma"]
        self.aor = aor
        self.registers = registrar is not None
        self.account = f"<{aor}>;" + ";".join(params)
        # A registering account is created over the control channel once it is connected
        # (`uanew`), so that its REGISTER_OK / REGISTER_FAIL events are not lost.
        accounts = "" if self.registers else self.account + "\n"
        (self.config_dir / "accounts").write_text(accounts, encoding="utf-8")

        self.argv = ["baresip", "-f", str(self.config_dir), "-t", str(lifetime)]
        if sip_trace:
            self.argv.append("-s")

    @property
    def uri(self) -> str:
        """Where to send an INVITE to reach this phone directly."""
        return f"sip:{self.user}@{HOST}:{self.sip_port}"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.sip_port}"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, within: float = 10.0) -> Baresip:
        """Start baresip and connect to its control channel."""
        self.process = PeerProcess(self.argv, cwd=self.config_dir, output_path=self.log_path)
        await wait_until(
            lambda: is_bound(self.sip_port) and is_bound(self.ctrl_port, "tcp"),
            within=within,
            what=f"baresip {self.user} listening",
            process=self.process,
        )
        self._reader, self._writer = await asyncio.open_connection(HOST, self.ctrl_port)
        self._read_task = asyncio.create_task(self._read_loop(), name=f"baresip-{self.user}")
        if self.registers:
            await self.command("uanew", self.account)
        return self

    async def stop(self, within: float = 3.0) -> int | None:
        """Quit baresip; kill it (by PID) if it has not exited within `within` s.

        `quit` waits for registrations to be removed, which never ends if the registrar has gone
        (or, like SIPp, ignores a REGISTER on a finished Call-ID). baresip exits at once on a
        second SIGTERM, so that follows if `quit` is not enough.
        """
        if self.process is None:
            return None
        process = self.process
        if process.returncode is None and self._writer is not None:
            with contextlib.suppress(OSError, BaresipError):
                await self.command("quit", within=1.0)
        code = await process.wait(within / 3)
        for _ in range(2):
            if code is not None:
                break
            process.signal(signal.SIGTERM)
            code = await process.wait(within / 3)
        await self._close_channel()
        process.kill()  # kills if still running, reaps, closes the log
        return process.returncode

    def kill(self) -> None:
        """Synchronous last resort for fixture teardown."""
        if self.process is not None:
            self.process.kill()

    async def _close_channel(self) -> None:
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task
            self._read_task = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                message = await read_netstring(self._reader)
                if message.get("response"):
                    waiter = self._replies.pop(str(message.get("token")), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message)
                elif message.get("event"):
                    self.events.append(message)
                    self._changed.set()
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._closed_reason = f"control channel closed: {exc!r}"
        except (ValueError, asyncio.LimitOverrunError) as exc:
            self._closed_reason = f"control channel garbled: {exc!r}"
        finally:
            reason = self._closed_reason or "control channel reader stopped"
            for waiter in self._replies.values():
                if not waiter.done():
                    waiter.set_exception(BaresipError(f"{reason}\n{self.log_tail()}"))
            self._replies.clear()
            self._changed.set()

    # -- control -----------------------------------------------------------------------------

    async def command(self, name: str, params: str | None = None, *, within: float = 5.0) -> str:
        """Run one ctrl_tcp command and return its `data` text; raise if baresip says not ok."""
        if self._writer is None:
            raise BaresipError("baresip is not started")
        token = str(next(self._tokens))
        request: dict[str, str] = {"command": name, "token": token}
        if params is not None:
            request["params"] = params
        reply: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._replies[token] = reply
        self._writer.write(encode_netstring(request))
        await self._writer.drain()
        try:
            message = await asyncio.wait_for(reply, within)
        except TimeoutError:
            self._replies.pop(token, None)
            raise BaresipError(
                f"baresip {self.user}: no reply to {name} within {within} s\n{self.log_tail()}"
            ) from None
        if not message.get("ok"):
            raise BaresipError(
                f"baresip {self.user}: {name} {params or ''} failed: {message.get('data')!r}"
            )
        return str(message.get("data", ""))

    async def dial(self, uri: str) -> str:
        return await self.command("dial", uri)

    async def accept(self) -> str:
        return await self.command("accept")

    async def hangup(self) -> str:
        return await self.command("hangup")

    async def transfer(self, uri: str) -> str:
        """Blind transfer of the current call: baresip sends REFER (RFC 3515)."""
        return await self.command("transfer", uri)

    async def sndcode(self, digits: str) -> str:
        """Send DTMF `digits` on the current call as RFC 4733 events."""
        return await self.command("sndcode", digits)

    async def listcalls(self) -> str:
        return await self.command("listcalls")

    # -- events ------------------------------------------------------------------------------

    async def wait_event(
        self,
        kind: str,
        within: float = 5.0,
        *,
        match: Callable[[Event], bool] | None = None,
    ) -> Event:
        """The oldest event of type `kind` (e.g. "CALL_ESTABLISHED") not returned before.

        Events that arrived before the call count too, so there is no race between starting an
        action and waiting for its outcome. Each event is returned at most once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            for index, event in enumerate(self.events):
                if index in self._consumed or event.get("type") != kind:
                    continue
                if match is None or match(event):
                    self._consumed.add(index)
                    return event
            if self._read_task is None or self._read_task.done():
                raise BaresipError(
                    f"baresip {self.user}: waiting for {kind} but "
                    f"{self._closed_reason or 'control channel is closed'}\n"
                    f"events: {self.event_types()}\n{self.log_tail()}"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BaresipError(
                    f"baresip {self.user}: no {kind} within {within} s; "
                    f"events: {self.event_types()}\n{self.log_tail()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def event_types(self) -> list[str]:
        return [str(event.get("type")) for event in self.events]

    def log_tail(self, lines: int = 40) -> str:
        return f"--- baresip {self.user} log ---\n{tail(self.log_path, lines)}"
