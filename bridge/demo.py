"""``bridge demo``: the bridge on the example config, with simulated peers on loopback.

Everything the demo shows crosses real sockets. The bridge runs as ``bridge run`` would (engine,
media relay, sidecar, SQLite store) on a copy of the config in a temporary folder; around it sit
peers built on the project's own SIP stack (:mod:`bridge.simpeers`): a carrier trunk bringing
citizens' calls in, a 12345 seat, a 110 seat and a supervisor's phone that REGISTER with digest
credentials and answer by themselves, and the 12345 and 110 PBXs that the plan's trunks ring.
Then a short script plays, and every side prints what it saw:

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
   joins, and each of the three hears the other two;
6. supervision: the supervisor's desk asks the HTTP API to supervise a citizen's call to 12345
   in ``listen`` mode, the bridge rings the supervisor's phone, who then hears both while
   neither hears them; a second request switches to ``whisper``, and the seat hears the
   supervisor while the citizen still does not. The desk follows it on the events WebSocket.

The supervisor is the person of the config's first ``supervisor`` token (its ``seat``, else its
``name``), whose phone registers with the ``[registrar]`` credentials of that user, as a seat's
does: the bridge rings a supervisor's registered phone first.

With ``--once`` the command exits after the script (status 1 if a step failed); otherwise the
bridge keeps serving its console until SIGINT/SIGTERM. Ports of the example config that are
taken are replaced by free ones, and the demo says so; ``BRIDGE_DEMO_FREE_PORTS=1`` (or
``free_ports=True``) takes free ports throughout, for tests on a busy machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import tempfile
import tomllib
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from bridge.calls.call import CallEvent
from bridge.config import Config, ConfigError, load_config
from bridge.dialplan.loader import load_text
from bridge.dialplan.router import Router
from bridge.engine import Engine
from bridge.logging_setup import setup_logging
from bridge.process import event_loop_runner
from bridge.service import Service
from bridge.simpeers import SimPhone, SipEndpoint, layout
from bridge.simpeers.report import Script, describe_call_event, hostport
from bridge.simpeers.scenes import CITIZENS, TONES, Cast, Seat
from bridge.simpeers.supervise_scenes import SuperviseScenes
from bridge.simpeers.transfer_scenes import Scenes

FREE_PORTS_ENV = "BRIDGE_DEMO_FREE_PORTS"
EXAMPLE_CONFIG = "config.example.toml"
PLATFORMS = ("12345", "110")
DEMO_SUPERVISOR = "demo-supervisor"
"""Who supervises when the config names no supervisor token (the copy then gets one)."""


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
            status: int = event_loop_runner()(demo.run())
        except KeyboardInterrupt:
            return 130
    return status


def _example_config() -> Path | None:
    for folder in (Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = folder / EXAMPLE_CONFIG
        if candidate.is_file():
            return candidate
    return None


# -- the demo ----------------------------------------------------------------------------------


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
        supervisor = self._supervisor_on_duty(base_config)
        config_path = self._write_copies(base_config, plan_text, [*seats.values(), supervisor])
        config = load_config(config_path)
        self.engine = Engine(config)
        await self.engine.start()
        self.engine.event_listeners.append(self._on_call_events)
        self.service = Service(self.engine, config)
        await self.service.start()
        assert self.cast is not None
        self.cast.seats = seats
        self.cast.supervisor = supervisor

        s.print("bridge demo — 12345 ↔ 110 联动桥接演示（真实 SIP/RTP，环回地址）")
        s.print(f"  工作目录   {self.folder}（配置副本、拨号计划副本、SQLite）")
        s.print(f"  桥接 SIP   {hostport(self.engine.transport.local)}（UDP+TCP）")
        s.print(f"  控制台     {self._console_url()}")
        peers = [f"运营商中继 {hostport(self.cast.carrier.endpoint.local)}"]
        peers += [f"{key} PBX {hostport(p.endpoint.local)}" for key, p in self.cast.pbx.items()]
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

    def _supervisor_on_duty(self, config: Config) -> Seat:
        """The person of the first supervisor token, whose phone the script registers."""
        token = next((t for t in config.sidecar.tokens if t.role == "supervisor"), None)
        seat_id = (token.seat or token.name) if token is not None else DEMO_SUPERVISOR
        if token is None:
            self.notes.append(f"配置里没有 supervisor 令牌，演示副本里为班长 {seat_id} 加上")
        password = next((s.password for s in config.registrar.seats if s.user == seat_id), None)
        if password is None:
            password = f"demo-secret-{seat_id}"
            self.notes.append(f"班长 {seat_id} 的话机在配置里没有口令，演示副本里已加上")
        return Seat(seat_id, f"班长 {seat_id}", password)

    def _write_copies(self, config: Config, plan_text: str, seats: list[Seat]) -> Path:
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
        for seat in seats:
            if seat.seat_id not in known:
                registrar.setdefault("seats", []).append(
                    {"user": seat.seat_id, "password": seat.password}
                )
        tokens = data["sidecar"].setdefault("tokens", [])
        if not any(token.get("role") == "supervisor" for token in tokens):
            tokens.append(
                {
                    "token": f"demo-supervisor-{secrets.token_hex(8)}",
                    "name": DEMO_SUPERVISOR,
                    "role": "supervisor",
                }
            )
        (self.folder / "dialplan.toml").write_text(plan_text, encoding="utf-8")
        path = self.folder / "config.toml"
        path.write_text(layout.to_toml(data), encoding="utf-8")
        return path

    # -- the script ----------------------------------------------------------------------------

    async def _play(self) -> None:
        s = self.script
        assert self.engine is not None
        assert self.service is not None
        assert self.cast is not None
        scenes = Scenes(s, self.engine, self.service, self.cast, self.answered_calls)
        supervision = SuperviseScenes(s, self.engine, self.service, self.cast, self.answered_calls)
        s.heading("准备：坐席与班长话机摘要认证注册（RFC 3261 §10、§22）")
        phones = [(seat, TONES[platform]) for platform, seat in self.cast.seats.items()]
        if self.cast.supervisor is not None:
            phones.append((self.cast.supervisor, TONES["supervisor"]))
        for seat, tone in phones:
            await self._register(seat, tone)
        await scenes.check_console()

        steps = (
            (
                "12345",
                "第 1 步：市民拨打 12345 → 12345 坐席接听，双向通话，市民挂机",
                scenes.call_12345,
            ),
            (
                "110",
                "第 2 步：市民拨打 110 → 110 接警员接听，双向通话，接警员挂机",
                scenes.call_110,
            ),
            (
                "12345",
                "第 3 步：一键转接 12345 → 110（坐席按 *1，RFC 4733），坐席释放",
                scenes.transfer_by_key,
            ),
            (
                "110",
                "第 4 步：110 → 12345 经 HTTP API 转接并附工单，接警员释放",
                scenes.transfer_by_api,
            ),
            (
                "12345",
                "第 5 步：三方通话 12345 + 110（坐席按 *2，SIP INFO），三方互通",
                scenes.three_way,
            ),
            (
                "12345",
                "第 6 步：班长经 HTTP API 监听 12345 通话（listen），再改为耳语（whisper）",
                supervision.listen_then_whisper,
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

    async def _register(self, seat: Seat, tone_hz: float) -> None:
        assert self.engine is not None
        s = self.script
        endpoint = SipEndpoint(layout.HOST)
        await endpoint.start(0)
        seat.phone = SimPhone(endpoint, user=seat.seat_id, say=s.voice(seat.label), tone_hz=tone_hz)
        response = await seat.phone.register(
            self.engine.transport.local, seat.password, expires=3600
        )
        s.check(response.status == 200, f"{seat.label}（{seat.seat_id}）注册成功")

    def _on_call_events(self, events: list[CallEvent]) -> None:
        for event in events:
            if event.kind == "answered":
                self.answered_calls.append(event.call_id)
            self.script.line("桥接", describe_call_event(event))

    # -- serving and stopping ------------------------------------------------------------------

    async def _serve(self, stop: asyncio.Event) -> None:
        assert self.cast is not None
        assert self.engine is not None
        s = self.script
        s.heading("桥接继续运行（Ctrl-C 结束）")
        s.print(f"  控制台   {self._console_url()}/  （令牌见 {self.folder / 'config.toml'}）")
        s.print(f"  SIP      {hostport(self.engine.transport.local)}，坐席与班长话机保持注册")
        for seat in self._registered():
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
            phones += [seat.phone for seat in self._registered() if seat.phone is not None]
            for phone in phones:
                await phone.close()

    # -- helpers -------------------------------------------------------------------------------

    def _registered(self) -> list[Seat]:
        """The seats and the supervisor whose phones registered."""
        assert self.cast is not None
        seats = [*self.cast.seats.values(), self.cast.supervisor]
        return [seat for seat in seats if seat is not None and seat.phone is not None]

    def _console_url(self) -> str:
        assert self.service is not None
        host, port = self.service.listen
        return f"http://{host}:{port}"

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
