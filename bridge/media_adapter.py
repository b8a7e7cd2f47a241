"""The media relay behind the call core's synchronous :class:`~bridge.calls.ports.Media`.

The core decides on media while handling one SIP message and cannot await; the relay binds,
registers and releases sockets synchronously.

Released socket pairs are parked and reused after ``REUSE_AFTER`` seconds rather than closed
and bound again: six system calls a leg saved on every short call.
"""

from __future__ import annotations

from bridge.calls.ports import MediaUnavailable, MixMode
from bridge.config import MediaConfig
from bridge.media import mixer
from bridge.media.endpoint import DigitCallback, TimeoutCallback
from bridge.media.relay import MediaEndpoint, MediaRelay, PortPoolExhaustedError
from bridge.media.tone import AudioSource, Samples, ToneSource, load_wav
from bridge.media_figures import MediaFigures

REUSE_AFTER = 1.0
"""Seconds a released pair stays parked, dropping a hung-up phone's late packets, before a new
call may get it (so those packets cannot be latched as the new call's audio)."""


class RelayMedia:
    def __init__(
        self,
        config: MediaConfig,
        *,
        on_digit: DigitCallback | None = None,
        on_timeout: TimeoutCallback | None = None,
    ) -> None:
        self.config = config
        self.on_digit = on_digit
        self.on_timeout = on_timeout
        self.relay: MediaRelay | None = None
        self._hold_samples: Samples | None = None

    async def start(self) -> None:
        self.relay = MediaRelay(
            self.config.host,
            self.config.port_min,
            self.config.port_max,
            reuse_after=REUSE_AFTER,
            timeout_after=self.config.timeout_s,
            on_digit=self.on_digit,
            on_timeout=self.on_timeout,
        )

    def _relay(self) -> MediaRelay:
        assert self.relay is not None, "media not started"
        return self.relay

    def media_figures(self) -> MediaFigures:
        """For ``/metrics``: legs in use (parked pairs are not) and the relay's counters."""
        relay = self.relay
        if relay is None:
            return MediaFigures(legs=0, counters={})
        return MediaFigures(legs=relay.pool.in_use, counters=relay.counters.as_dict())

    def allocate(self, near: MediaEndpoint | None = None) -> MediaEndpoint:
        try:
            return self._relay().allocate()
        except PortPoolExhaustedError as exc:
            raise MediaUnavailable(str(exc)) from exc

    def point(
        self,
        leg: MediaEndpoint,
        host: str,
        port: int,
        payload_type: int | None,
        *,
        telephone_event_pt: int | None,
    ) -> None:
        leg.set_remote(host, port)
        if payload_type is not None:
            leg.codec = payload_type
        leg.telephone_event_pt = telephone_event_pt

    def connect(self, a: MediaEndpoint, b: MediaEndpoint) -> None:
        self._relay().connect(a, b)

    def hold(self, leg: MediaEndpoint) -> None:
        self._relay().play_hold(leg, self._hold_source())

    def unhold(self, leg: MediaEndpoint) -> None:
        self._relay().stop_hold(leg)

    def _hold_source(self) -> AudioSource | Samples:
        """The configured WAV (its samples may be shared) or a fresh comfort tone."""
        if self.config.hold_audio:
            if self._hold_samples is None:
                self._hold_samples = load_wav(self.config.hold_audio)
            return self._hold_samples
        return ToneSource()

    def private_keys(self, leg: MediaEndpoint) -> None:
        leg.swallow_dtmf = True

    def conference(self, legs: list[MediaEndpoint]) -> None:
        self._relay().conference(legs)

    def set_mode(
        self, leg: MediaEndpoint, mode: MixMode, whisper_to: MediaEndpoint | None = None
    ) -> None:
        conference = leg.conference
        if conference is None:
            raise ValueError(f"{leg!r} is in no conference")
        conference.set_mode(leg, mixer.MixMode(mode), whisper_to=whisper_to)

    def release(self, leg: MediaEndpoint) -> None:
        self._relay().release(leg)

    async def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
