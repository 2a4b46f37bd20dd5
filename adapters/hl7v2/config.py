"""The mapping settings of the county interface, from ``Settings`` and the plan's configuration
(``profiles/<plan>/organizations.json`` through ``gateway.calaim.policy.Policy``)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from gateway.calaim.policy import Policy
from gateway.settings import Settings
from mappings.hl7v2.profiles import MappingConfig
from mappings.hl7v2.tables import NPI_SYSTEM


def mapping_config(settings: Settings, policy: Policy) -> MappingConfig:
    """The ``MappingConfig`` of this gateway: identifier systems under ``hl7v2_identifier_base``, the
    Organizations by NPI, the plan's ids (IN1-3 values that mean the plan: its id and its NPI)."""
    base = settings.hl7v2_identifier_base.rstrip("/")
    by_npi: dict[str, str] = {}
    names: dict[str, str] = {}
    for org_id, organization in policy.organizations.items():
        if organization.get("name"):
            names[org_id] = str(organization["name"])
        for identifier in organization.get("identifier") or ():
            if identifier.get("system") == NPI_SYSTEM and identifier.get("value"):
                by_npi[str(identifier["value"])] = org_id
    plan = policy.plan_organization
    plan_ids = {plan, *(npi for npi, org in by_npi.items() if org == plan)}
    return MappingConfig(
        zone=ZoneInfo(settings.hl7v2_time_zone),
        county_organization=settings.hl7v2_county_organization,
        plan_organization=plan,
        mrn_system=f"{base}/mrn",
        referral_id_system=f"{base}/referral-id",
        visit_id_system=f"{base}/visit-number",
        organizations_by_npi=by_npi,
        organization_names=names,
        plan_payer_ids=frozenset(plan_ids),
    )
