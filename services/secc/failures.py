"""Why an ISO 15118 session ended, as one of a few kinds the runtime can count and act on.

Standard library only: the bridge imports it in the SECC's own virtualenv, the tests in the runtime's.
The `iso15118` package (0.31) hands its controller only the stop reason as text (``session_ended``), so the
kind is read from that text; the texts matched here are the package's own (shared/comm_session.py
``rcv_loop``, secc/states/*: SessionStop and ``stop_state_machine``). A text not matched is a
``protocol`` failure: an end this module does not know is never taken for a normal one.
"""

from __future__ import annotations

# The kinds (docs/iso15118.md "Session failures"). A handshake failure is one that ends the session before
# power transfer: on a PLC link these are what a weak link looks like (ISO 15118-3: the SNR drops, frames
# are lost, the first requests time out).
HANDSHAKE_TIMEOUT = "handshake_timeout"  # no SupportedAppProtocolReq, or a timeout before the charge loop
TIMEOUT = "timeout"  # a request that did not come in time once power transfer had begun
PROTOCOL = "protocol"  # no common protocol, a message that failed to decode or came out of sequence
LINK = "link"  # the EV's TCP connection closed or reset mid-session
TLS = "tls"  # the TLS handshake failed (untrusted certificate, plain TCP to the TLS port)
EVSE = "evse"  # the charger said no: a failed cable check (insulation), a contactor that did not close or open
KINDS = (HANDSHAKE_TIMEOUT, TIMEOUT, PROTOCOL, LINK, TLS, EVSE)
# The package's stop reasons when the controller's hooks refuse (secc/states: CableCheck, PowerDelivery).
_EVSE = ("Isolation Failure", "Contactor didn", "[V2G2-860]")

# Normal ends: the EV's SessionStop (-20, -2, DIN; the package's SessionStop states word them so).
_NORMAL = ("Communication session terminated", "Communication session paused", "Communication session stopped")
_NORMAL_PREFIX = "EV requested to "

# States reached only once power transfer is under way: -20 AC/DC charge loop, -2 and DIN CurrentDemand
# and ChargingStatus, and the states after them (PowerDelivery stop, WeldingDetection, SessionStop).
_POWER_STATES = ("ChargeLoop", "CurrentDemand", "ChargingStatus", "WeldingDetection", "SessionStop")


def powered(states: set[str] | list[str]) -> bool:
    """Did a session that went through ``states`` reach power transfer?"""
    return any(p in s for s in states for p in _POWER_STATES)


def classify(reason: str, reached_power: bool) -> str | None:
    """The failure kind of a session that ended with ``reason``; None for a normal end."""
    if reason.startswith(_NORMAL) or reason.startswith(_NORMAL_PREFIX):
        return None
    if reason.startswith("TimeoutError"):
        return TIMEOUT if reached_power else HANDSHAKE_TIMEOUT
    if reason.startswith(("TCP peer closed connection", "ConnectionResetError", "BrokenPipeError")):
        return LINK
    if reason.startswith(_EVSE):
        return EVSE
    return PROTOCOL
