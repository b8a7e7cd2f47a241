"""``bridge demo``: the bridge on the example config, with simulated peers on loopback.

Everything the demo shows crosses real sockets. The bridge runs as ``bridge run`` would (engine,
media relay, sidecar, SQLite store) on a copy of the config in a temporary folder; around it sit
peers built on the project's own SIP stack (:mod:`bridge.simpeers`): a carrier trunk bringing
citizens' calls in, a 12345 seat and a 110 seat that REGISTER with digest credentials and
answer by themselves, and the 12345 and 110 PBXs that the plan's trunks ring. Then a short
script plays, and every side prints what it saw:

1. a citizen calls 12345; the seat the plan routes to rings, answers, audio flows both ways
   (each side counts the RTP packets it got and names the tone it heard), the citizen hangs up;
2. a citizen calls 110 and reaches the 110 seat, who ends the call;
3. one-click transfer 12345 → 110: the 12345 seat presses the plan's transfer key ``*1`` as
   RFC 4733 telephone-events; the bridge rings the 110 PBX with the ticket headers while the
   citizen stays with the seat; the 110 platform's screen pops the ticket as the PBX rings; the
   PBX opens the ticket from its signed ``Call-Info`` link; on answer the seat is released and
   the citizen talks to 110;
4. transfer 110 → 12345 through the HTTP API with a ticket the 110 desk filled in (summary,
   location, urgency), seen the same way from the 12345 side;
5. a three-way call: the 12345 seat presses ``*2`` (SIP INFO ``application/dtmf-relay``), 110
   joins, and each of the three hears the other two.

With ``--once`` the command exits after the script (status 1 if a step failed); otherwise the
bridge keeps serving its console until SIGINT/SIGTERM. Ports of the example config that are
taken are replaced by free ones, and the demo says so; ``BRIDGE_DEMO_FREE_PORTS=1`` (or
``free_ports=True``) takes free ports throughout, for tests on a busy machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import tomllib
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from bridge.calls.call import CallEvent
from bridge.config import Config, ConfigError, load_config
from bridge.dialplan.loader import load_text
from bridge.dialplan.router import Router
from bridge.engine import Engine, _runner
from bridge.logging_setup import mask_numbers, setup_logging
from bridge.service import Service
from bridge.simpeers import PeerCall, SimPhone, SipEndpoint, layout
from bridge.simpeers.desk import (
    Desk,
    ScreenPop,
    call_info_url,
    open_ticket_link,
    ticket_headers,
)
from bridge.simpeers.phone import codec_name

FREE_PORTS_ENV = "BRIDGE_DEMO_FREE_PORTS"
EXAMPLE_CONFIG = "config.example.toml"
PLATFORMS = ("12345", "110")
CITIZENS = {"12345": "13800138000", "110": "13900139001"}
"""Made-up caller numbers; shown masked like everything the bridge logs."""
TONES = {"carrier": 440.0, "12345": 620.0, "110": 820.0, "pbx": 1000.0}
"""Each party sends its own tone, so what a side hears tells whose audio reached it."""
RTP_PACKETS = 50
"""Packets each side must receive in a call: one second of 20 ms frames."""
STEP_TIMEOUT = 5.0
TICKET_FROM_110 = {
    "origin": "110",
    "category": "environment",
    "caller_number": CITIZENS["110"],
    "summary": "工地夜间施工噪声扰民，非警情，转 12345 办理",
    "location": "幸福路 8 号在建工地",
    "urgent": False,
}
"""What the 110 desk fills in before handing a non-police call to 12345 (routing list B)."""

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
}


@dataclass(frozen=True, slots=True)
class Party:
    """One party of a transferred call, as the script names and hears them."""

    label: str
    name: str
    phone: SimPhone
    call: PeerCall
    tone_hz: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferScene:
    """One transfer step: who hands the citizen over, to whom, how it is triggered."""

    origin: str
    target: str
    mode: str  # "blind" | "three_way"
    keys: str = ""
    """The seat's feature code; empty: the desk uses the HTTP API."""
    via: str = "rfc4733"
    ender: str = "citizen"  # who hangs up at the end: "citizen" | "target"


def run_demo(
    config_path: str | None = None, once: bool = False, *, free_ports: bool | None = None
) -> int:
    """Run the demo; the exit status of ``bridge demo``."""
    if free_ports is None:
        free_ports = os.environ.get(FREE_PORTS_ENV, "") not in ("", "0")
    base = Path(config_path) if config_path else _example_config()
    if base is None:
        print(f"bridge demo: {EXAMPLE_CONFIG} not found; pass --config FILE", file=sys.stderr)
        return 1
    setup_logging("warning")
    with tempfile.TemporaryDirectory(prefix="bridge-demo-") as folder:
        demo = Demo(base, Path(folder), once=once, free_ports=free_ports, out=sys.stdout)
        try:
            status: int = _runner()(demo.run())
        except KeyboardInterrupt:
            return 130
    return status


def _example_config() -> Path | None:
    for folder in (Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = folder / EXAMPLE_CONFIG
        if candidate.is_file():
            return candidate
    return None


# -- output ----------------------------------------------------------------------------------


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


# -- the demo ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Seat:
    seat_id: str
    label: str
    password: str
    phone: SimPhone | None = None


@dataclass(slots=True)
class Cast:
    """Everyone on the demo's stage, bound to their sockets."""

    carrier: SimPhone
    pbx: dict[str, SimPhone] = field(default_factory=dict)
    seats: dict[str, Seat] = field(default_factory=dict)


class Demo:
    def __init__(
        self, base: Path, folder: Path, *, once: bool, free_ports: bool, out: TextIO
    ) -> None:
        self.base = base
        self.folder = folder
        self.once = once
        self.free_ports = free_ports
        self.script = Script(out)
        self.engine: Engine | None = None
        self.service: Service | None = None
        self.cast: Cast | None = None
        self.notes: list[str] = []
        self.answered_calls: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> int:
        """Set up, play, then serve unless ``once``; SIGINT/SIGTERM stop it at any point."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await self._run_until(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self._tear_down()

    async def _run_until(self, stop: asyncio.Event) -> int:
        try:
            await self._set_up()
        except (ConfigError, DemoSetupError, OSError) as exc:
            for line in str(exc).splitlines():
                print(f"bridge demo: {line}", file=sys.stderr)
            return 1
        if not await _unless_stopped(self._play(), stop):
            self.script.print("\n已中断。")
            return 130
        status = 1 if self.script.failures else 0
        if not self.once:
            await self._serve(stop)
        return status

    # -- setting the stage -------------------------------------------------------------------

    async def _set_up(self) -> None:
        s = self.script
        base_config = load_config(self.base)
        plan_path = base_config.resolve(base_config.dialplan.path)
        try:
            plan_text = plan_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DemoSetupError(f"{plan_path}: cannot read: {exc.strerror}") from exc
        plan_text, router = await self._bind_peers(plan_text, str(plan_path))
        seats = self._seats_on_duty(router, base_config)
        config_path = self._write_copies(base_config, plan_text, seats)
        config = load_config(config_path)
        self.engine = Engine(config)
        await self.engine.start()
        self.engine.event_listeners.append(self._on_call_events)
        self.service = Service(self.engine, config)
        await self.service.start()
        assert self.cast is not None
        self.cast.seats = seats

        s.print("bridge demo — 12345 ↔ 110 联动桥接演示（真实 SIP/RTP，环回地址）")
        s.print(f"  工作目录   {self.folder}（配置副本、拨号计划副本、SQLite）")
        s.print(f"  桥接 SIP   {_hostport(self.engine.transport.local)}（UDP+TCP）")
        s.print(f"  控制台     {self._console_url()}")
        peers = [f"运营商中继 {_hostport(self.cast.carrier.endpoint.local)}"]
        peers += [f"{key} PBX {_hostport(p.endpoint.local)}" for key, p in self.cast.pbx.items()]
        s.print(f"  模拟对端   {' · '.join(peers)}")
        for note in self.notes:
            s.print(f"  注意       {note}")

    async def _bind_peers(self, plan_text: str, filename: str) -> tuple[str, Router]:
        router = _load_plan(plan_text, filename)
        wanted = layout.plan_peers(router.plan, PLATFORMS)
        moves: dict[int, int] = {}
        carrier_wanted = wanted.carrier or layout.CARRIER_PORT
        carrier = await self._phone("carrier", carrier_wanted, "运营商中继", TONES["carrier"])
        moves[carrier_wanted] = carrier.endpoint.port
        if wanted.carrier is None:
            names = {t.name for t in router.plan.trunks}
            plan_text = layout.add_carrier_trunk(plan_text, carrier.endpoint.port, names)
            self.notes.append("拨号计划没有运营商中继（trunk sources），演示副本里已加上")
        self.cast = Cast(carrier=carrier)
        for key, port in wanted.pbx.items():
            phone = await self._phone("pbx", port, f"{key} PBX", TONES["pbx"])
            self.cast.pbx[key] = phone
            moves[port] = phone.endpoint.port
        plan_text = layout.move_ports(plan_text, moves)
        return plan_text, _load_plan(plan_text, filename)

    async def _phone(self, user: str, wanted: int, label: str, tone: float) -> SimPhone:
        endpoint = SipEndpoint(layout.HOST)
        try:
            await endpoint.start(0 if self.free_ports else wanted)
        except OSError:
            await endpoint.start(0)
        if not self.free_ports and endpoint.port != wanted:
            self.notes.append(f"{label}：端口 {wanted} 已被占用，改用 {endpoint.port}")
        return SimPhone(endpoint, user=user, say=self.script.voice(label), tone_hz=tone)

    def _seats_on_duty(self, router: Router, config: Config) -> dict[str, Seat]:
        """The seat each desk's inbound rule rings right now (day or night shift)."""
        passwords = {seat.user: seat.password for seat in config.registrar.seats}
        names = {seat.id: seat.name or seat.id for seat in router.plan.seats}
        seats: dict[str, Seat] = {}
        for platform in PLATFORMS:
            now = datetime.now(router.zone)
            decision = router.route_inbound(platform, CITIZENS[platform], now)
            if decision is None or not decision.seats:
                raise DemoSetupError(f"the dial plan sends calls to {platform} to no seat group")
            seat_id = decision.seats[0]
            password = passwords.get(seat_id)
            if password is None:
                password = f"demo-secret-{seat_id}"
                self.notes.append(f"座席 {seat_id} 在配置里没有口令，演示副本里已加上")
            seats[platform] = Seat(seat_id, names.get(seat_id, seat_id), password)
        return seats

    def _write_copies(self, config: Config, plan_text: str, seats: dict[str, Seat]) -> Path:
        data = tomllib.loads(self.base.read_text(encoding="utf-8"))
        sip_port, moved = layout.choose_port(config.sip.address[1], any_port=self.free_ports)
        if moved and not self.free_ports:
            self.notes.append(f"桥接 SIP：端口 {config.sip.address[1]} 已被占用，改用 {sip_port}")
        http_port, moved = layout.choose_port(
            config.sidecar.address[1], udp=False, any_port=self.free_ports
        )
        if moved and not self.free_ports:
            wanted_http = config.sidecar.address[1]
            self.notes.append(f"控制台：端口 {wanted_http} 已被占用，改用 {http_port}")
        data.setdefault("sip", {})["listen"] = f"{layout.HOST}:{sip_port}"
        data.setdefault("sidecar", {})["listen"] = f"{layout.HOST}:{http_port}"
        data["sidecar"].pop("base_url", None)
        data["storage"] = {"url": "sqlite:///bridge.sqlite3"}
        data["dialplan"] = {"path": "dialplan.toml"}
        data["log"] = {"level": "warning"}
        data["shutdown"] = {"grace_s": 2}
        if config.media.hold_audio:
            data["media"]["hold_audio"] = str(config.resolve(config.media.hold_audio))
        registrar = data.setdefault("registrar", {})
        known = {entry["user"] for entry in registrar.get("seats", [])}
        for seat in seats.values():
            if seat.seat_id not in known:
                registrar.setdefault("seats", []).append(
                    {"user": seat.seat_id, "password": seat.password}
                )
        (self.folder / "dialplan.toml").write_text(plan_text, encoding="utf-8")
        path = self.folder / "config.toml"
        path.write_text(layout.to_toml(data), encoding="utf-8")
        return path

    # -- the script ----------------------------------------------------------------------------

    async def _play(self) -> None:
        s = self.script
        assert self.engine is not None
        assert self.cast is not None
        bridge = self.engine.transport.local
        s.heading("准备：坐席摘要认证注册（RFC 3261 §10、§22）")
        for platform, seat in self.cast.seats.items():
            endpoint = SipEndpoint(layout.HOST)
            await endpoint.start(0)
            seat.phone = SimPhone(
                endpoint, user=seat.seat_id, say=s.voice(seat.label), tone_hz=TONES[platform]
            )
            response = await seat.phone.register(bridge, seat.password, expires=3600)
            s.check(response.status == 200, f"{seat.label}（{seat.seat_id}）注册成功")
        await self._check_console()

        steps = (
            (
                "12345",
                "第 1 步：市民拨打 12345 → 12345 坐席接听，双向通话，市民挂机",
                self._call_12345,
            ),
            ("110", "第 2 步：市民拨打 110 → 110 接警员接听，双向通话，接警员挂机", self._call_110),
            (
                "12345",
                "第 3 步：一键转接 12345 → 110（坐席按 *1，RFC 4733），坐席释放",
                self._transfer_by_key,
            ),
            (
                "110",
                "第 4 步：110 → 12345 经 HTTP API 转接并附工单，接警员释放",
                self._transfer_by_api,
            ),
            (
                "12345",
                "第 5 步：三方通话 12345 + 110（坐席按 *2，SIP INFO），三方互通",
                self._three_way,
            ),
        )
        for number, title, step in steps:
            s.heading(title)
            failures = len(s.failures)
            try:
                await step(number)
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                s.check(False, f"步骤中断：{type(exc).__name__} {exc}")
            ok = len(s.failures) == failures
            s.steps.append((title.split("：", 1)[0], ok))
            s.print(f"  {'✔ 通过' if ok else '✘ 未通过'}：{title.split('：', 1)[0]}")

        passed = sum(1 for _, ok in s.steps if ok)
        s.heading(f"结果：{passed}/{len(s.steps)} 步通过" + ("" if not s.failures else "，有失败"))
        for failure in s.failures:
            s.print(f"  ✘ {failure}")

    async def _call_12345(self, number: str) -> None:
        call, seat_call = await self._citizen_calls(number)
        if call is None or seat_call is None:
            return
        assert self.cast is not None
        s = self.script
        await self._check_api_sees_call(self.cast.seats[number].seat_id)
        status = await self.cast.carrier.hangup(call)
        s.check(status == 200, "市民挂机：BYE 得到 200 OK")
        await self._await(seat_call.ended.wait(), "坐席收到 BYE")
        s.check(seat_call.ended_by == "remote", "坐席一侧通话随之结束")
        await self._check_idle()

    async def _call_110(self, number: str) -> None:
        call, seat_call = await self._citizen_calls(number)
        if call is None or seat_call is None:
            return
        assert self.cast is not None
        seat = self.cast.seats[number]
        assert seat.phone is not None
        status = await seat.phone.hangup(seat_call)
        self.script.check(status == 200, "接警员挂机：BYE 得到 200 OK")
        await self._await(call.ended.wait(), "市民一侧收到 BYE")
        self.script.check(call.ended_by == "remote", "市民一侧通话随之结束")
        await self._check_idle()

    # -- transfers -------------------------------------------------------------------------------

    async def _transfer_by_key(self, number: str) -> None:
        await self._transfer(TransferScene(origin=number, target="110", mode="blind", keys="*1"))

    async def _transfer_by_api(self, number: str) -> None:
        await self._transfer(
            TransferScene(origin=number, target="12345", mode="blind", ender="target")
        )

    async def _three_way(self, number: str) -> None:
        await self._transfer(
            TransferScene(origin=number, target="110", mode="three_way", keys="*2", via="info")
        )

    async def _transfer(self, scene: TransferScene) -> None:
        """The citizen reaches a seat, the seat hands them over, each side says what it saw."""
        answered_before = len(self.answered_calls)
        call, seat_call = await self._citizen_calls(scene.origin)
        if call is None or seat_call is None:
            return
        pop = await self._open_screen_pop(scene.target)
        try:
            await self._transfer_call(scene, call, seat_call, pop, answered_before)
        finally:
            if pop is not None:
                await pop.close()
        await self._check_idle()

    async def _transfer_call(
        self,
        scene: TransferScene,
        call: PeerCall,
        seat_call: PeerCall,
        pop: ScreenPop | None,
        answered_before: int,
    ) -> None:
        s = self.script
        assert self.cast is not None
        seat = self.cast.seats[scene.origin]
        assert seat.phone is not None
        if scene.keys:
            pressed = await seat.phone.press_keys(
                seat_call, scene.keys, via=scene.via, within=STEP_TIMEOUT
            )
            how = "RFC 4733" if scene.via == "rfc4733" else "SIP INFO"
            s.check(pressed, f"{seat.label} 按下 {scene.keys}（{how}）")
        elif not await self._desk_transfer(scene, answered_before):
            return
        receiver = await self._next_ringing(scene.target)
        if not s.check(
            receiver is not None,
            f"{scene.target} 一方振铃（市民仍在与 {seat.label} 通话）",
        ):
            return
        assert receiver is not None
        s.check(
            not seat_call.ended.is_set() and not call.ended.is_set(),
            "振铃期间市民与坐席的通话不受影响",
        )
        ticket_id = await self._receive_ticket(receiver.label, receiver.call, seat.seat_id)
        if ticket_id and pop is not None:
            await self._check_screen_pop(pop, scene.target, ticket_id)
        await self._await(receiver.call.answered.wait(), f"{receiver.label} 接听")
        if scene.mode == "blind":
            await self._await(seat_call.ended.wait(), f"{seat.label}的通话被释放")
            s.check(
                seat_call.ended_by == "remote",
                f"转接完成，桥接释放了 {seat.label}（坐席收到 BYE）",
            )
        citizen = Party("运营商中继", "市民", self.cast.carrier, call, TONES["carrier"])
        parties = [citizen, receiver]
        if scene.mode == "three_way":
            parties.append(
                Party(seat.label, seat.label, seat.phone, seat_call, TONES[scene.origin])
            )
        await self._check_transferred_audio(parties)
        if scene.mode == "three_way":
            s.check(not seat_call.ended.is_set(), f"三方通话：{seat.label} 留在通话中")
        if ticket_id and pop is not None:
            done = await pop.wait_for("transferred", ticket_id, STEP_TIMEOUT)
            s.line(f"{scene.target} 工作台", f"工单事件：{' → '.join(pop.kinds(ticket_id))}")
            s.check(done is not None, f"工单 {ticket_id} 状态为已转接（transferred）")
        ender = receiver if scene.ender == "target" else citizen
        await self._hang_up_all(ender, [p for p in parties if p is not ender])

    async def _next_ringing(self, platform: str) -> Party | None:
        """Whoever the bridge rings for ``platform``: the desk's seat on duty when it is
        registered (a transfer target is dialled like an incoming call), else its PBX."""
        assert self.cast is not None
        candidates = []
        seat = self.cast.seats.get(platform)
        if seat is not None and seat.phone is not None:
            candidates.append((seat.label, seat.phone, TONES[platform]))
        if platform in self.cast.pbx:
            candidates.append((f"{platform} PBX", self.cast.pbx[platform], TONES["pbx"]))
        loop = asyncio.get_running_loop()
        waits = {loop.create_task(c[1].next_incoming(STEP_TIMEOUT)): c for c in candidates}
        ringing = None
        pending = set(waits)
        while pending and ringing is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                peer_call = task.result()
                if peer_call is not None and ringing is None:
                    label, phone, tone = waits[task]
                    ringing = Party(label, label, phone, peer_call, tone)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return ringing

    async def _desk_transfer(self, scene: TransferScene, answered_before: int) -> bool:
        s = self.script
        assert self.cast is not None
        desk_name = f"{scene.origin} 工作台"
        token = self._token_to_transfer(self.cast.seats[scene.origin].seat_id)
        if not s.check(token is not None, "配置里有可发起转接的令牌"):
            return False
        if not s.check(len(self.answered_calls) > answered_before, "桥接报告了这路通话的编号"):
            return False
        call_id = self.answered_calls[-1]
        ticket = {**TICKET_FROM_110, "origin": scene.origin}
        s.line(
            desk_name,
            f"填写工单：{ticket['summary']}；地点 {ticket['location']}；"
            f"紧急 {'是' if ticket['urgent'] else '否'}",
        )
        s.line(desk_name, f"POST /api/v1/calls/{call_id}/transfer（target={scene.target}）")
        reply = await Desk(self._console_url(), token).transfer(
            call_id, scene.target, scene.mode, ticket
        )
        stored = reply.body.get("ticket", {})
        s.line(
            desk_name,
            f"← {reply.status}，工单 {stored.get('id')} 状态 {stored.get('state')}",
            masked=False,
        )
        return s.check(reply.status == 202, "HTTP API 受理转接（202），工单已先行保存")

    async def _receive_ticket(self, who: str, target_call: PeerCall, seat_id: str) -> str:
        """Print the ticket headers the target got, open the ticket from its link; its id."""
        s = self.script
        headers = ticket_headers(target_call.invite)
        for name, value in headers.items():
            s.line(who, f"收到 {name}: {_without_link_token(value)}", masked=False)
        ticket_id = str(headers.get("X-Ticket-Id", ""))
        uui = headers.get("User-to-User", "")
        s.check(
            bool(ticket_id) and uui.split(";", 1)[0] == ticket_id.encode().hex(),
            "INVITE 带着工单号（X-Ticket-Id 与 User-to-User 一致）",
        )
        s.check(seat_id in headers.get("Referred-By", ""), f"Referred-By 指明转出坐席 {seat_id}")
        url = call_info_url(headers.get("Call-Info", ""))
        if not s.check(url is not None, "Call-Info 给出工单链接（purpose=ticket）"):
            return ticket_id
        assert url is not None
        reply = await open_ticket_link(url)
        ticket = reply.body.get("ticket", {})
        s.line(who, f"GET Call-Info 链接（无需令牌，签名即凭据）→ {reply.status}")
        s.line(
            who,
            f"工单 {ticket.get('id')}：来源 {ticket.get('origin')}，类别 {ticket.get('category')}，"
            f"紧急 {'是' if ticket.get('urgent') else '否'}",
            masked=False,
        )
        s.line(who, f"  摘要：{ticket.get('summary') or '（未填）'}")
        s.line(who, f"  地点：{ticket.get('location') or '（未填）'}")
        s.check(
            reply.status == 200 and ticket.get("id") == ticket_id,
            f"{who} 凭链接取到工单 {ticket_id}",
        )
        return ticket_id

    async def _open_screen_pop(self, platform: str) -> ScreenPop | None:
        token = self._token_to_follow(platform)
        if token is None:
            self.script.line(f"{platform} 工作台", "配置里没有可订阅事件的令牌，跳过弹屏")
            return None
        return await ScreenPop.open(
            self._console_url(), token, platform=platform, within=STEP_TIMEOUT
        )

    async def _check_screen_pop(self, pop: ScreenPop, platform: str, ticket_id: str) -> None:
        message = await pop.wait_for("ringing", ticket_id, STEP_TIMEOUT)
        ticket = message["ticket"] if message is not None else {}
        if message is not None:
            self.script.line(
                f"{platform} 工作台",
                f"WebSocket 弹屏：工单 {ticket_id} 振铃中（{ticket.get('category')}，"
                f"{ticket.get('summary') or '无摘要'}）",
                masked=False,
            )
        self.script.check(message is not None, f"{platform} 工作台在来电振铃时收到工单弹屏")

    async def _check_transferred_audio(self, parties: list[Party]) -> None:
        """After the answer, each party must hear exactly the others, by their tones."""
        s = self.script
        counts = [party.call.media.received for party in parties]
        arrived = [
            await party.call.media.wait_received(count + RTP_PACKETS, STEP_TIMEOUT)
            for party, count in zip(parties, counts, strict=True)
        ]
        candidates = tuple(sorted(set(TONES.values())))
        for party in parties:
            others = [other for other in parties if other is not party]
            heard = party.call.media.heard_tones(candidates)
            shown = "、".join(f"{hz:.0f} Hz" for hz in heard) or "无声"
            s.line(party.label, f"收到 RTP {party.call.media.received} 包，听到 {shown}")
            names = " 与 ".join(f"{o.name}（{o.tone_hz:.0f} Hz）" for o in others)
            s.check(set(heard) == {o.tone_hz for o in others}, f"{party.name} 听到 {names}")
        s.check(all(arrived), f"转接后 RTP 经桥接转发（每方再收 {RTP_PACKETS} 包以上）")

    async def _hang_up_all(self, ender: Party, others: list[Party]) -> None:
        s = self.script
        status = await ender.phone.hangup(ender.call)
        s.check(status == 200, f"{ender.name} 挂机：BYE 得到 200 OK")
        for other in others:
            await self._await(other.call.ended.wait(), f"{other.name} 收到 BYE")
            s.check(other.call.ended_by == "remote", f"{other.name} 一侧通话随之结束")

    async def _citizen_calls(self, number: str) -> tuple[PeerCall | None, PeerCall | None]:
        """Ring ``number`` from the carrier; check the seat on duty answers and audio flows."""
        s = self.script
        assert self.engine is not None
        assert self.cast is not None
        seat = self.cast.seats[number]
        assert seat.phone is not None
        citizen = CITIZENS[number]
        s.line("运营商中继", f"市民 {citizen} 来电，经运营商中继送往桥接")
        call = await self.cast.carrier.dial(
            number, self.engine.transport.local, from_user=citizen, within=STEP_TIMEOUT
        )
        if not s.check(call.status == 200, f"呼叫 {number} 接通（最终应答 {call.status}）"):
            return None, None
        seat_call = await seat.phone.next_incoming(STEP_TIMEOUT)
        if not s.check(seat_call is not None, f"{seat.label}（{seat.seat_id}）振铃并接听"):
            return call, None
        assert seat_call is not None
        s.check(
            seat_call.remote_user == citizen,
            f"{seat.label} 看到的主叫号码是市民的号码（{mask_numbers(citizen)}）",
        )
        await self._await(seat_call.answered.wait(), "坐席收到 ACK")
        got_caller = await call.media.wait_received(RTP_PACKETS, STEP_TIMEOUT)
        got_seat = await seat_call.media.wait_received(RTP_PACKETS, STEP_TIMEOUT)
        agent = "接警员" if number == "110" else "坐席"
        self._report_audio("运营商中继", "市民", call, TONES[number], agent)
        self._report_audio(seat.label, agent, seat_call, TONES["carrier"], "市民")
        s.check(got_caller and got_seat, f"RTP 双向经桥接转发（每侧至少 {RTP_PACKETS} 包）")
        return call, seat_call

    def _report_audio(
        self, who: str, side: str, call: PeerCall, expected_hz: float, other: str
    ) -> None:
        heard = call.media.heard_hz()
        codecs = "/".join(codec_name(pt) for pt in sorted(call.media.payload_types)) or "无"
        tone = f"{heard:.0f} Hz" if heard is not None else "无声"
        received, sent = call.media.received, call.media.sent
        self.script.line(who, f"收到 RTP {received} 包（{codecs}），发出 {sent} 包，听到 {tone}")
        self.script.check(
            heard is not None and abs(heard - expected_hz) < 20,
            f"{side}听到的是{other}的声音（{expected_hz:.0f} Hz）",
        )

    async def _check_api_sees_call(self, seat_id: str) -> None:
        assert self.service is not None
        token = self._read_token()
        if token is None:
            self.script.line("控制台", "配置里没有可读通话的令牌，跳过 API 查询")
            return
        url = f"{self._console_url()}/api/v1/calls"
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as reply:
            body = await reply.json() if reply.status == 200 else {}
        calls = body.get("calls", [])
        legs = [f"{leg['role']}={leg['peer']}" for c in calls for leg in c.get("legs", [])]
        states = ",".join(str(c.get("state")) for c in calls)
        self.script.line(
            "控制台",
            f"GET /api/v1/calls → {reply.status}：{len(calls)} 路通话 [{states}] {' '.join(legs)}",
        )
        self.script.check(
            reply.status == 200 and any(seat_id in leg for leg in legs),
            f"HTTP API 显示这路通话接到了 {seat_id}",
        )

    async def _check_console(self) -> None:
        url = f"{self._console_url()}/healthz"
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            status = reply.status
        self.script.line("控制台", f"GET /healthz → {status}")
        self.script.check(status == 200, "HTTP 旁路服务（控制台）在线")

    async def _check_idle(self) -> None:
        assert self.engine is not None
        await self._await(self.engine.idle.wait(), "桥接上没有遗留通话")
        self.script.check(not self.engine.core.calls, "桥接上没有遗留通话")

    async def _await(self, waiting: Awaitable[Any], what: str) -> None:
        try:
            await asyncio.wait_for(waiting, STEP_TIMEOUT)
        except TimeoutError:
            self.script.check(False, f"{what}：{STEP_TIMEOUT:.0f} 秒内没有等到")

    def _on_call_events(self, events: list[CallEvent]) -> None:
        for event in events:
            if event.kind == "answered":
                self.answered_calls.append(event.call_id)
            label = EVENT_LABELS.get(event.kind, event.kind)
            details = [f"{k}={v}" for k, v in event.data.items() if isinstance(v, str | int)]
            suffix = f"（{', '.join(details)}）" if details else ""
            self.script.line("桥接", f"通话 {event.call_id} {label} → {event.state}{suffix}")

    # -- serving and stopping ------------------------------------------------------------------

    async def _serve(self, stop: asyncio.Event) -> None:
        assert self.cast is not None
        assert self.engine is not None
        s = self.script
        s.heading("桥接继续运行（Ctrl-C 结束）")
        s.print(f"  控制台   {self._console_url()}/  （令牌见 {self.folder / 'config.toml'}）")
        s.print(f"  SIP      {_hostport(self.engine.transport.local)}，坐席保持注册")
        for seat in self.cast.seats.values():
            if seat.phone is not None:
                self._spawn(self._keep_registered(seat))
        await stop.wait()
        s.print("  正在停止……")

    async def _keep_registered(self, seat: Seat) -> None:
        assert seat.phone is not None
        assert self.engine is not None
        while True:
            await asyncio.sleep(3000)
            await seat.phone.register(self.engine.transport.local, seat.password, expires=3600)

    async def _tear_down(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.engine is not None:
            with contextlib.suppress(Exception):
                await self.engine.drain(0.2)
        if self.service is not None:
            await self.service.close()
        if self.engine is not None:
            await self.engine.close()
        if self.cast is not None:
            phones = [self.cast.carrier, *self.cast.pbx.values()]
            phones += [seat.phone for seat in self.cast.seats.values() if seat.phone is not None]
            for phone in phones:
                await phone.close()

    # -- helpers -------------------------------------------------------------------------------

    def _console_url(self) -> str:
        assert self.service is not None
        host, port = self.service.listen
        return f"http://{host}:{port}"

    def _token_to_transfer(self, seat_id: str) -> str | None:
        """The seat's own agent token, else a supervisor's or an admin's."""
        assert self.service is not None
        tokens = self.service.config.sidecar.tokens
        for token in tokens:
            if token.role == "agent" and token.seat == seat_id:
                return token.token
        return next((t.token for t in tokens if t.role in ("supervisor", "admin")), None)

    def _token_to_follow(self, platform: str) -> str | None:
        """The platform's own peer token, else one that may follow any platform."""
        assert self.service is not None
        tokens = self.service.config.sidecar.tokens
        for token in tokens:
            if token.role == "peer" and (token.platform or token.name) == platform:
                return token.token
        return next((t.token for t in tokens if t.role in ("supervisor", "admin")), None)

    def _read_token(self) -> str | None:
        assert self.service is not None
        for token in self.service.config.sidecar.tokens:
            if token.role in ("admin", "supervisor", "agent"):
                return token.token
        return None

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``work`` to its end (True), or cancel it when ``stop`` is set first (False)."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(work)
    stopper = loop.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


class DemoSetupError(Exception):
    """The demo cannot set its stage (unreadable plan, no seat on duty, ...)."""


def _load_plan(text: str, filename: str) -> Router:
    result = load_text(text, filename)
    if result.router is None:
        raise DemoSetupError("\n".join(str(problem) for problem in result.problems))
    return result.router


def _without_link_token(value: str) -> str:
    """A Call-Info value with its link's signature elided: the link is a credential."""
    head, sep, rest = value.partition("?token=")
    if not sep:
        return value
    return f"{head}?token=…{rest[rest.find('>') :] if '>' in rest else ''}"


def _hostport(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"
