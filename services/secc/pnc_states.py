"""Plug and Charge in the `iso15118` package's SECC: where the contract chain is checked, and what the EV is
answered (docs/iso15118.md "Plug and Charge"). Imported by the bridge, in the SECC's virtualenv.

The package hands its controller's ``is_authorized`` the contract chain only in ISO 15118-2 (and there
only after its own checks against a single MO root file); in ISO 15118-20 it calls it with no arguments
and never checks the chain. So two of its states are replaced by subclasses that check the chain the EV
sent with the site's MO roots (pnc.py) before the package answers: the -20 Authorization state
(AuthorizationReq with PnC_AReqAuthorizationMode) and the -2 PaymentDetails state (PaymentDetailsReq).
The package looks both up as module globals at the moment it enters them, so replacing the globals is
enough (``install``).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import iso15118.secc.states.iso15118_2_states as v2
import iso15118.secc.states.iso15118_20_states as v20
import pnc  # services/secc/pnc.py: this script's folder is on sys.path
from cryptography import x509
from iso15118.secc.controller.interface import AuthorizationResponse
from iso15118.shared.messages.din_spec.datatypes import ResponseCode as ResponseCodeDIN
from iso15118.shared.messages.enums import AuthorizationStatus, Protocol
from iso15118.shared.messages.iso15118_2.datatypes import ResponseCode as ResponseCodeV2
from iso15118.shared.messages.iso15118_20.common_messages import AuthorizationReq as AuthorizationReqV20
from iso15118.shared.messages.iso15118_20.common_types import ResponseCode as ResponseCodeV20
from iso15118.shared.notifications import StopNotification
from iso15118.shared.states import Terminate

log = logging.getLogger("v2g_plc.secc.pnc")

PNC, EIM = "PnC", "EIM"


class Authorizer:
    """The site's identification rule for one session: a contract chain the site's MO roots vouch for is
    PnC; one they do not is refused, or, where the site allows it (``fallback_eim``, ISO 15118-20 only),
    answered with the refusal's WARNING code and the session goes on as EIM; no contract at all is EIM (the
    site's external identification, as before Plug and Charge)."""

    def __init__(self, roots: list[x509.Certificate], fallback_eim: bool) -> None:
        self.roots = roots
        self.fallback_eim = fallback_eim
        self.verdict: pnc.Verdict | None = None
        self.mode: str | None = None

    def reset(self) -> None:
        """At session end: the next EV starts unidentified."""
        self.verdict, self.mode = None, None

    def check(self, leaf_der: bytes, sub_ca_ders: list[bytes], max_sub_cas: int = pnc.MAX_SUB_CAS_2) -> pnc.Verdict:
        v = pnc.verify(leaf_der, sub_ca_ders, self.roots, dt.datetime.now(dt.UTC), max_sub_cas)
        self.verdict = v
        (log.info if v.ok else log.warning)("Plug and Charge: %s: %s", v.result, v.reason)
        return v

    @property
    def refused(self) -> bool:
        """The contract was refused and the session may not go on without it."""
        return self.verdict is not None and not self.verdict.ok and not self.fallback_eim

    def authorize(self, protocol: Protocol | None) -> AuthorizationResponse:
        """The answer to the package's ``is_authorized``, from what the state checked before it."""
        v = self.verdict
        if v is None:
            self.mode = EIM
            return AuthorizationResponse(AuthorizationStatus.ACCEPTED, _ok(protocol))
        if v.ok:
            self.mode = PNC
            return AuthorizationResponse(AuthorizationStatus.ACCEPTED, _ok(protocol))
        code = ResponseCodeV20(pnc.CODES_20[v.result])
        if self.fallback_eim:
            self.mode = EIM
            return AuthorizationResponse(AuthorizationStatus.ACCEPTED, code)
        return AuthorizationResponse(AuthorizationStatus.REJECTED, code)

    def status(self) -> dict[str, Any]:
        """``auth``: how the session was identified (None before it is); ``contract_id``: the eMAID of an
        accepted contract; ``contract_refused``: why a contract was refused (the session may have gone on
        as EIM)."""
        v = self.verdict
        return {
            "auth": self.mode,
            "contract_id": v.emaid if v is not None and v.ok else None,
            "contract_refused": None if v is None or v.ok else f"{pnc.CODES_20[v.result]}: {v.reason}",
        }


def _ok(protocol: Protocol | None) -> Any:
    if protocol == Protocol.DIN_SPEC_70121:
        return ResponseCodeDIN.OK
    if protocol is not None and protocol.name.startswith("ISO_15118_20"):
        return ResponseCodeV20.OK
    return ResponseCodeV2.OK


def _authorizer(state: Any) -> Authorizer:
    return state.comm_session.evse_controller.authorizer


class Authorization20(v20.Authorization):
    """ISO 15118-20 AuthorizationReq: the contract chain is checked before the package answers. A refusal
    without the EIM fallback is answered with its WARNING code (Table 224) and then the SECC ends the
    session, as it does after a FAILED code ([V2G20-1633]: the response first, then the connection)."""

    async def process_message(self, message: Any, message_exi: bytes | None = None) -> None:
        auth = _authorizer(self)
        params = message.pnc_params if isinstance(message, AuthorizationReqV20) else None
        if params and auth.verdict is None:
            if params.gen_challenge != self.comm_session.gen_challenge:
                # The package only notes WARNING_ChallengeInvalid, and the controller's answer overwrites it: a
                # signed request replayed from another session would be authorised. Refused here instead.
                why = "the AuthorizationReq signs a GenChallenge this session did not send (a replay?)"
                auth.verdict = pnc.Verdict(pnc.CHALLENGE_INVALID, why, "")
            else:
                chain = params.contract_cert_chain
                auth.check(chain.certificate, list(chain.sub_certificates.certificates), pnc.MAX_SUB_CAS_20)
        await super().process_message(message, message_exi)
        if auth.refused and self.next_state is not Terminate:
            reason = f"{pnc.REFUSED}: {auth.verdict.reason if auth.verdict else ''}"
            peer = self.comm_session.writer.get_extra_info("peername")
            self.comm_session.stop_reason = StopNotification(False, reason, peer)
            self.next_state = Terminate


class PaymentDetails2(v2.PaymentDetails):
    """ISO 15118-2 PaymentDetailsReq: the contract chain is checked before the package's own checks; a
    refusal ends the session with its FAILED code (Table 112). There is no EIM fallback here: the EV chose
    PnC in PaymentServiceSelection, and only a new session can choose EIM."""

    def _mobility_operator_root_cert_path(self) -> str | None:
        return None  # the site's MO roots are checked above; the package's one MO root file is not used

    async def process_message(self, message: Any, message_exi: bytes | None = None) -> None:
        req = getattr(getattr(message, "body", None), "payment_details_req", None)
        if req is not None:
            chain = req.cert_chain
            subs = list(chain.sub_certificates.certificates) if chain.sub_certificates else []
            v = _authorizer(self).check(chain.certificate, subs)
            if v.ok and req.emaid != v.emaid:  # the eMAID the EV names must be its contract certificate's CN
                v = _authorizer(self).verdict = pnc.Verdict(
                    pnc.CHAIN_ERROR, f"PaymentDetailsReq names eMAID {req.emaid!r}, its contract {v.emaid!r}", v.emaid
                )
            if not v.ok:
                code = ResponseCodeV2(pnc.CODES_2[v.result])
                self.stop_state_machine(f"{pnc.REFUSED}: {v.reason}", message, code)
                return
        await super().process_message(message, message_exi)


def install() -> None:
    """Put the two states in the package's place (it enters them by their module-global names)."""
    v20.Authorization = Authorization20  # type: ignore[misc]
    v2.PaymentDetails = PaymentDetails2  # type: ignore[misc]
