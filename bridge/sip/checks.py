"""What a UAS checks in a request that parsed, and a UAC in a response (RFC 3261 §8.1.3,
§8.2, §16.3; RFC 4475 §3.1.2 and §3.3).

:func:`~bridge.sip.message.parse_message` rejects what is malformed for every element. What is
left here is either semantic (an unknown ``Require`` option tag, a Request-URI scheme we do not
serve, ``Max-Forwards: 0`` on a request we would forward) or syntax in headers that only some
requests carry and the parser keeps as text (Contact, Date, Expires, Route). Each function
is pure: it reads a message and says what to answer, or why to drop.
"""

from __future__ import annotations

from datetime import datetime

from bridge.sip.errors import RemoteProtocolError
from bridge.sip.headers import Via
from bridge.sip.message import Request, Response, make_response
from bridge.sip.uri import NameAddr

DEFAULT_SCHEMES = frozenset({"sip", "sips", "tel"})

# §16.3 step 3: an element that would forward a request with Max-Forwards 0 answers 483,
# except OPTIONS, which it may answer itself as the final recipient (§11).
_SELF_ANSWERED_AT_ZERO_HOPS = frozenset({"OPTIONS"})
# §8.2.2.3: Require is not applied to ACK or CANCEL (they never get a 420).
_NO_REQUIRE_CHECK = frozenset({"ACK", "CANCEL"})
_ADDRESS_HEADERS = frozenset(
    {"Contact", "Route", "Record-Route", "Reply-To", "Referred-By", "Refer-To"}
)
_MAX_DELTA_SECONDS = 2**32 - 1


def check_request(
    request: Request,
    *,
    supported: frozenset[str] = frozenset(),
    schemes: frozenset[str] = DEFAULT_SCHEMES,
    accepted_types: frozenset[str] | None = None,
) -> Response | None:
    """The error response a UAS must send for ``request``, or None if it may be processed.

    The order follows §8.2: header syntax (400), Request-URI scheme (416, §8.2.2.1), hop
    count (483, §16.3, since the bridge forwards what it accepts), unknown ``Require`` tags
    (420 with ``Unsupported``, §8.2.2.3), then body type (415 with ``Accept``, §8.2.3, only
    when ``accepted_types`` is given). For an ACK a non-None result means "drop it": an ACK is
    never answered (§17.2.3).
    """
    problem = _header_syntax_problem(request)
    if problem is not None:
        return make_response(request, 400, f"Bad Request ({problem})")
    if request.uri.scheme not in schemes:
        return make_response(request, 416)
    if request.max_forwards == 0 and request.method not in _SELF_ANSWERED_AT_ZERO_HOPS:
        return make_response(request, 483)
    if request.method not in _NO_REQUIRE_CHECK:
        unknown = sorted(request.option_tags("Require") - supported, key=str.lower)
        if unknown:
            response = make_response(request, 420)
            response.headers.add("Unsupported", ", ".join(unknown))
            return response
    if accepted_types is not None and request.body:
        content_type = request.content_type
        if content_type not in accepted_types:
            response = make_response(request, 415)
            response.headers.add("Accept", ", ".join(sorted(accepted_types)))
            return response
    return None


def check_response(response: Response) -> str | None:
    """Why a UAC must discard ``response``, or None to process it.

    A response with more than one Via was meant for a proxy, not for us (§8.1.3.3, RFC 4475
    §3.3.10: its second Via may even be a broadcast address); a Via sent-by that is a
    broadcast or unspecified address can never be a real hop.
    """
    vias = response.vias
    if len(vias) != 1:
        return f"response carries {len(vias)} Via headers (§8.1.3.3)"
    if _is_broadcast(vias[0]):
        return "response Via sent-by is a broadcast address"
    return None


def _header_syntax_problem(request: Request) -> str | None:
    headers = request.headers
    contacts: list[str] = []
    for name, value in headers:
        if name not in _ADDRESS_HEADERS:
            continue
        if name == "Contact":
            contacts.append(value)
            if value == "*":
                continue
        try:
            NameAddr.parse(value)
        except RemoteProtocolError:
            return f"malformed {name}"
    if "*" in contacts and not _valid_wildcard(request, contacts):
        return "Contact * is only for REGISTER with Expires 0"
    date = headers.get("Date")
    if date is not None and not _is_rfc1123_gmt(date):
        return "Date must be RFC 1123 in GMT"
    expires = headers.get("Expires")
    if expires is not None and not (expires.isascii() and expires.isdigit()):
        return "malformed Expires"
    if request.body and "Content-Type" not in headers:
        return "body without Content-Type"
    return None


def _valid_wildcard(request: Request, contacts: list[str]) -> bool:
    """§10.2.2: ``Contact: *`` only alone, in REGISTER, with ``Expires: 0``."""
    expires = request.headers.get("Expires")
    return request.method == "REGISTER" and len(contacts) == 1 and expires == "0"


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _is_rfc1123_gmt(value: str) -> bool:
    """§20.17: ``Date`` is an RFC 1123 date and the zone must be GMT (RFC 4475 §3.1.2.12).
    Parsed by hand: ``strptime`` would read day and month names in the process locale."""
    parts = value.split(" ")
    if len(parts) != 6 or parts[5] != "GMT" or parts[0][:-1] not in _WEEKDAYS:
        return False
    weekday, day, month, year, clock = parts[0], parts[1], parts[2], parts[3], parts[4]
    numbers = [day, year, *clock.split(":")]
    if not weekday.endswith(",") or month not in _MONTHS or len(clock) != 8:
        return False
    if not all(n.isascii() and n.isdigit() for n in numbers) or len(day) != 2 or len(year) != 4:
        return False
    hour, minute, second = (int(n) for n in clock.split(":"))
    try:
        datetime(int(year), _MONTHS.index(month) + 1, int(day), hour, minute, second)
    except ValueError:
        return False
    return True


def _is_broadcast(via: Via) -> bool:
    host = via.param("maddr") or via.host
    return host in ("255.255.255.255", "0.0.0.0")


def expires_seconds(value: str | None, default: int) -> int:
    """An Expires value or ``expires`` parameter in seconds; an out-of-range or malformed
    value counts as absent (RFC 4475 §3.1.2.4 lets an element use the default)."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 10:
        return default
    seconds = int(value)
    return seconds if seconds <= _MAX_DELTA_SECONDS else default
