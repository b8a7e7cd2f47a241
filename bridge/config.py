"""Service configuration: one TOML file, validated whole at start-up.

Unknown keys are errors (``extra="forbid"``) so an admin's typo fails at load time, reported as
``FILE:LINE: message`` like the dial-plan loader's errors.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.tomlerrors import format_validation_errors


class ConfigError(Exception):
    """The configuration cannot be used; ``errors`` are ``FILE:LINE: message`` lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _split_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _check_hostport(value: str) -> str:
    _split_hostport(value)
    return value


ListenAddress = Annotated[str, AfterValidator(_check_hostport)]
"""A ``HOST:PORT`` to listen on, kept as written; :func:`_split_hostport` takes it apart."""


class SipConfig(_Strict):
    listen: ListenAddress = "127.0.0.1:5060"
    public_host: str | None = None
    user_agent: str = "bridge"
    t1_ms: int = Field(default=500, ge=50, le=5000)
    max_message_bytes: int = Field(default=65535, ge=1500, le=262144)
    max_calls: int = Field(default=0, ge=0)
    max_call_rate: float = Field(default=0.0, ge=0)

    @property
    def address(self) -> tuple[str, int]:
        return _split_hostport(self.listen)

    @property
    def advertised_host(self) -> str:
        return self.public_host or self.address[0]


MIN_PAIRS_PER_WORKER = 16


class MediaConfig(_Strict):
    host: str = "127.0.0.1"
    port_min: int = Field(default=20000, ge=1024, le=65534)
    port_max: int = Field(default=29999, ge=1025, le=65535)
    hold_audio: str | None = None
    timeout_s: float = 0.0
    """Hang up a call when a party sends no RTP or RTCP for this long; 0: never."""
    workers: int = Field(default=0, ge=0, le=64)
    """Relay processes sharing the port range; 0: media in the bridge process itself."""

    @field_validator("timeout_s")
    @classmethod
    def _timeout_off_or_long_enough(cls, value: float) -> float:
        """Below a second a timeout would cut calls over one late packet or a re-INVITE."""
        if value != 0 and value < 1:
            raise ValueError("timeout_s must be 0 (off) or at least 1 second")
        return value


class TokenConfig(_Strict):
    token: str = Field(min_length=16)
    name: str
    role: Literal["agent", "supervisor", "admin", "peer"]
    seat: str | None = None
    platform: str | None = None


class SidecarConfig(_Strict):
    listen: ListenAddress = "127.0.0.1:8080"
    base_url: str | None = None
    link_secret: str = Field(min_length=16)
    link_ttl_s: int = Field(default=3600, ge=60)
    tokens: list[TokenConfig] = []

    @property
    def address(self) -> tuple[str, int]:
        return _split_hostport(self.listen)

    @property
    def public_url(self) -> str:
        host, port = self.address
        return self.base_url or f"http://{host}:{port}"


class StorageConfig(_Strict):
    url: str = "sqlite:///var/bridge.sqlite3"
    max_connections: int = Field(default=8, ge=1, le=200)
    """PostgreSQL: connections this node holds at most (the server's max_connections is shared
    by every node). SQLite uses one writer thread whatever this says."""
    audit_journal: str = "var/audit-journal.jsonl"
    """Where audit entries wait while the store cannot take them (beyond what memory holds, or
    at shutdown), replayed into it on start; relative to the config file's folder."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://")):
            raise ValueError("storage url must start with sqlite:/// or postgresql://")
        return value


class SeatCredential(_Strict):
    user: str
    password: str = Field(min_length=4)


class RegistrarConfig(_Strict):
    realm: str = "bridge"
    digest_algorithms: list[Literal["SHA-256", "MD5"]] = Field(
        default=["SHA-256", "MD5"], min_length=1
    )
    min_expires_s: int = Field(default=60, ge=1)
    max_expires_s: int = Field(default=3600, ge=60)
    seats: list[SeatCredential] = []


class DialplanConfig(_Strict):
    path: str = "dialplans/example.toml"


class LogConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"


class ShutdownConfig(_Strict):
    grace_s: float = Field(default=30.0, ge=0)


class SchedulingConfig(_Strict):
    realtime_priority: int = Field(default=0, ge=0, le=99)


class Config(_Strict):
    sip: SipConfig = SipConfig()
    media: MediaConfig = MediaConfig()
    sidecar: SidecarConfig
    storage: StorageConfig = StorageConfig()
    registrar: RegistrarConfig = RegistrarConfig()
    dialplan: DialplanConfig = DialplanConfig()
    log: LogConfig = LogConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    scheduling: SchedulingConfig = SchedulingConfig()

    base_dir: Path = Field(default=Path("."), exclude=True)

    def resolve(self, path: str) -> Path:
        """Relative paths in the config are relative to the config file's folder."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.base_dir / candidate


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}:{getattr(exc, 'lineno', 1)}: {exc}"]) from exc
    if "base_dir" in data:
        raise ConfigError([f"{path}:1: base_dir is not a configuration key"])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_errors(str(path), text, exc)) from exc
    if config.media.port_min >= config.media.port_max:
        raise ConfigError([f"{path}: media.port_min must be below media.port_max"])
    pairs = (config.media.port_max - config.media.port_min) // 2
    if config.media.workers and pairs < MIN_PAIRS_PER_WORKER * config.media.workers:
        raise ConfigError(
            [
                f"{path}: media.port_min-port_max holds {pairs} RTP port pairs, too few for "
                f"{config.media.workers} media workers (at least {MIN_PAIRS_PER_WORKER} each)"
            ]
        )
    return config.model_copy(update={"base_dir": path.resolve().parent})
