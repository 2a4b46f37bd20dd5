"""Routing a referral to a provider by Population of Focus and service, per the plan's contracts
(plan.json ``ecmProviders`` / ``csProviders``; REFERENCE.md §2 "Provider routing by POF").

- ECM: the providers contracted for the referral's POFs (the member's, when the referral names none).
  Members are assigned to a health network whose own ECM program serves them where it is contracted
  for the POF, so the member's HN wins when it is a candidate; otherwise the first contracted provider in
  plan.json order. When a POF requires presumptive authorization (POF 4), only the providers contracted
  for that POF are candidates: they are the ones trusted to authorize presumptively.
- Community Supports: the providers contracted for the service, first in plan.json order.
- A referrer may name the provider (``ServiceRequest.performer``); it is kept when contracted, refused
  otherwise (a referral to a provider without a contract could never be authorized or paid).
"""

from __future__ import annotations

from gateway.calaim.policy import Policy
from gateway.calaim.resources import refuse
from gateway.errors import Unprocessable


def candidates(policy: Policy, *, service: str, pofs: list[str]) -> list[str]:
    """The providers (Organization ids) contracted for ``service`` and ``pofs``, in plan.json order."""
    plan = policy.plan
    if not policy.is_ecm(service):
        return list(plan.cs_providers_for(service))
    required = [p for p in pofs if p in plan.presumptive.required_for_pofs]
    out: list[str] = []
    for pof in required or pofs:
        for contract in plan.ecm_providers:
            if pof in contract.pofs and service in contract.services and contract.organization not in out:
                out.append(contract.organization)
    return out


def route(policy: Policy, *, service: str, pofs: list[str], health_network: str | None, requested: str | None) -> str:
    """The Organization id the referral goes to; 422 when no contracted provider fits.

    ``requested`` is the provider the referrer named (``ServiceRequest.performer[0]``), if any.
    """
    if policy.is_ecm(service) and not pofs:
        text = (
            "An ECM referral is routed by Population of Focus: name it in the ext-pof extension of the "
            "referral or of the member's Patient (REFERENCE.md section 2)"
        )
        raise refuse(Unprocessable, "required", text, "ServiceRequest.extension")
    found = candidates(policy, service=service, pofs=pofs)
    if not found:
        what = f"POF {', '.join(pofs)}" if policy.is_ecm(service) else "this service"
        text = f"No provider is contracted for {service} ({what}) in the plan's configuration"
        raise refuse(Unprocessable, "business-rule", text, "ServiceRequest.code")
    if requested is not None:
        if requested in found:
            return requested
        text = f"Organization/{requested} is not contracted for {service} here; contracted: {', '.join(found)}"
        raise refuse(Unprocessable, "business-rule", text, "ServiceRequest.performer[0]")
    if health_network is not None and health_network in found:
        return health_network
    return found[0]
