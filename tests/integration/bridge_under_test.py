"""A bridge service running on the test's event loop, with its own config and dial plan.

The bridge binds real loopback sockets; the peers (SIPp, baresip, pyVoIP) are separate
processes, so every message crosses a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from peers.ports import PortAllocator
from peers.sipp import SippRun

from bridge.calls.call import CallEvent
from bridge.config import load_config
from bridge.engine import Engine
from bridge.service import Service
from bridge.sip.registrar import Binding

ADMIN_TOKEN = "admin-token-0123456789"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
"""What the HTTP API wants from a client acting as the admin every test bridge has."""

MEDIA_PORTS = 64
"""RTP+RTCP ports per bridge: 16 calls at once, plenty for these tests; the run's port range
is shared by every test, so blocks stay small."""

PLAN_HEAD = """
name = "integration"
[defaults]
ring_timeout = {ring_timeout}
[[trunks]]
name = "carrier"
destinations = ["sip:12345@127.0.0.1:{carrier_port}"]
[[trunks]]
name = "pbx-110"
destinations = [{pbx_destinations}]
[[platforms]]
key = "12345"
label = "12345 热线"
trunk = "carrier"
desk = true
[[platforms]]
key = "110"
label = "110 报警台"
trunk = "pbx-110"
desk = true
[[inbound]]
name = "to 110"
called = {{ exact = "110" }}
platform = "110"
[[categories]]
key = "criminal"
label = "刑事类警情"
[[rules]]
origins = ["12345"]
categories = ["criminal"]
action = "transfer"
to = "110"
[[rules]]
origins = ["110"]
categories = ["criminal"]
action = "keep"
[overrides.urgent]
to = "110"
"""

CONFIG = """
[sip]
listen = "127.0.0.1:{sip_port}"
t1_ms = {t1_ms}
{sip_extra}
[media]
port_min = {media_min}
port_max = {media_max}
{media_extra}
[sidecar]
listen = "127.0.0.1:{http_port}"
link_secret = "integration-secret-0123456789"
[[sidecar.tokens]]
token = "{admin_token}"
name = "admin"
role = "admin"
{extra_tokens}
[storage]
url = "{storage_url}"
[registrar]
realm = "bridge"
digest_algorithms = [{digest_algorithms}]
{seat_credentials}
[dialplan]
path = "plan.toml"
[shutdown]
grace_s = {grace_s}
"""

BIND_ATTEMPTS = 3
DEFAULT_SEATS = {"agent1001": "seat-secret-1001"}


def seat_group_plan(
    seats: Sequence[str], *, called: str = "12345", group: str = "hotline-desk"
) -> str:
    """Dial-plan text: `seats` on the 12345 platform, rung as one group for calls to `called`.

    Inbound rules are tried in order after the head's "to 110" rule, so `called` must not be 110.
    """
    lines = []
    for seat in seats:
        lines += ["[[seats]]", f'id = "{seat}"', 'platform = "12345"']
    members = ", ".join(f'"{seat}"' for seat in seats)
    lines += ["[[seat_groups]]", f'name = "{group}"', 'platform = "12345"', f"seats = [{members}]"]
    lines += ["[[inbound]]", f'name = "{called} to {group}"', f'called = {{ exact = "{called}" }}']
    lines += [f'group = "{group}"']
    return "\n".join(lines) + "\n"


def sipp_caller(
    workdir: Path,
    ports: PortAllocator,
    scenario: str = "uac_basic",
    *,
    name: str = "caller",
    service: str = "110",
    **options: Any,
) -> SippRun:
    """A SIPp caller on the carrier's side, dialling ``service`` once the test starts it with
    the bridge's address; ``options`` go to :class:`SippRun` (duration_ms, timeout, keys...)."""
    return SippRun(
        scenario, workdir=workdir, allocator=ports, name=name, service=service, **options
    )


class CallWatcher:
    """The bridge's call events as a test waits for them: answered calls one by one, in the
    order the bridge answered them, and how many were answered at each destination."""

    def __init__(self) -> None:
        self.count = 0
        self.by_destination: dict[str, int] = {}
        self._answered: asyncio.Queue[str] = asyncio.Queue()
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def __call__(self, events: list[CallEvent]) -> None:
        for event in events:
            if event.kind == "answered":
                self.count += 1
                self._answered.put_nowait(event.call_id)
                where = str(event.data.get("destination", ""))
                self.by_destination[where] = self.by_destination.get(where, 0) + 1
        for target, reached in self._waiters:
            if self.count >= target:
                reached.set()

    async def answered(self, within: float = 10.0) -> str:
        """The id of the next call the bridge answered (the first one not yet returned)."""
        return await asyncio.wait_for(self._answered.get(), within)

    async def reach(self, count: int, within: float = 20.0) -> None:
        """Wait until ``count`` calls in all have been answered."""
        reached = asyncio.Event()
        self._waiters.append((count, reached))
        self(events=[])
        await asyncio.wait_for(reached.wait(), within)


class BridgeUnderTest:
    def __init__(
        self,
        workdir: Path,
        ports: PortAllocator,
        *,
        carrier_port: int,
        pbx_ports: Sequence[int],
        ring_timeout: float = 20,
        t1_ms: int = 500,
        grace_s: float = 2,
        pbx_uris: Sequence[str] = (),
        extra_plan: str = "",
        seat_credentials: Mapping[str, str] = DEFAULT_SEATS,
        digest_algorithms: Sequence[str] = ("SHA-256", "MD5"),
        tokens: Sequence[Mapping[str, str]] = (),
        sip_extra: str = "",
        media_extra: str = "",
        media_ports: int = MEDIA_PORTS,
        storage_url: str = "sqlite:///bridge.sqlite3",
    ) -> None:
        """``pbx_uris``: destinations of the 110 trunk tried before ``pbx_ports``, written as
        the plan takes them (``sip:110@127.0.0.1:5060;transport=tcp``). ``tokens``: more
        [[sidecar.tokens]] entries (token, name, role, seat, platform) besides the admin token
        every bridge has. ``storage_url``: the ticket store, a SQLite file in ``workdir`` unless
        the test gives a PostgreSQL database."""
        self.workdir = workdir
        self.ports = ports
        workdir.mkdir(parents=True, exist_ok=True)
        uris = [*pbx_uris, *(f"sip:110@127.0.0.1:{p}" for p in pbx_ports)]
        destinations = ", ".join(f'"{uri}"' for uri in uris)
        self.plan_path = workdir / "plan.toml"
        self.plan_path.write_text(
            PLAN_HEAD.format(
                ring_timeout=ring_timeout,
                carrier_port=carrier_port,
                pbx_destinations=destinations,
            )
            + extra_plan,
            encoding="utf-8",
        )
        self.config_path = workdir / "bridge.toml"
        self.media_ports = media_ports
        self._config_values = {
            "admin_token": ADMIN_TOKEN,
            "t1_ms": t1_ms,
            "sip_extra": sip_extra,
            "media_extra": media_extra,
            "grace_s": grace_s,
            "storage_url": storage_url,
            "digest_algorithms": ", ".join(f'"{name}"' for name in digest_algorithms),
            "extra_tokens": "".join(
                "[[sidecar.tokens]]\n"
                + "".join(f'{key} = "{value}"\n' for key, value in token.items())
                for token in tokens
            ),
            "seat_credentials": "".join(
                f'[[registrar.seats]]\nuser = "{user}"\npassword = "{password}"\n'
                for user, password in seat_credentials.items()
            ),
        }
        self._pick_ports()
        self.engine: Engine | None = None
        self.service: Service | None = None

    @property
    def sip_address(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _pick_ports(self) -> None:
        """Fresh SIP, HTTP and media ports for the bridge, written into its config."""
        self.sip_port = self.ports.port()
        self.http_port = self.ports.port()
        media_min = self.ports.block(self.media_ports, align=2)
        self._leases = [(self.sip_port, 1), (self.http_port, 1), (media_min, self.media_ports)]
        self.config_path.write_text(
            CONFIG.format(
                sip_port=self.sip_port,
                http_port=self.http_port,
                media_min=media_min,
                media_max=media_min + self.media_ports - 1,
                **self._config_values,
            ),
            encoding="utf-8",
        )

    async def start(self) -> BridgeUnderTest:
        """Start the bridge; if another process took one of its ports between the allocator's
        check and the bind (other test runs share the machine), start again on new ports."""
        for attempt in range(1, BIND_ATTEMPTS + 1):
            try:
                return await self._start_once()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == BIND_ATTEMPTS:
                    raise
                await self.stop()
                self._pick_ports()
        raise AssertionError("unreachable")

    async def _start_once(self) -> BridgeUnderTest:
        config = load_config(self.config_path)
        self.engine = Engine(config)
        await self.engine.start()
        self.service = Service(self.engine, config)
        await self.service.start()
        return self

    def watch_calls(self) -> CallWatcher:
        """Follow the call events of the running bridge, from now on."""
        assert self.engine is not None
        watcher = CallWatcher()
        self.engine.event_listeners.append(watcher)
        return watcher

    def bindings(self, seat: str) -> list[Binding]:
        """The seat's registrations in force now, as the bridge's registrar holds them."""
        assert self.engine is not None
        return self.engine.seats.registrar.lookup(seat, asyncio.get_running_loop().time())

    async def wait_idle(self, within: float = 10.0) -> None:
        assert self.engine is not None
        await asyncio.wait_for(self.engine.idle.wait(), within)

    async def stop(self) -> None:
        if self.engine is None:
            return
        with contextlib.suppress(Exception):
            await self.engine.drain(0.5)
        if self.service is not None:
            await self.service.close()
        await self.engine.close()
        self.engine = None
        self.service = None

    async def close(self) -> None:
        """Stop for good and give the ports back, so a long run does not exhaust the range."""
        await self.stop()
        for first, count in self._leases:
            self.ports.release(first, count)
        self._leases = []
