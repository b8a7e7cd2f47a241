"""The one error shape of the HTTP API: ``{"error": code, "detail": ...}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web


class ApiError(Exception):
    """Raised by handlers; the error middleware turns it into a JSON response."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {error}")
        self.status = status
        self.error = error
        self.detail = detail
        if headers is None and status == 401:
            headers = bearer_challenge(error)
        self.headers = headers


def bearer_challenge(error: str) -> dict[str, str]:
    """RFC 6750 §3: a 401 names the scheme the client should use."""
    return {"WWW-Authenticate": f'Bearer realm="bridge", error="{error}"'}


def json_error(
    status: int, error: str, detail: Any = None, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)
