"""The media worker's "point" command, without a process or sockets: the telephone-event
payload type it carries is set on the leg, and a command without one keeps the leg's."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bridge.media.worker import Worker


class Endpoint:
    def __init__(self) -> None:
        self.codec = 0
        self.telephone_event_pt: int | None = 101
        self.remote: tuple[str, int] | None = None

    def set_remote(self, host: str, port: int) -> None:
        self.remote = (host, port)


def point(endpoint: Endpoint, *args: Any) -> None:
    worker = SimpleNamespace(_leg=lambda port: endpoint if port == 20000 else None)
    Worker._point(worker, 20000, *args)  # type: ignore[arg-type]


def test_point_sets_the_telephone_event_type_none_included() -> None:
    endpoint = Endpoint()
    point(endpoint, "198.51.100.7", 4000, 8, 96)
    assert (endpoint.remote, endpoint.codec, endpoint.telephone_event_pt) == (
        ("198.51.100.7", 4000),
        8,
        96,
    )
    point(endpoint, "198.51.100.7", 4000, None, None)
    assert (endpoint.codec, endpoint.telephone_event_pt) == (8, None)


def test_a_point_without_the_event_type_keeps_the_leg_s() -> None:
    endpoint = Endpoint()
    point(endpoint, "198.51.100.7", 4000, 0)
    assert (endpoint.codec, endpoint.telephone_event_pt) == (0, 101)
