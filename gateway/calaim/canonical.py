"""Canonical URLs of the CalAIM implementation guide and the code systems the gateway writes.

The IG's own URLs are ``{IG_BASE}/{resourceType}/{id}`` (docs/calaim-ig.md lists them); the external
systems are the HCPCS and X12 code sets the IG binds to. Data, not policy: the resources themselves are
in ``profiles/calaim/`` and are read by ``gateway.calaim.ig``.
"""

from __future__ import annotations

IG_BASE = "https://fhir.calaim-gateway.org"
HCPCS_SYSTEM = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
X12_306_SYSTEM = "https://codesystem.x12.org/005010/306"
SERVICE_SYSTEM = f"{IG_BASE}/CodeSystem/calaim-service"
POF_SYSTEM = f"{IG_BASE}/CodeSystem/pof"
RESPONSIBLE_PARTY_SYSTEM = f"{IG_BASE}/CodeSystem/responsible-party"
ORGANIZATION_TYPE_SYSTEM = f"{IG_BASE}/CodeSystem/organization-type"
SERVICE_HCPCS_MAP = f"{IG_BASE}/ConceptMap/service-hcpcs"
MODIFIER_PROPERTY = (
    "http://hl7.org/fhir/StructureDefinition/CoverageEligibilityResponse"
    "#CoverageEligibilityResponse.insurance.item.modifier"
)
"""``ConceptMap.group.element.target.product.property`` naming the HCPCS modifier of a combination."""
