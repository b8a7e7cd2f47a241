"""The media timeout's verdict (:func:`bridge.media.silence.media_silence`) on a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.media.silence import media_silence

TIMEOUT = 30.0


@dataclass
class Leg:
    """A leg's state as the relay keeps it, swept at times the test chooses."""

    relayed: bool = True
    held: bool = False
    last_rtp: float | None = None
    last_rtcp: float | None = None
    since: float | None = None
    reported: float | None = None

    def sweep(self, now: float) -> bool:
        verdict = media_silence(
            relayed=self.relayed,
            held=self.held,
            last_rtp=self.last_rtp,
            last_rtcp=self.last_rtcp,
            since=self.since,
            reported=self.reported,
            now=now,
            timeout=TIMEOUT,
        )
        self.since, self.reported = verdict.since, verdict.reported
        return verdict.due

    def hold(self) -> None:
        """As :meth:`MediaRelay.play_hold`: detached, and the clock restarts."""
        self.relayed, self.held, self.since = False, True, None

    def resume(self) -> None:
        self.relayed, self.held, self.since = True, False, None


def reports(leg: Leg, times: list[float]) -> list[float]:
    return [t for t in times if leg.sweep(t)]


def test_a_relayed_leg_that_never_sends_is_reported_once_after_the_timeout() -> None:
    leg = Leg()
    assert reports(leg, [100.0, 129.0, 130.0, 131.0, 200.0]) == [130.0]


def test_rtp_or_rtcp_starts_a_new_spell() -> None:
    leg = Leg()
    assert reports(leg, [0.0, 30.0]) == [30.0]
    leg.last_rtp = 40.0
    assert reports(leg, [60.0, 70.0, 80.0]) == [70.0]
    leg.last_rtcp = 75.0
    assert reports(leg, [104.0, 105.0, 106.0]) == [105.0]


def test_a_leg_relayed_to_no_one_is_never_reported() -> None:
    leg = Leg(relayed=False, last_rtcp=1.0)
    assert reports(leg, [0.0, 50.0, 500.0]) == []
    assert leg.since is None


def test_a_held_leg_whose_phone_never_sent_rtcp_is_exempt() -> None:
    leg = Leg(last_rtp=0.0)
    leg.sweep(1.0)
    leg.hold()
    assert reports(leg, [2.0, 40.0, 500.0]) == []
    assert leg.since is None


def test_a_held_leg_whose_phone_sent_rtcp_is_reported_after_rtcp_silence() -> None:
    leg = Leg(last_rtp=0.0, last_rtcp=0.0)
    leg.sweep(1.0)
    leg.hold()  # the phone's RTP and RTCP stop with the hold: it lost power
    assert reports(leg, [10.0, 39.0, 40.0, 41.0, 100.0]) == [40.0], "once, from the hold"


def test_a_held_leg_that_keeps_sending_rtcp_is_not_reported() -> None:
    leg = Leg(last_rtp=0.0, last_rtcp=0.0)
    leg.hold()
    for t in range(5, 300, 5):  # a report every 5 s, no RTP (recvonly or inactive)
        leg.last_rtcp = float(t)
        assert not leg.sweep(t + 0.5)


def test_rtcp_first_heard_during_the_hold_starts_the_watch() -> None:
    leg = Leg(last_rtp=0.0)
    leg.hold()
    assert reports(leg, [1.0, 50.0]) == []
    leg.last_rtcp = 60.0  # the clock starts at the first sweep that sees it watched
    assert reports(leg, [61.0, 90.0, 91.0]) == [91.0]


def test_the_clock_restarts_at_the_hold_and_at_the_resume() -> None:
    leg = Leg(last_rtcp=0.0)
    leg.sweep(0.0)  # relayed and silent since 0 ...
    leg.hold()  # ... held at 25: the hold gets a full timeout of its own
    assert reports(leg, [25.0, 54.0]) == []
    leg.resume()  # resumed at 54, still silent
    assert reports(leg, [54.0, 83.0, 84.0]) == [84.0]
