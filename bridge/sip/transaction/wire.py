"""Transaction keys, §18 response addressing and the requests the layer builds itself."""

from __future__ import annotations

from bridge.sip.headers import Headers, Via
from bridge.sip.ids import random_hex
from bridge.sip.message import Request, Response
from bridge.sip.transaction.events import Address
from bridge.sip.uri import has_param

MAGIC_COOKIE = "z9hG4bK"
RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "WS", "WSS"})


def new_branch() -> str:
    """A branch unique in space and time, with the §8.1.1.7 magic cookie."""
    return MAGIC_COOKIE + random_hex(8)


def client_key(branch: str, method: str) -> str:
    """§17.1.3: a response matches by the top Via branch and the CSeq method."""
    return f"{branch} {method}"


def server_key(request: Request, via: Via, *, method: str | None = None) -> str:
    """§17.2.3: branch, sent-by and method, with ACK matching the INVITE.

    Requests without the magic cookie (RFC 2543 peers) get a key from the fields their
    retransmissions and non-2xx ACKs keep unchanged; full §17.2.3 fallback matching is not done.
    """
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    sent_by = f"{via.host.lower()}:{via.port or ''}"
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return f"{branch} {sent_by} {method}"
    cseq = request.cseq
    return f"2543 {request.call_id} {request.from_.tag} {cseq.seq} {sent_by} {method}"


def is_reliable(transport: str) -> bool:
    return transport.upper() in RELIABLE_TRANSPORTS


def _bare_host(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def stamp_via(request: Request, source: Address, via: Via | None = None) -> Via:
    """§18.2.1 + RFC 3581: record where the request really came from in its top Via, so every
    response built from it (make_response copies Via) goes back the way it came. ``via`` is
    the request's top Via when the caller has parsed it already."""
    if via is None:
        via = request.top_via
    host, port = source
    stamped = via
    if has_param(via.params, "rport"):
        stamped = stamped.with_param("received", host).with_param("rport", str(port))
    elif _bare_host(via.host) != host:
        stamped = stamped.with_param("received", host)
    if stamped is not via:
        # Only the order of the Via values matters (§7.3.1), so remove-then-prepend is a
        # faithful in-place swap of the top one.
        request.headers.remove_first("Via")
        request.headers.prepend("Via", str(stamped))
    return stamped


def response_address(via: Via, source: Address, transport: str) -> Address:
    """§18.2.2 (with RFC 3581): where responses to a request go; over a reliable transport
    the connection it came on, known by its source (see :func:`response_fallback`)."""
    if is_reliable(transport):
        return source
    rport = via.param("rport")
    host = via.param("received") or _bare_host(via.host)
    if rport and rport.isdigit():
        return host, int(rport)
    return host, via.port or 5060


def response_fallback(via: Via, transport: str) -> Address | None:
    """§18.2.2: for a reliable transport whose connection has closed, the address to open a
    new one to: the ``received`` address (the source's, stamped by :func:`stamp_via`), else the
    sent-by host, with the sent-by port or the transport's default (§19.1.2: 5061 for TLS).
    Never ``rport``: over a connection that is the peer's ephemeral port (RFC 3581 §4). None
    for an unreliable transport, whose responses have no connection to fall back from."""
    if not is_reliable(transport):
        return None
    host = via.param("received") or _bare_host(via.host)
    return host, via.port or (5061 if transport.upper() == "TLS" else 5060)


def build_non2xx_ack(request: Request, response: Response) -> Request:
    """§17.1.1.3: the ACK for a 300-699 is part of the INVITE transaction, so it keeps the
    INVITE's Request-URI, top Via and Route set; only To (with the response's tag) is new."""
    headers = Headers()
    headers.add("Via", request.headers.get("Via") or "")
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", request.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq.seq} ACK")
    return Request(method="ACK", uri=request.uri, headers=headers)


def build_cancel(invite: Request) -> Request:
    """§9.1: a CANCEL must match the INVITE's transaction hop by hop (same top Via branch) and
    reach the same place (same Request-URI and Route set)."""
    headers = Headers()
    headers.add("Via", invite.headers.get("Via") or "")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        headers.add(name, invite.headers.get(name) or "")
    headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
    return Request(method="CANCEL", uri=invite.uri, headers=headers)
