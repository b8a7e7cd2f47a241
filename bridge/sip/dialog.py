"""Dialogs (RFC 3261 §12): the state two user agents share between their requests.

Theory of operation
-------------------
A dialog is created from the request that opened it and the response carrying the To tag:
our INVITE and a 1xx-with-tag or 2xx as the UAC (§12.1.2), or a received INVITE and the tag we
chose as the UAS (§12.1.1). It keeps what later requests need: the Call-ID and tags that
identify it, the remote target (the peer's Contact) and the route set (Record-Route).

Its life is the small table ``TRANSITIONS``: a 1xx with a tag makes it EARLY, a 2xx
CONFIRMED (the UAC then recomputes the route set from the 2xx, §13.2.2.4), a non-2xx final to
the INVITE ends an early dialog (§12.3), and a BYE either way or a 481/408 to a request inside
it ends it (§15, §12.2.1.2). The UAC learns the INVITE's outcome from
:meth:`Dialog.receive_response`; the UAS tells its dialog what it answered with
:meth:`Dialog.response_sent`. Target refresh requests (INVITE, UPDATE) and their 2xx
responses replace the remote target.

Requests are built here without a Via: the transaction user adds one with a fresh branch,
because the Via belongs to the hop and the transaction, not to the dialog.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, auto

from bridge.sip.errors import LocalProtocolError, RemoteProtocolError
from bridge.sip.headers import MAX_CSEQ, Headers
from bridge.sip.message import Message, Request, Response
from bridge.sip.uri import NameAddr, SipUri, has_param, without_param

DialogId = tuple[str, str, str]

# §12.2.1.1 / §12.2.2 plus RFC 3311: requests whose Contact replaces the remote target.
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE"})


class DialogState(Enum):
    __hash__ = object.__hash__  # identity, in C: Enum hashes the name in Python

    EARLY = auto()
    CONFIRMED = auto()
    TERMINATED = auto()


class DialogInput(Enum):
    __hash__ = object.__hash__

    PROVISIONAL = auto()  # 1xx with a tag to the INVITE that created the dialog
    ANSWERED = auto()  # 2xx to that INVITE
    REJECTED = auto()  # 300-699 to that INVITE
    ENDED = auto()  # BYE sent or received, or 481/408 to a request inside the dialog


TRANSITIONS: dict[tuple[DialogState, DialogInput], DialogState] = {
    (DialogState.EARLY, DialogInput.PROVISIONAL): DialogState.EARLY,
    (DialogState.EARLY, DialogInput.ANSWERED): DialogState.CONFIRMED,
    (DialogState.EARLY, DialogInput.REJECTED): DialogState.TERMINATED,
    (DialogState.EARLY, DialogInput.ENDED): DialogState.TERMINATED,
    (DialogState.CONFIRMED, DialogInput.ANSWERED): DialogState.CONFIRMED,
    (DialogState.CONFIRMED, DialogInput.ENDED): DialogState.TERMINATED,
}


def dialog_id_of(message: Message, *, as_uas: bool) -> DialogId:
    """(Call-ID, local tag, remote tag) of ``message`` from our side (§12): as the UAS our tag
    is in To, as the UAC it is in From. A missing tag is the empty string (RFC 2543 peers)."""
    from_tag = message.from_.tag or ""
    to_tag = message.to.tag or ""
    if as_uas:
        return message.call_id, to_tag, from_tag
    return message.call_id, from_tag, to_tag


def _untagged(address: NameAddr) -> NameAddr:
    if not has_param(address.params, "tag"):
        return address  # immutable: the parsed address itself, not a copy of it
    return NameAddr(
        uri=address.uri,
        display_name=address.display_name,
        params=without_param(address.params, "tag"),
    )


def _record_routes(message: Message) -> tuple[NameAddr, ...]:
    """The Record-Route entries as received; a tuple, so the usual empty route set of a
    dialog held for a whole call costs nothing (the empty tuple is shared)."""
    return tuple(NameAddr.parse(value) for value in message.headers.get_all("Record-Route"))


def _contact_uri(message: Message) -> SipUri | None:
    contact = message.contact
    return contact.uri if contact is not None else None


@dataclass(slots=True, kw_only=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr
    remote_uri: NameAddr
    remote_target: SipUri
    route_set: tuple[NameAddr, ...] = ()
    local_cseq: int = 0
    remote_cseq: int | None = None
    secure: bool = False
    state: DialogState = DialogState.CONFIRMED
    # UAC only: CSeq of our INVITE that created the dialog; its responses settle it (§13.2.2.4).
    invite_cseq: int | None = None

    # ------------------------------------------------------------------ creation

    @classmethod
    def uac(cls, request: Request, response: Response) -> Dialog:
        """§12.1.2: from the INVITE we sent and a 1xx with a To tag (early) or a 2xx."""
        remote_tag = response.to.tag
        if remote_tag is None:
            raise RemoteProtocolError("a response without a To tag cannot create a dialog")
        if not 101 <= response.status < 300:
            raise LocalProtocolError(f"a {response.status} response does not create a dialog")
        cseq = request.cseq.seq
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=remote_tag,
            local_uri=_untagged(request.from_),
            remote_uri=_untagged(response.to),
            # A 2xx must carry Contact (§12.1.2); if a peer forgets, the Request-URI is the
            # only place left that reached it.
            remote_target=_contact_uri(response) or request.uri,
            route_set=_record_routes(response)[::-1],
            local_cseq=cseq,
            remote_cseq=None,
            secure=request.uri.scheme == "sips",
            state=DialogState.EARLY if response.status < 200 else DialogState.CONFIRMED,
            invite_cseq=cseq,
        )

    @classmethod
    def uas(cls, request: Request, local_tag: str, *, early: bool = False) -> Dialog:
        """§12.1.1: from a received INVITE and the To tag of our 1xx (``early``) or 2xx.

        The local sequence number starts empty (§12.1.1); we count from 0 so our first
        request in the dialog carries CSeq 1.
        """
        cseq = request.cseq.seq
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local_uri=_untagged(request.to),
            remote_uri=_untagged(request.from_),
            remote_target=_contact_uri(request) or request.from_.uri,
            route_set=_record_routes(request),
            local_cseq=0,
            remote_cseq=cseq,
            secure=request.uri.scheme == "sips",
            state=DialogState.EARLY if early else DialogState.CONFIRMED,
        )

    @property
    def dialog_id(self) -> DialogId:
        return self.call_id, self.local_tag, self.remote_tag

    @property
    def next_hop(self) -> SipUri:
        """§8.1.2 / §12.2.1.1: where the request goes first: the top route, else the target."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    # ------------------------------------------------------------------ requests we send

    def create_request(
        self,
        method: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """§12.2.1.1: a request inside the dialog, without Via. ACK and CANCEL reuse the
        current CSeq number (§13.2.2.4, §9.1); every other method takes the next one. Sending
        BYE ends the dialog (§15.1.1)."""
        if self.state is DialogState.TERMINATED:
            raise LocalProtocolError(f"dialog {self.dialog_id} is terminated")
        if method not in ("ACK", "CANCEL"):
            if self.local_cseq >= MAX_CSEQ:
                raise LocalProtocolError("local CSeq exhausted (§8.1.1.5)")
            self.local_cseq += 1
        request = self._build(method, self.local_cseq, headers, body, content_type)
        if method == "BYE":
            self._advance(DialogInput.ENDED)
        return request

    def create_ack(
        self, invite_cseq: int, *, body: bytes = b"", content_type: str | None = None
    ) -> Request:
        """§13.2.2.4: the ACK for a 2xx is a request of the dialog carrying the INVITE's CSeq
        number; it may carry the answer when the INVITE had no offer."""
        return self._build("ACK", invite_cseq, (), body, content_type)

    def _build(
        self,
        method: str,
        cseq: int,
        extra: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
    ) -> Request:
        uri, routes = self._request_uri_and_routes()
        headers = Headers()
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.local_uri.with_tag(self.local_tag)))
        to = self.remote_uri.with_tag(self.remote_tag) if self.remote_tag else self.remote_uri
        headers.add("To", str(to))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        for name, value in extra:
            headers.add(name, value)
        if content_type is not None:
            headers.set("Content-Type", content_type)
        return Request(method=method, uri=uri, headers=headers, body=body)

    def _request_uri_and_routes(self) -> tuple[SipUri, list[str]]:
        """§12.2.1.1: loose routing keeps the remote target as Request-URI; a strict router
        (no ``lr`` on the first route) wants itself there and the target as the last Route."""
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0]
        if has_param(first.uri.params, "lr"):
            return self.remote_target, [str(route) for route in self.route_set]
        # Parameters and headers a Request-URI may not carry are stripped (§19.1.1 table 1).
        uri = first.uri.with_(params=without_param(first.uri.params, "method"), headers=())
        routes = [str(route) for route in self.route_set[1:]]
        routes.append(f"<{self.remote_target}>")
        return uri, routes

    # ------------------------------------------------------------------ what we receive

    def receive_request(self, request: Request) -> None:
        """§12.2.2: check the request belongs here and is in order, then refresh the target.

        Raises RemoteProtocolError carrying the status to answer: 481 for a request of another
        or a finished dialog, 500 for a CSeq lower than the last one seen.
        """
        if request.call_id != self.call_id or (request.from_.tag or "") != self.remote_tag:
            raise RemoteProtocolError("request does not belong to this dialog", status=481)
        if self.state is DialogState.TERMINATED:
            raise RemoteProtocolError("dialog already terminated", status=481)
        seq = request.cseq.seq
        if request.method != "ACK":
            if self.remote_cseq is not None and seq < self.remote_cseq:
                raise RemoteProtocolError(
                    f"CSeq {seq} is older than {self.remote_cseq}",
                    status=500,
                    reason="Server Internal Error",
                )
            self.remote_cseq = seq
        if request.method in TARGET_REFRESH_METHODS:
            self._refresh_target(request)
        elif request.method == "BYE":
            self._advance(DialogInput.ENDED)

    def receive_response(self, response: Response) -> None:
        """§12.2.1.2 and §13.2.2.4: a response to a request we sent inside this dialog, or to
        the INVITE that created it."""
        cseq = response.cseq
        status = response.status
        if cseq.method == "INVITE" and cseq.seq == self.invite_cseq:
            self._settle_initial_invite(response)
        elif status in (408, 481):
            self._advance(DialogInput.ENDED)
        elif 200 <= status < 300 and cseq.method in TARGET_REFRESH_METHODS:
            self._refresh_target(response)

    def response_sent(self, response: Response) -> None:
        """UAS side: the response we sent to the INVITE that created the dialog (§12.1.1)."""
        status = response.status
        if status >= 300:
            self._advance(DialogInput.REJECTED)
        elif status >= 200:
            self._advance(DialogInput.ANSWERED)

    def _settle_initial_invite(self, response: Response) -> None:
        status = response.status
        if status >= 300:
            self._advance(DialogInput.REJECTED)
            return
        if (response.to.tag or "") != self.remote_tag:
            return  # another fork's response belongs to another dialog
        self._refresh_target(response)
        if status < 200:
            self._advance(DialogInput.PROVISIONAL)
            return
        if self.state is DialogState.EARLY:
            # §13.2.2.4: the route set is recomputed from the 2xx that confirms the dialog.
            self.route_set = _record_routes(response)[::-1]
        self._advance(DialogInput.ANSWERED)

    def _refresh_target(self, message: Message) -> None:
        target = _contact_uri(message)
        if target is not None:
            self.remote_target = target

    def _advance(self, event: DialogInput) -> None:
        self.state = TRANSITIONS.get((self.state, event), self.state)
