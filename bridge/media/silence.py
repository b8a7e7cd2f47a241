"""When a leg's media has gone quiet for good: the media timeout's rule, pure, on ``now``.

The relay's sweep keeps each leg's clock and asks :func:`media_silence` for the verdict.
"""

from __future__ import annotations

from typing import NamedTuple


class Silence(NamedTuple):
    """One sweep's verdict on a leg's media timeout, and the leg's quiet-spell clock after it."""

    due: bool
    """Report the leg to ``on_timeout`` now."""
    since: float | None
    """When the clock of the current spell started; None: the leg is not watched."""
    reported: float | None
    """The start of the last spell reported, so a spell is reported once."""


def media_silence(
    *,
    relayed: bool,
    held: bool,
    last_rtp: float | None,
    last_rtcp: float | None,
    since: float | None,
    reported: float | None,
    now: float,
    timeout: float,
) -> Silence:
    """Whether a leg has sent neither RTP nor RTCP for ``timeout``, once per quiet spell.

    A phone that lost power or network never sends BYE: its silence is the only sign. RTCP
    counts because a phone with silence suppression sends no RTP while its user listens, but
    keeps reporting (RFC 3550 §6.2). Which legs are watched:

    - a relayed leg (a peer or a conference seat), from the first sweep that sees it relayed,
      so a call whose phone never sent anything times out too;
    - a held leg whose phone has sent RTCP during the call (``last_rtcp`` set), from the first
      sweep that sees it held. Its phone may stop RTP on hold (RFC 3264 §8.4, recvonly or
      inactive) but RTCP goes on (RFC 3550 §6, RFC 3264 §5.1), so a phone that reports and
      falls silent while held is gone. A held leg whose phone never sent RTCP is exempt:
      many trunks and gateways send none, and its silence cannot be told from policy;
    - no other leg (relayed to no one).

    A pure function of the leg's state and ``now``; the caller keeps ``since`` and
    ``reported`` and restarts the clock (``since=None``) when a hold starts or ends and when
    the leg gets a new remote (:meth:`MediaEndpoint.set_remote`).
    """
    watched = last_rtcp is not None if held else relayed
    if not watched:
        return Silence(False, None, reported)
    if since is None:
        since = now
    heard = max(since, last_rtp or 0.0, last_rtcp or 0.0)
    if now - heard < timeout or reported == heard:
        return Silence(False, since, reported)
    return Silence(True, since, heard)
