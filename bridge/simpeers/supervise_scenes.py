"""The supervision scene of ``bridge demo``: a supervisor listens in, then coaches the agent.

A supervisor's desk asks the HTTP API to supervise an answered citizen ↔ agent call; the bridge
rings the supervisor's registered phone and, on answer, mixes it into the call. What each of
the three hears, told apart by their tones, is the point of the scene: in ``listen`` the
supervisor hears both and neither hears the supervisor; after a second request switches the
same leg to ``whisper``, the agent hears the supervisor and the citizen still does not. The
desk follows the steps on the events WebSocket, as a supervisor's console would.
"""

from __future__ import annotations

from typing import Any

from bridge.simpeers.desk import Desk, HttpReply, ScreenPop
from bridge.simpeers.phone import PeerCall
from bridge.simpeers.scenes import STEP_TIMEOUT, TONES, CallScenes, Party, Seat

CONSOLE = "班长工作台"


class SuperviseScenes(CallScenes):
    """A supervisor joining a call, on the stage the other scenes share."""

    async def listen_then_whisper(self, number: str) -> None:
        """A citizen reaches ``number``'s seat; the supervisor listens, then whispers."""
        s = self.script
        supervisor = self.cast.supervisor
        if not s.check(
            supervisor is not None and supervisor.phone is not None, "班长话机已注册到桥接"
        ):
            return
        assert supervisor is not None
        token = self._token_to_supervise()
        if not s.check(token is not None, "配置里有可发起监听的令牌（supervisor 或 admin）"):
            return
        assert token is not None
        answered_before = len(self.answered_calls)
        call, seat_call = await self._citizen_calls(number)
        if call is None or seat_call is None:
            return
        if not s.check(len(self.answered_calls) > answered_before, "桥接报告了这路通话的编号"):
            return
        call_id = self.answered_calls[-1]
        console = await ScreenPop.open(self.console_url(), token, within=STEP_TIMEOUT)
        try:
            await self._supervise(number, call_id, call, seat_call, supervisor, token, console)
        finally:
            await console.close()
            if not call.ended.is_set():
                # A step cut short leaves no call behind for the next one (or the console).
                await self.cast.carrier.hangup(call)
        await self._check_idle()

    async def _supervise(
        self,
        number: str,
        call_id: str,
        call: PeerCall,
        seat_call: PeerCall,
        supervisor: Seat,
        token: str,
        console: ScreenPop,
    ) -> None:
        s = self.script
        seat = self.cast.seats[number]
        assert seat.phone is not None
        assert supervisor.phone is not None
        desk = Desk(self.console_url(), token)
        reply = await self._ask(desk, call_id, supervisor.seat_id, "listen")
        if not s.check(
            reply.status == 202 and _supervision(reply).get("state") == "ringing",
            f"HTTP API 受理监听（202），桥接呼叫 {supervisor.label}",
        ):
            return
        supervisor_call = await supervisor.phone.next_incoming(STEP_TIMEOUT)
        if not s.check(supervisor_call is not None, f"{supervisor.label} 振铃"):
            return
        assert supervisor_call is not None
        await self._await(supervisor_call.answered.wait(), f"{supervisor.label} 接听")
        joined = await console.wait_for_call("supervisor_joined", call_id, STEP_TIMEOUT)
        s.check(
            _mode_of(joined) == "listen",
            "事件 WebSocket 报告班长已加入（supervisor_joined，mode=listen）",
        )
        s.check(
            not call.ended.is_set() and not seat_call.ended.is_set(),
            "班长加入后市民与坐席的通话照常",
        )
        citizen = Party("运营商中继", "市民", self.cast.carrier, call, TONES["carrier"])
        agent = Party(seat.label, seat.label, seat.phone, seat_call, TONES[number])
        boss = Party(
            supervisor.label,
            supervisor.label,
            supervisor.phone,
            supervisor_call,
            TONES["supervisor"],
        )
        await self._check_hearing(
            [(boss, [citizen, agent]), (citizen, [agent]), (agent, [citizen])], "监听（listen）时"
        )

        reply = await self._ask(desk, call_id, supervisor.seat_id, "whisper")
        s.check(
            reply.status == 200 and _supervision(reply).get("mode") == "whisper",
            "HTTP API 把同一通班长电话改为耳语（200，不再振铃）",
        )
        changed = await console.wait_for_call("supervise_mode_changed", call_id, STEP_TIMEOUT)
        s.check(
            _mode_of(changed) == "whisper",
            "事件 WebSocket 报告模式已切换（supervise_mode_changed，mode=whisper）",
        )
        await self._check_hearing(
            [(boss, [citizen, agent]), (citizen, [agent]), (agent, [citizen, boss])],
            "耳语（whisper）时",
        )

        await self._hang_up_all(citizen, [agent, boss])
        left = await console.wait_for_call("supervisor_left", call_id, STEP_TIMEOUT)
        kinds = [kind for kind in console.call_kinds(call_id) if kind.startswith("supervis")]
        s.line(CONSOLE, f"通话 {call_id} 的监听事件：{' → '.join(kinds) or '无'}")
        s.check(left is not None, "通话结束，班长随之离开（supervisor_left）")

    async def _ask(self, desk: Desk, call_id: str, supervisor: str, mode: str) -> HttpReply:
        s = self.script
        s.line(
            CONSOLE,
            f"POST /api/v1/calls/{call_id}/supervise（supervisor={supervisor}，mode={mode}）",
        )
        reply = await desk.supervise(call_id, supervisor, mode)
        shown = _supervision(reply)
        if shown:
            outcome = f"状态 {shown.get('state')}，模式 {shown.get('mode')}"
        else:
            outcome = f"{reply.body.get('error')}：{reply.body.get('detail')}"
        s.line(CONSOLE, f"← {reply.status}，{outcome}")
        return reply


def _supervision(reply: HttpReply) -> dict[str, Any]:
    shown = reply.body.get("supervision")
    return shown if isinstance(shown, dict) else {}


def _mode_of(message: dict[str, Any] | None) -> str | None:
    if message is None:
        return None
    data = message.get("data")
    return str(data.get("mode")) if isinstance(data, dict) else None
