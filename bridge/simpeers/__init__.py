"""Simulated SIP peers for ``bridge demo``: real SIP and RTP over loopback, our own stack.

:class:`~bridge.simpeers.endpoint.SipEndpoint` drives the sans-IO transaction layer from one
UDP socket; :class:`~bridge.simpeers.phone.SimPhone` is a carrier trunk, an agent seat or a
PBX on top of it (REGISTER with digest auth, INVITE with SDP, auto-answer, BYE);
:class:`~bridge.simpeers.audio.RtpStream` sends each call's G.711 tone and counts what the
other side's tone brought back. The demo's script plays on them: :mod:`~bridge.simpeers.scenes`
(citizens calling a desk), :mod:`~bridge.simpeers.transfer_scenes` (handovers between desks)
and :mod:`~bridge.simpeers.report` (how each side's account is printed).
"""

from bridge.simpeers.audio import RtpStream
from bridge.simpeers.endpoint import SipEndpoint
from bridge.simpeers.phone import PeerCall, SimPhone

__all__ = ["PeerCall", "RtpStream", "SimPhone", "SipEndpoint"]
