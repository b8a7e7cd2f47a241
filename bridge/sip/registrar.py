"""The registrar that agent seats REGISTER to (RFC 3261 §10.3).

Theory of operation: a seat is an address-of-record named by its user part (``agent1001``)
and owns a set of bindings, one per device. :meth:`Registrar.handle_register` runs §10.3
steps 5-8 on a request the caller has already authenticated: it works out every change the
request asks for, and applies them only if all are acceptable, so a REGISTER either takes
effect whole or not at all. Bindings die at their expiry time; the caller drives that with
:meth:`Registrar.expire` at :meth:`Registrar.next_deadline`. Changes come out as events for
whoever shows seat presence.

A binding is keyed by its ``+sip.instance`` when the device sends one (RFC 5626 §4.1, RFC 5627):
baresip puts a per-run token in its Contact user part, so without the instance a restarted
phone would leave a dead binding behind until it expired. It remembers the address and
transport the REGISTER came from as well as the Contact, because a phone behind NAT
advertises an address nobody can reach (RFC 5626 §5.3 sends to the flow instead).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Final

from bridge.sip.errors import LocalProtocolError, RemoteProtocolError
from bridge.sip.message import Request, Response, make_response
from bridge.sip.uri import NameAddr, format_params, without_param

DEFAULT_EXPIRES: Final = 3600
MIN_EXPIRES: Final = 60
MAX_EXPIRES: Final = 3600
MAX_BINDINGS_PER_SEAT: Final = 10
_MAX_DELTA = 2**32 - 1  # RFC 3261 §20.19: delta-seconds beyond this mean this


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """One device registered for a seat."""

    aor: str
    contact: NameAddr
    expires_at: float
    call_id: str
    cseq: int
    source: tuple[str, int]
    transport: str
    registered_at: float
    instance: str | None = None

    @property
    def key(self) -> str:
        return self.instance if self.instance is not None else _contact_key(self.contact)

    @property
    def q(self) -> float:
        """Preference among a seat's devices (§20.10); 1.0 when absent or unreadable."""
        value = self.contact.param("q")
        try:
            return min(max(float(value), 0.0), 1.0) if value is not None else 1.0
        except ValueError:
            return 1.0

    @property
    def behind_nat(self) -> bool:
        """The Contact names another address than the one the REGISTER came from."""
        host, port = self.contact.uri.hostport
        return (host.strip("[]"), port) != (self.source[0].strip("[]"), self.source[1])

    @property
    def destination(self) -> tuple[str, int]:
        """Where requests for this device go: back along the flow it registered over, which
        reaches phones behind NAT and equals the Contact address for the rest (RFC 5626 §5.3).
        The Request-URI stays ``contact.uri``, which is how the phone recognises the call."""
        return self.source

    def expires_in(self, now: float) -> int:
        return max(0, math.ceil(self.expires_at - now))


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingAdded:
    binding: Binding
    refreshed: bool  # False for a new device, True when an existing binding was renewed


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingRemoved:
    binding: Binding
    reason: str  # "unregistered", "expired" or "replaced"


RegistrarEvent = BindingAdded | BindingRemoved


@dataclass(frozen=True, slots=True, kw_only=True)
class _Change:
    key: str
    new: Binding | None  # None removes the binding under ``key``


class Registrar:
    def __init__(
        self,
        *,
        default_expires: int = DEFAULT_EXPIRES,
        min_expires: int = MIN_EXPIRES,
        max_expires: int = MAX_EXPIRES,
        max_bindings: int = MAX_BINDINGS_PER_SEAT,
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        self.default_expires = default_expires
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.max_bindings = max_bindings
        self._bindings: dict[str, dict[str, Binding]] = {}
        self._events: list[RegistrarEvent] = []

    # --- queries ---------------------------------------------------------------------------

    def lookup(self, aor: str, now: float | None = None) -> list[Binding]:
        """The seat's devices, preferred (q, then most recent) first; with ``now``, only the
        ones not yet expired even if :meth:`expire` has not run."""
        found = [
            b for b in self._bindings.get(aor, {}).values() if now is None or b.expires_at > now
        ]
        return sorted(found, key=lambda b: (-b.q, -b.registered_at))

    def seats(self) -> list[str]:
        return sorted(self._bindings)

    def next_deadline(self) -> float | None:
        return min(
            (b.expires_at for seat in self._bindings.values() for b in seat.values()),
            default=None,
        )

    def pop_events(self) -> list[RegistrarEvent]:
        events, self._events = self._events, []
        return events

    # --- changes ---------------------------------------------------------------------------

    def expire(self, now: float) -> list[Binding]:
        removed: list[Binding] = []
        for aor in list(self._bindings):
            seat = self._bindings[aor]
            for key, binding in list(seat.items()):
                if binding.expires_at <= now:
                    del seat[key]
                    removed.append(binding)
                    self._events.append(BindingRemoved(binding=binding, reason="expired"))
            if not seat:
                del self._bindings[aor]
        return removed

    def handle_register(
        self,
        request: Request,
        *,
        source: tuple[str, int],
        transport: str,
        now: float,
        authenticated_user: str | None = None,
        to_tag: str | None = None,
    ) -> Response:
        """Answer an authenticated REGISTER (§10.3 steps 5-8). ``authenticated_user``, when
        given, must own the seat (step 4). Bad requests get error responses, not exceptions."""
        if request.method != "REGISTER":
            raise LocalProtocolError(f"{request.method} is not a REGISTER")
        tag = to_tag or _stable_tag(request)
        try:
            aor = _aor_of(request)
            if authenticated_user is not None and authenticated_user != aor:
                return make_response(request, 403, "Not Your Seat", to_tag=tag)
            changes = self._plan(request, aor, source=source, transport=transport, now=now)
        except _Refusal as refusal:
            response = make_response(request, refusal.status, refusal.reason, to_tag=tag)
            for name, value in refusal.headers:
                response.headers.add(name, value)
            return response
        except RemoteProtocolError as exc:
            return make_response(request, exc.status, exc.reason, to_tag=tag)
        self._apply(aor, changes)
        response = make_response(request, 200, to_tag=tag)
        for binding in self.lookup(aor):
            params = without_param(binding.contact.params, "expires")
            expires = f";expires={binding.expires_in(now)}"
            response.headers.add(
                "Contact", f"<{binding.contact.uri}>{format_params(params)}{expires}"
            )
        return response

    def _plan(
        self, request: Request, aor: str, *, source: tuple[str, int], transport: str, now: float
    ) -> list[_Change]:
        contacts = request.headers.get_all("Contact")
        header_expires = _parse_expires(request.headers.get("Expires"))
        call_id, cseq = request.call_id, request.cseq.seq
        existing = self._bindings.get(aor, {})
        if any(value.strip() == "*" for value in contacts):
            # §10.3 step 6: "*" alone, with Expires: 0, removes every binding of the seat.
            if len(contacts) != 1 or header_expires != 0:
                raise RemoteProtocolError("Contact: * needs to be alone and with Expires: 0")
            for binding in existing.values():
                _check_order(binding, call_id, cseq)
            return [_Change(key=key, new=None) for key in existing]
        changes: list[_Change] = []
        for value in contacts:
            contact = NameAddr.parse(value)
            param = contact.param("expires")
            expires = _parse_expires(param) if param is not None else header_expires
            if expires is None:
                expires = self.default_expires
            if 0 < expires < self.min_expires:
                raise _Refusal(423, "Interval Too Brief", [("Min-Expires", str(self.min_expires))])
            expires = min(expires, self.max_expires)
            instance = contact.param("+sip.instance")
            candidate = Binding(
                aor=aor,
                contact=contact,
                expires_at=now + expires,
                call_id=call_id,
                cseq=cseq,
                source=source,
                transport=transport.lower(),
                registered_at=now,
                instance=instance.strip('"') if instance else None,
            )
            current = existing.get(candidate.key)
            if current is not None:
                _check_order(current, call_id, cseq)
            changes.append(_Change(key=candidate.key, new=candidate if expires else None))
        remaining = set(existing) | {c.key for c in changes if c.new is not None}
        remaining -= {c.key for c in changes if c.new is None}
        if len(remaining) > self.max_bindings:
            raise _Refusal(403, "Too Many Devices", [])
        return changes

    def _apply(self, aor: str, changes: list[_Change]) -> None:
        seat = self._bindings.setdefault(aor, {})
        for change in changes:
            old = seat.pop(change.key, None)
            if change.new is None:
                if old is not None:
                    self._events.append(BindingRemoved(binding=old, reason="unregistered"))
                continue
            new = change.new
            refreshed = old is not None and _contact_key(old.contact) == _contact_key(new.contact)
            if old is not None and refreshed:
                # A refresh keeps the time the device first appeared, so that the order of a
                # seat's devices does not shuffle at every re-REGISTER.
                new = replace(new, registered_at=old.registered_at)
            elif old is not None:
                self._events.append(BindingRemoved(binding=old, reason="replaced"))
            seat[change.key] = new
            self._events.append(BindingAdded(binding=new, refreshed=refreshed))
        if not seat:
            del self._bindings[aor]


class _Refusal(Exception):
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


def _aor_of(request: Request) -> str:
    """§10.3 step 5: the To header names the address-of-record; seats go by user part."""
    uri = request.to.uri
    if uri.scheme not in ("sip", "sips") or not uri.user:
        raise _Refusal(404, "Not Found", [])
    return uri.user


def _parse_expires(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        raise RemoteProtocolError(f"bad expires value {value!r}")
    return min(int(text), _MAX_DELTA)


def _check_order(binding: Binding, call_id: str, cseq: int) -> None:
    """§10.3 step 7: within one Call-ID, a REGISTER no newer than the one that made the binding
    arrived late and must change nothing."""
    if binding.call_id == call_id and cseq <= binding.cseq:
        raise _Refusal(500, "Out Of Order CSeq", [("Retry-After", "1")])


def _contact_key(contact: NameAddr) -> str:
    """The parts of the Contact URI that §19.1.4 compares and that matter for reaching it."""
    uri = contact.uri
    transport = (uri.param("transport") or "").lower()
    return f"{uri.scheme}:{uri.user or ''}@{uri.host}:{uri.port or ''};{transport}"


def _stable_tag(request: Request) -> str:
    """A To tag that is the same for retransmissions of one REGISTER (no randomness here)."""
    digest = hashlib.sha256(f"{request.call_id}:{request.cseq.seq}".encode()).hexdigest()
    return digest[:16]
