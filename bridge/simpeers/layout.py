"""Where the demo's simulated peers live, and the demo copy of the config that points at them.

The example dial plan names fixed loopback addresses for its peers (the carrier the bridge
trusts calls from, the 12345 and 110 PBXs it rings). The demo binds its peers there when it can;
when a port is taken it binds elsewhere and the plan's copy is rewritten to match, so the
bridge under demonstration trusts and rings exactly the sockets the peers hold. The copy of the
config keeps every setting of the original except what a throw-away run must own: its
listening ports, its SQLite file and dial plan in the demo's folder, and the digest credentials
of the seats the demo registers.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from bridge.dialplan.schema import DialPlan

HOST = "127.0.0.1"
CARRIER_PORT = 5070
"""Where the demo's carrier sends from when the plan names no carrier trunk of its own."""


def port_is_free(port: int, *, udp: bool = True, tcp: bool = True, host: str = HOST) -> bool:
    kinds = [k for k, wanted in ((socket.SOCK_DGRAM, udp), (socket.SOCK_STREAM, tcp)) if wanted]
    for kind in kinds:
        sock = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError:
            return False
        finally:
            sock.close()
    return True


def any_free_port(*, udp: bool = True, tcp: bool = True, host: str = HOST) -> int:
    """A port the kernel just handed out on one transport and that is free on the other."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    for _ in range(50):
        sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        finally:
            sock.close()
        if port_is_free(port, udp=udp, tcp=tcp, host=host):
            return port
    raise OSError("no free loopback port found")


def choose_port(
    wanted: int, *, udp: bool = True, tcp: bool = True, any_port: bool = False
) -> tuple[int, bool]:
    """``wanted`` if it is free (and ``any_port`` is off), else another free port; the flag
    says whether the port moved."""
    if not any_port and wanted > 0 and port_is_free(wanted, udp=udp, tcp=tcp):
        return wanted, False
    return any_free_port(udp=udp, tcp=tcp), True


@dataclass(slots=True, kw_only=True)
class PlanPeers:
    """The loopback ports a dial plan expects the demo's peers on."""

    carrier: int | None = None
    """The carrier trunk's source port; None when the plan has no loopback carrier."""
    pbx: dict[str, int] = field(default_factory=dict)
    """Platform key → port of the first loopback destination of its trunk."""


def plan_peers(plan: DialPlan, platforms: tuple[str, ...]) -> PlanPeers:
    found = PlanPeers()
    for trunk in plan.trunks:
        if trunk.destinations or found.carrier is not None:
            continue
        for source in trunk.sources:
            host, _, port = source.rpartition(":")
            if host == HOST and port.isdigit() and int(port) > 0:
                found.carrier = int(port)
                break
    trunks = {t.name: t for t in plan.trunks}
    for platform in plan.platforms:
        served = trunks.get(platform.trunk or "")
        if platform.key not in platforms or served is None or not served.destinations:
            continue
        match = re.search(rf"@{re.escape(HOST)}:(\d+)", served.destinations[0])
        if match is not None:
            found.pbx[platform.key] = int(match.group(1))
    return found


def move_ports(text: str, moves: dict[int, int]) -> str:
    """The plan's text with every ``HOST:old`` address turned into ``HOST:new``."""
    for old, new in moves.items():
        if old != new:
            text = re.sub(rf"{re.escape(HOST)}:{old}(?!\d)", f"{HOST}:{new}", text)
    return text


def add_carrier_trunk(text: str, port: int, existing: set[str]) -> str:
    """Append a carrier trunk trusted on ``HOST:port`` (TOML allows an array of tables to go
    on after other tables)."""
    name = "demo-carrier"
    while name in existing:
        name += "-1"
    return text.rstrip("\n") + f'\n\n[[trunks]]\nname = "{name}"\nsources = ["{HOST}:{port}"]\n'


# -- TOML out -----------------------------------------------------------------------------------


def to_toml(data: dict[str, Any]) -> str:
    """TOML for a config-shaped dict: tables of scalars, scalar lists and arrays of tables."""
    lines: list[str] = []
    _table(lines, "", data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], prefix: str, table: dict[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_list(v)}
    if prefix and (scalars or not table):
        lines.extend(("", f"[{prefix}]"))
    lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars.items())
    for key, value in table.items():
        name = f"{prefix}.{_key(key)}" if prefix else _key(key)
        if _is_table(value):
            _table(lines, name, value)
        elif _is_table_list(value):
            for item in value:
                lines.extend(("", f"[[{name}]]"))
                lines.extend(f"{_key(k)} = {_value(v)}" for k, v in item.items())


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
