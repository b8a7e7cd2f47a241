"""The transfer scenes of ``bridge demo``: a seat hands the citizen over to the other desk.

The handover is triggered the way a user would: the seat presses a feature code (RFC 4733
telephone-events or SIP INFO) or the desk posts a ticket to the HTTP API. The receiving side
then shows what the bridge promised: the ticket headers on the INVITE, the ticket behind the
signed ``Call-Info`` link, the screen pop as it rings, and audio between the right parties.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from bridge.simpeers.desk import (
    Desk,
    ScreenPop,
    call_info_url,
    open_ticket_link,
    ticket_headers,
)
from bridge.simpeers.phone import PeerCall
from bridge.simpeers.report import without_link_token
from bridge.simpeers.scenes import CITIZENS, STEP_TIMEOUT, TONES, CallScenes, Party

TICKET_FROM_110 = {
    "origin": "110",
    "category": "environment",
    "caller_number": CITIZENS["110"],
    "summary": "工地夜间施工噪声扰民，非警情，转 12345 办理",
    "location": "幸福路 8 号在建工地",
    "urgent": False,
}
"""What the 110 desk fills in before handing a non-police call to 12345 (routing list B)."""


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


class Scenes(CallScenes):
    """Every scene of the demo script: the plain calls and the transfers."""

    async def transfer_by_key(self, number: str) -> None:
        await self._transfer(TransferScene(origin=number, target="110", mode="blind", keys="*1"))

    async def transfer_by_api(self, number: str) -> None:
        await self._transfer(
            TransferScene(origin=number, target="12345", mode="blind", ender="target")
        )

    async def three_way(self, number: str) -> None:
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
        reply = await Desk(self.console_url(), token).transfer(
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
            s.line(who, f"收到 {name}: {without_link_token(value)}", masked=False)
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
            self.console_url(), token, platform=platform, within=STEP_TIMEOUT
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
        hearing = [(party, [o for o in parties if o is not party]) for party in parties]
        await self._check_hearing(hearing, "转接后")
