"""The plain-call scenes of ``bridge demo`` and the checks every scene shares.

A citizen rings a desk through the carrier trunk, the seat on duty answers, and each side
says what it saw and heard; the transfer scenes (:mod:`bridge.simpeers.transfer_scenes`) and
the supervision scene (:mod:`bridge.simpeers.supervise_scenes`) build on the same cast and
checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from bridge.logging_setup import mask_numbers
from bridge.simpeers.phone import PeerCall, SimPhone, codec_name
from bridge.simpeers.report import Script

if TYPE_CHECKING:
    from bridge.engine import Engine
    from bridge.service import Service

CITIZENS = {"12345": "13800138000", "110": "13900139001"}
"""Made-up caller numbers; shown masked like everything the bridge logs."""
TONES = {"carrier": 440.0, "12345": 620.0, "110": 820.0, "pbx": 1000.0, "supervisor": 1200.0}
"""Each party sends its own tone, so what a side hears tells whose audio reached it."""
RTP_PACKETS = 50
"""Packets each side must receive in a call: one second of 20 ms frames."""
STEP_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Party:
    """One party of a transferred call, as the script names and hears them."""

    label: str
    name: str
    phone: SimPhone
    call: PeerCall
    tone_hz: float


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
    """The seat on duty at each desk, by platform."""
    supervisor: Seat | None = None
    """The supervisor's phone, registered like a seat so the bridge can ring it to listen in."""


Hearing = Sequence[tuple[Party, Sequence[Party]]]
"""Each party with whom it should hear; any other party on the call it must not hear."""


class CallScenes:
    """Citizens calling a desk, on a stage whose bridge and peers are already up."""

    def __init__(
        self,
        script: Script,
        engine: Engine,
        service: Service,
        cast: Cast,
        answered_calls: list[str],
    ) -> None:
        self.script = script
        self.engine = engine
        self.service = service
        self.cast = cast
        self.answered_calls = answered_calls
        """Call ids the bridge reported answered, in order; the demo appends to it."""

    async def call_12345(self, number: str) -> None:
        call, seat_call = await self._citizen_calls(number)
        if call is None or seat_call is None:
            return
        s = self.script
        await self._check_api_sees_call(self.cast.seats[number].seat_id)
        status = await self.cast.carrier.hangup(call)
        s.check(status == 200, "市民挂机：BYE 得到 200 OK")
        await self._await(seat_call.ended.wait(), "坐席收到 BYE")
        s.check(seat_call.ended_by == "remote", "坐席一侧通话随之结束")
        await self._check_idle()

    async def call_110(self, number: str) -> None:
        call, seat_call = await self._citizen_calls(number)
        if call is None or seat_call is None:
            return
        seat = self.cast.seats[number]
        assert seat.phone is not None
        status = await seat.phone.hangup(seat_call)
        self.script.check(status == 200, "接警员挂机：BYE 得到 200 OK")
        await self._await(call.ended.wait(), "市民一侧收到 BYE")
        self.script.check(call.ended_by == "remote", "市民一侧通话随之结束")
        await self._check_idle()

    async def _citizen_calls(self, number: str) -> tuple[PeerCall | None, PeerCall | None]:
        """Ring ``number`` from the carrier; check the seat on duty answers and audio flows."""
        s = self.script
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
        token = self._read_token()
        if token is None:
            self.script.line("控制台", "配置里没有可读通话的令牌，跳过 API 查询")
            return
        url = f"{self.console_url()}/api/v1/calls"
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

    async def _check_hearing(self, hearing: Hearing, when: str) -> None:
        """Once a second more of audio came in, each party must hear exactly whom ``hearing``
        names, by their tones: hearing someone it should not is as wrong as missing someone."""
        s = self.script
        counts = [party.call.media.received for party, _ in hearing]
        arrived = [
            await party.call.media.wait_received(count + RTP_PACKETS, STEP_TIMEOUT)
            for (party, _), count in zip(hearing, counts, strict=True)
        ]
        candidates = tuple(sorted(set(TONES.values())))
        everyone = [party for party, _ in hearing]
        for party, heard_ones in hearing:
            heard = party.call.media.heard_tones(candidates)
            shown = "、".join(f"{hz:.0f} Hz" for hz in heard) or "无声"
            s.line(party.label, f"收到 RTP {party.call.media.received} 包，听到 {shown}")
            unheard = [o for o in everyone if o is not party and o not in heard_ones]
            text = f"{party.name} 听到 " + " 与 ".join(_voice(o) for o in heard_ones)
            if unheard:
                text += "，听不到 " + " 与 ".join(_voice(o) for o in unheard)
            s.check(set(heard) == {o.tone_hz for o in heard_ones}, text)
        s.check(all(arrived), f"{when} RTP 经桥接转发（每方再收 {RTP_PACKETS} 包以上）")

    async def _hang_up_all(self, ender: Party, others: list[Party]) -> None:
        s = self.script
        status = await ender.phone.hangup(ender.call)
        s.check(status == 200, f"{ender.name} 挂机：BYE 得到 200 OK")
        for other in others:
            await self._await(other.call.ended.wait(), f"{other.name} 收到 BYE")
            s.check(other.call.ended_by == "remote", f"{other.name} 一侧通话随之结束")

    async def check_console(self) -> None:
        url = f"{self.console_url()}/healthz"
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            status = reply.status
        self.script.line("控制台", f"GET /healthz → {status}")
        self.script.check(status == 200, "HTTP 旁路服务（控制台）在线")

    async def _check_idle(self) -> None:
        await self._await(self.engine.idle.wait(), "桥接上没有遗留通话")
        self.script.check(not self.engine.core.calls, "桥接上没有遗留通话")

    async def _await(self, waiting: Awaitable[Any], what: str) -> None:
        try:
            await asyncio.wait_for(waiting, STEP_TIMEOUT)
        except TimeoutError:
            self.script.check(False, f"{what}：{STEP_TIMEOUT:.0f} 秒内没有等到")

    def console_url(self) -> str:
        host, port = self.service.listen
        return f"http://{host}:{port}"

    def _token_to_transfer(self, seat_id: str) -> str | None:
        """The seat's own agent token, else a supervisor's or an admin's."""
        tokens = self.service.config.sidecar.tokens
        for token in tokens:
            if token.role == "agent" and token.seat == seat_id:
                return token.token
        return next((t.token for t in tokens if t.role in ("supervisor", "admin")), None)

    def _token_to_follow(self, platform: str) -> str | None:
        """The platform's own peer token, else one that may follow any platform."""
        tokens = self.service.config.sidecar.tokens
        for token in tokens:
            if token.role == "peer" and (token.platform or token.name) == platform:
                return token.token
        return next((t.token for t in tokens if t.role in ("supervisor", "admin")), None)

    def _token_to_supervise(self) -> str | None:
        """A supervisor's token, else an admin's: agents may not listen in on calls."""
        tokens = self.service.config.sidecar.tokens
        for role in ("supervisor", "admin"):
            token = next((t.token for t in tokens if t.role == role), None)
            if token is not None:
                return token
        return None

    def _read_token(self) -> str | None:
        for token in self.service.config.sidecar.tokens:
            if token.role in ("admin", "supervisor", "agent"):
                return token.token
        return None


def _voice(party: Party) -> str:
    return f"{party.name}（{party.tone_hz:.0f} Hz）"
