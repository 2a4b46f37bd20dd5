"""Cross-checks of the plan configuration against the IG and the plan's Organizations.

Every code (CalAIM service, POF, responsible party, organization type) and organization id that
``plan.json`` and ``organizations.json`` use must be defined by the IG (``profiles/calaim/``) or by
``organizations.json``: ``plan_problems`` lists what is not (``tests/calaim/test_profiles_data.py`` requires none).
"""

from __future__ import annotations

from gateway.calaim.canonical import (
    ORGANIZATION_TYPE_SYSTEM,
    POF_SYSTEM,
    RESPONSIBLE_PARTY_SYSTEM,
    SERVICE_SYSTEM,
)
from gateway.calaim.ig import ImplementationGuide
from gateway.calaim.plan_config import PlanConfig, organization_types
from gateway.types import JSONObject


def plan_problems(plan: PlanConfig, organizations: tuple[JSONObject, ...], ig: ImplementationGuide) -> list[str]:
    """Every code or organization id of the plan configuration that the IG or organizations.json lacks."""
    problems: list[str] = []
    orgs = {str(o.get("id")): o for o in organizations}

    def service(code: str, category: str, where: str) -> None:
        concept = ig.concept(SERVICE_SYSTEM, code)
        if concept is None or concept.prop("category") != category:
            problems.append(f"{where}: {code!r} is not a {category} code of {SERVICE_SYSTEM}")

    def organization(oid: str, role: str, where: str) -> None:
        if oid not in orgs or role not in organization_types(orgs[oid]):
            problems.append(f"{where}: {oid!r} is not an Organization of type {role} in organizations.json")

    def pof(code: str, where: str) -> None:
        if ig.concept(POF_SYSTEM, code) is None:
            problems.append(f"{where}: {code!r} is not a code of {POF_SYSTEM}")

    organization(plan.plan.organization, "plan", "plan.organization")
    for party in (plan.responsible_party.created_before, plan.responsible_party.created_on_or_after):
        if ig.concept(RESPONSIBLE_PARTY_SYSTEM, party) is None:
            problems.append(f"responsibleParty: {party!r} is not a code of {RESPONSIBLE_PARTY_SYSTEM}")
    service(plan.ecm.service, "ecm", "ecm.service")
    for cs in plan.community_supports:
        service(cs.service, "community-support", "communitySupports")
    for own in plan.own_authorization:
        for code in (own.service, *own.not_implied_by):
            service(code, "community-support", "ownAuthorization")
    for code in plan.presumptive.required_for_pofs:
        pof(code, "presumptive.requiredForPofs")
    for code in (*plan.presumptive.encouraged_for_services, *plan.closed_loop.exempt_services):
        service(code, "community-support", "presumptive/closedLoop")
    for ecm in plan.ecm_providers:
        organization(ecm.organization, "ecm-provider", "ecmProviders")
        for code in ecm.pofs:
            pof(code, f"ecmProviders[{ecm.organization}]")
        for code in ecm.services:
            service(code, "ecm", f"ecmProviders[{ecm.organization}]")
    for contract in plan.cs_providers:
        organization(contract.organization, "cs-provider", "csProviders")
        for code in contract.services:
            service(code, "community-support", f"csProviders[{contract.organization}]")
    for oid, org in orgs.items():
        for concept in org.get("type", ()):
            for coding in concept.get("coding", ()):
                known = ig.concept(str(coding.get("system")), str(coding.get("code")))
                if coding.get("system") == ORGANIZATION_TYPE_SYSTEM and known is None:
                    problems.append(f"organizations.json {oid}: unknown type {coding.get('code')!r}")
    return problems
