"""A simulated SIP phone: registers with digest auth, dials, answers by itself, hangs up.

It plays whichever part the demo needs: the carrier trunk that brings a citizen's call in (an
INVITE with an SDP offer, from the address the dial plan trusts as the carrier), an agent seat
that REGISTERs to the bridge (RFC 3261 §10.2, answering the 401 with digest credentials, §22)
and answers the calls it is rung with, or a platform PBX that answers whatever reaches it.

Every call carries real audio (:class:`~bridge.simpeers.audio.RtpStream`) towards the address
in the other side's SDP. A phone presses keys (an agent's transfer key) either as RFC 4733
telephone-events in its audio, when both SDPs named telephone-event, or as SIP INFO
``application/dtmf-relay`` requests in the dialog. Whatever the phone does or sees is reported
as a plain line to ``say``, so a script can print each side's point of view; numbers are masked
before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from bridge.logging_setup import mask_numbers
from bridge.media.dtmf import format_info_dtmf
from bridge.simpeers.audio import RtpStream
from bridge.simpeers.endpoint import Address, SipEndpoint, new_call_id, new_tag
from bridge.sip import offer_answer, sdp
from bridge.sip.dialog import Dialog
from bridge.sip.digest import authorize, choose_challenge
from bridge.sip.errors import RemoteProtocolError
from bridge.sip.headers import Headers
from bridge.sip.message import Request, Response, make_response
from bridge.sip.uri import SipUri

OFFERED_CODECS = (sdp.PCMA, sdp.PCMU, sdp.TELEPHONE_EVENT)
ANSWERABLE_CODECS = (sdp.PCMU, sdp.PCMA, sdp.TELEPHONE_EVENT)
USER_AGENT = "bridge-simpeer"


def codec_name(payload_type: int) -> str:
    return {0: "PCMU", 8: "PCMA"}.get(payload_type, f"PT {payload_type}")


@dataclass(eq=False, kw_only=True)
class PeerCall:
    """One call as this phone saw it."""

    call_id: str
    incoming: bool
    remote_user: str
    """The other party's user part as signalled (a number: mask it before showing it)."""
    local_tag: str
    invite: Request
    media: RtpStream
    payload_type: int = 0
    event_payload_type: int | None = None
    """The telephone-event payload type both SDPs agreed on (RFC 4733 §2.4.1), if any."""
    server_key: str | None = None
    client_key: str | None = None
    dialog: Dialog | None = None
    ack: Request | None = None
    status: int | None = None
    """The final status of the INVITE: what we answered, or what we were answered."""
    ended_by: str | None = None
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    _answer_handle: asyncio.TimerHandle | None = None


class SimPhone:
    """A phone or trunk on one :class:`SipEndpoint`, calling and answering as ``user``."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        *,
        user: str,
        say: Callable[[str], None],
        tone_hz: float,
        answer_after: float = 0.3,
        auto_answer: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.user = user
        self.say = say
        self.tone_hz = tone_hz
        self.answer_after = answer_after
        self.auto_answer = auto_answer
        self.calls: dict[tuple[str, str], PeerCall] = {}
        self.registered_to: Address | None = None
        self._incoming: asyncio.Queue[PeerCall] = asyncio.Queue()
        self._register_call_id = new_call_id(endpoint.host)
        self._register_cseq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        endpoint.on_request = self._on_request
        endpoint.on_stray_2xx = self._on_stray_2xx

    # -- registration (RFC 3261 §10.2, digest §22.2) -------------------------------------------

    async def register(
        self, registrar: Address, password: str, *, expires: int = 600, within: float = 5.0
    ) -> Response:
        """REGISTER our contact, answering one digest challenge; returns the final response."""
        uri = SipUri(host=registrar[0], port=registrar[1])
        response = await self._send_register(uri, registrar, expires, None, within)
        if response.status in (401, 407):
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            challenge = choose_challenge(response.headers.get_all(header))
            if challenge is None:
                self.say(f"REGISTER → {response.status}，没有可应答的质询")
                return response
            credentials = authorize(
                challenge,
                method="REGISTER",
                uri=str(uri),
                username=self.user,
                password=password,
                cnonce=secrets.token_hex(8),
            )
            algorithm = challenge.algorithm.value
            self.say(f"REGISTER → {response.status} 质询（{algorithm}），带凭据重发")
            authorization = "Authorization" if response.status == 401 else "Proxy-Authorization"
            response = await self._send_register(
                uri, registrar, expires, (authorization, str(credentials)), within
            )
        if response.status == 200:
            self.registered_to = registrar
            self.say(f"REGISTER → 200 OK，已注册到桥接（{expires} 秒）")
        else:
            self.say(f"REGISTER → {response.status} {response.reason}")
        return response

    async def _send_register(
        self,
        uri: SipUri,
        registrar: Address,
        expires: int,
        authorization: tuple[str, str] | None,
        within: float,
    ) -> Response:
        self._register_cseq += 1
        aor = f"<sip:{self.user}@{registrar[0]}:{registrar[1]}>"
        headers = Headers()
        headers.add("Via", self.endpoint.via())
        headers.add("Max-Forwards", "70")
        headers.add("From", f"{aor};tag={new_tag()}")
        headers.add("To", aor)
        headers.add("Call-ID", self._register_call_id)
        headers.add("CSeq", f"{self._register_cseq} REGISTER")
        headers.add("Contact", self.endpoint.contact(self.user))
        headers.add("Expires", str(expires))
        headers.add("User-Agent", USER_AGENT)
        if authorization is not None:
            headers.add(*authorization)
        request = Request(method="REGISTER", uri=uri, headers=headers)
        _, future = self.endpoint.send_request(request, registrar)
        return await _final(future, request, within)

    # -- calling out ----------------------------------------------------------------------------

    async def dial(
        self,
        number: str,
        proxy: Address,
        *,
        from_user: str | None = None,
        display_name: str | None = None,
        within: float = 10.0,
    ) -> PeerCall:
        """INVITE ``number`` at ``proxy`` with an SDP offer; returns once it is answered or
        refused (``call.status``). Answered calls send their tone from then on. ``from_user``
        is the calling number a trunk passes on (our own user when None)."""
        host = self.endpoint.host
        caller = from_user or self.user
        media = await RtpStream.open(host, self.tone_hz)
        offer = offer_answer.make_offer(
            address=host, port=media.port, session_id=secrets.randbits(31), codecs=OFFERED_CODECS
        )
        tag = new_tag()
        uri = SipUri(user=number, host=proxy[0], port=proxy[1])
        name = f'"{display_name}" ' if display_name else ""
        headers = Headers()
        headers.add("Via", self.endpoint.via())
        headers.add("Max-Forwards", "70")
        headers.add("From", f"{name}<sip:{caller}@{host}:{self.endpoint.port}>;tag={tag}")
        headers.add("To", f"<sip:{number}@{proxy[0]}:{proxy[1]}>")
        headers.add("Call-ID", new_call_id(host))
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", self.endpoint.contact(self.user))
        headers.add("User-Agent", USER_AGENT)
        headers.add("Content-Type", "application/sdp")
        invite = Request(method="INVITE", uri=uri, headers=headers, body=bytes(offer))
        call = PeerCall(
            call_id=invite.call_id,
            incoming=False,
            remote_user=number,
            local_tag=tag,
            invite=invite,
            media=media,
        )
        self.calls[(call.call_id, tag)] = call
        codecs = "/".join(c.name for c in OFFERED_CODECS if c.carries_audio)
        self.say(
            f"→ INVITE {number}（主叫 {mask_numbers(caller)}，SDP 提供 {codecs}，"
            f"{self.tone_hz:.0f} Hz 音频）"
        )
        key, future = self.endpoint.send_request(invite, proxy, self._on_provisional)
        call.client_key = key
        response = await _final(future, invite, within)
        call.status = response.status
        if response.status >= 300:
            self.say(f"← {response.status} {response.reason}：呼叫未接通")
            await self._end(call, by="remote")
            return call
        self._confirm_outgoing(call, response, proxy)
        return call

    def _on_provisional(self, response: Response) -> None:
        if response.status != 100:
            self.say(f"← {response.status} {response.reason}")

    def _confirm_outgoing(self, call: PeerCall, response: Response, proxy: Address) -> None:
        dialog = Dialog.uac(call.invite, response)
        call.dialog = dialog
        ack = dialog.create_ack(call.invite.cseq.seq)
        ack.headers.prepend("Via", self.endpoint.via())
        call.ack = ack
        self.endpoint.send_ack(call.client_key, ack, self._next_hop(dialog, proxy))
        remote = _audio_target(response.body)
        if remote is None:
            self.say("← 200 OK，但应答里没有可用的音频地址")
        else:
            call.payload_type = remote[2]
            call.event_payload_type = _event_payload_type(response.body)
            call.media.start((remote[0], remote[1]), remote[2])
            self.say(f"← 200 OK（{codec_name(remote[2])}），发送 ACK，通话建立")
        call.answered.set()

    def _on_stray_2xx(self, response: Response) -> None:
        """A 2xx retransmitted after our INVITE transaction ended: our ACK was lost; send it
        again (§13.2.2.4)."""
        call = self.calls.get((response.call_id, response.from_.tag or ""))
        if call is not None and call.ack is not None and call.dialog is not None:
            self.endpoint.send_stateless(call.ack, self._next_hop(call.dialog, None))

    # -- keys ------------------------------------------------------------------------------------

    async def press_keys(
        self, call: PeerCall, digits: str, *, via: str = "rfc4733", within: float = 5.0
    ) -> bool:
        """Press ``digits`` in an answered call: ``via="rfc4733"`` sends telephone-events in
        the audio (False when none was negotiated), ``via="info"`` one INFO per digit, each
        waiting for its 200. True when every digit went out (and, for INFO, was accepted)."""
        if call.dialog is None or call.ended.is_set():
            return False
        if via == "rfc4733":
            if call.event_payload_type is None:
                self.say("对端 SDP 没有 telephone-event，无法按 RFC 4733 发送按键")
                return False
            sent = await call.media.press_keys(digits, call.event_payload_type, within)
            self.say(f"按键 {digits}（RFC 4733 telephone-event，PT {call.event_payload_type}）")
            return sent
        for digit in digits:
            content_type, body = format_info_dtmf(digit)
            info = call.dialog.create_request(
                "INFO",
                headers=(("User-Agent", USER_AGENT),),
                body=body.encode(),
                content_type=content_type,
            )
            info.headers.prepend("Via", self.endpoint.via())
            _, future = self.endpoint.send_request(info, self._next_hop(call.dialog, None))
            response = await _final(future, info, within)
            if response.status != 200:
                self.say(f"按键 {digit}：INFO ← {response.status} {response.reason}")
                return False
        self.say(f"按键 {digits}（SIP INFO {content_type}，每键 200 OK）")
        return True

    # -- hanging up -----------------------------------------------------------------------------

    async def hangup(self, call: PeerCall, *, within: float = 5.0) -> int:
        """Send BYE (§15.1.1); returns its final status."""
        if call.dialog is None or call.ended.is_set():
            return 481
        bye = call.dialog.create_request("BYE", headers=(("User-Agent", USER_AGENT),))
        bye.headers.prepend("Via", self.endpoint.via())
        _, future = self.endpoint.send_request(bye, self._next_hop(call.dialog, None))
        response = await _final(future, bye, within)
        self.say(f"挂机 → BYE ← {response.status} {response.reason}")
        await self._end(call, by="local")
        return response.status

    async def _end(self, call: PeerCall, *, by: str) -> None:
        if call.ended.is_set():
            return
        call.ended_by = by
        call.ended.set()
        await call.media.close()

    # -- answering ------------------------------------------------------------------------------

    async def next_incoming(self, within: float) -> PeerCall | None:
        """The next call that rang this phone, or None after ``within`` seconds."""
        try:
            return await asyncio.wait_for(self._incoming.get(), within)
        except TimeoutError:
            return None

    def _on_request(self, request: Request, source: Address, server_key: str | None) -> None:
        if request.method == "ACK":
            self._on_ack(request)
            return
        assert server_key is not None
        if request.to.tag is not None:
            self._on_in_dialog(request, server_key)
        elif request.method == "INVITE":
            self._spawn(self._on_invite(request, source, server_key))
        elif request.method == "CANCEL":
            self._on_cancel(request, server_key)
        elif request.method == "OPTIONS":
            self.endpoint.reply(server_key, request, 200)
        else:
            self.endpoint.reply(server_key, request, 405)

    async def _on_invite(self, request: Request, source: Address, server_key: str) -> None:
        offer = _audio_target(request.body)
        if offer is None:
            self.endpoint.reply(server_key, request, 488)
            return
        tag = new_tag()
        media = await RtpStream.open(self.endpoint.host, self.tone_hz)
        caller = request.from_.uri.user or "anonymous"
        call = PeerCall(
            call_id=request.call_id,
            incoming=True,
            remote_user=caller,
            local_tag=tag,
            invite=request,
            media=media,
            server_key=server_key,
        )
        self.calls[(call.call_id, tag)] = call
        ringing = make_response(request, 180, to_tag=tag)
        ringing.headers.add("Contact", self.endpoint.contact(self.user))
        self.endpoint.respond(server_key, ringing)
        self.say(f"← INVITE：来电振铃，主叫 {mask_numbers(caller)}，回 180 Ringing")
        self._incoming.put_nowait(call)
        if self.auto_answer:
            loop = asyncio.get_running_loop()
            call._answer_handle = loop.call_later(self.answer_after, self.answer, call)

    def answer(self, call: PeerCall) -> None:
        """Send 200 OK with our SDP answer (RFC 3264 §6) and start our audio."""
        if call.server_key is None or call.status is not None:
            return
        try:
            offer = sdp.SessionDescription.parse(call.invite.body)
            answer = offer_answer.answer(
                offer,
                supported=ANSWERABLE_CODECS,
                local_address=self.endpoint.host,
                local_port=call.media.port,
                session_id=secrets.randbits(31),
            )
        except RemoteProtocolError as exc:
            call.status = exc.status
            self.endpoint.reply(call.server_key, call.invite, exc.status, to_tag=call.local_tag)
            return
        ok = make_response(call.invite, 200, to_tag=call.local_tag)
        ok.headers.add("Contact", self.endpoint.contact(self.user))
        ok.headers.add("Content-Type", "application/sdp")
        ok.body = bytes(answer)
        call.status = 200
        call.dialog = Dialog.uas(call.invite, call.local_tag)
        self.endpoint.respond(call.server_key, ok)
        remote = _audio_target(call.invite.body)
        audio = answer.audio
        chosen = offer_answer.primary_codec(audio) if audio is not None else None
        if remote is not None and chosen is not None:
            call.payload_type = chosen.payload_type
            call.event_payload_type = (
                offer_answer.telephone_event_payload_type(audio) if audio is not None else None
            )
            call.media.start((remote[0], remote[1]), chosen.payload_type)
        codec = codec_name(call.payload_type)
        self.say(f"摘机应答 → 200 OK（{codec}，{self.tone_hz:.0f} Hz 音频）")

    def _on_ack(self, request: Request) -> None:
        call = self.calls.get((request.call_id, request.to.tag or ""))
        if call is None or call.answered.is_set() or call.status != 200:
            return
        self.say("← ACK，通话建立")
        call.answered.set()

    def _on_cancel(self, request: Request, server_key: str) -> None:
        invite_key = self.endpoint.txl.find_invite_server(request)
        call = next((c for c in self.calls.values() if c.server_key == invite_key), None)
        if invite_key is None or call is None:
            self.endpoint.reply(server_key, request, 481)
            return
        self.endpoint.reply(server_key, request, 200)
        if call.status is None:
            if call._answer_handle is not None:
                call._answer_handle.cancel()
            call.status = 487
            self.endpoint.reply(invite_key, call.invite, 487, to_tag=call.local_tag)
            self.say("← CANCEL：主叫在接听前放弃")
            self._spawn(self._end(call, by="remote"))

    def _on_in_dialog(self, request: Request, server_key: str) -> None:
        call = self.calls.get((request.call_id, request.to.tag or ""))
        if call is None or call.dialog is None or call.ended.is_set():
            self.endpoint.reply(server_key, request, 481)
            return
        try:
            call.dialog.receive_request(request)
        except RemoteProtocolError as exc:
            self.endpoint.reply(server_key, request, exc.status)
            return
        if request.method == "BYE":
            self.endpoint.respond(server_key, make_response(request, 200))
            self.say("← BYE：对方已挂机，回 200 OK")
            self._spawn(self._end(call, by="remote"))
        elif request.method in ("INVITE", "UPDATE", "INFO", "NOTIFY", "OPTIONS"):
            # Hold/resume re-offers are accepted as they are: the demo keeps sending its tone.
            ok = make_response(request, 200)
            if request.method in ("INVITE", "UPDATE"):
                ok.headers.add("Contact", self.endpoint.contact(self.user))
            self.endpoint.respond(server_key, ok)
        else:
            self.endpoint.reply(server_key, request, 405)

    # -- helpers --------------------------------------------------------------------------------

    def _next_hop(self, dialog: Dialog, fallback: Address | None) -> Address:
        host, port = dialog.next_hop.hostport
        if _is_ipv4(host):
            return host, port
        return fallback or self.registered_to or (host, port)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for call in list(self.calls.values()):
            if call._answer_handle is not None:
                call._answer_handle.cancel()
            await call.media.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.endpoint.close()


async def _final(future: asyncio.Future[Response], request: Request, within: float) -> Response:
    """The final response, or a local 408 when none came in ``within`` seconds."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), within)
    except TimeoutError:
        return make_response(request, 408, "No Final Response (local timeout)")


def _audio_target(body: bytes) -> tuple[str, int, int] | None:
    """Where an SDP wants its audio and its first voice codec, or None if it has none."""
    if not body:
        return None
    try:
        description = sdp.SessionDescription.parse(body)
    except RemoteProtocolError:
        return None
    endpoint = description.audio_endpoint
    audio = description.audio
    codec = offer_answer.primary_codec(audio) if audio is not None else None
    if endpoint is None or codec is None:
        return None
    return endpoint[0], endpoint[1], codec.payload_type


def _event_payload_type(body: bytes) -> int | None:
    try:
        audio = sdp.SessionDescription.parse(body).audio
    except RemoteProtocolError:
        return None
    return offer_answer.telephone_event_payload_type(audio) if audio is not None else None


def _is_ipv4(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(part.isdigit() for part in parts)
