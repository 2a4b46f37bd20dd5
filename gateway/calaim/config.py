"""The CalAIM implementation guide and the plan's configuration, read from ``profiles/`` (data, never code).

REFERENCE.md asks every business table to be data that plans can change: the IG's conformance
resources live in ``profiles/calaim/`` (URLs and file names per docs/calaim-ig.md) and the plan's
policy in ``profiles/orange-county/`` (``plan.json`` and ``organizations.json``, described in its
README). This module is the one import path for all of it; each concern has its own module:

- ``canonical.py``: the IG's canonical URLs and the code systems the gateway writes;
- ``conformance.py``: typed views of CodeSystem, ValueSet, ConceptMap and StructureDefinition;
- ``ig.py``: ``load_ig()`` (the IG by canonical URL), ``expand(valueset_url)``, ``service_hcpcs(service)``;
- ``plan_config.py``: ``load_plan(directory)`` (``plan.json`` as a ``PlanConfig``, unknown keys
  refused), ``load_organizations(directory)``, ``organization_types(organization)``;
- ``plan_check.py``: ``plan_problems(...)``: every code and organization id the plan uses that the IG
  or the organizations do not define.

None holds policy of its own (``gateway.calaim.policy`` answers the workflow's questions) or touches a
database. The loads are cached per directory (``load_ig.cache_clear()`` after editing the files).
"""

from __future__ import annotations

from gateway.calaim.canonical import (
    HCPCS_SYSTEM,
    IG_BASE,
    MODIFIER_PROPERTY,
    ORGANIZATION_TYPE_SYSTEM,
    POF_SYSTEM,
    RESPONSIBLE_PARTY_SYSTEM,
    SERVICE_HCPCS_MAP,
    SERVICE_SYSTEM,
    X12_306_SYSTEM,
)
from gateway.calaim.conformance import (
    Binding,
    CodeSystem,
    Compose,
    ComposeConcept,
    ComposeInclude,
    Concept,
    ConceptMap,
    ConceptProperty,
    Differential,
    ElementDefinition,
    MapElement,
    MapGroup,
    MapProduct,
    MapTarget,
    StructureDefinition,
    TypeRef,
    ValueSet,
)
from gateway.calaim.ig import IG_DIR, PROFILES_DIR, ImplementationGuide, expand, load_ig, service_hcpcs
from gateway.calaim.plan_check import plan_problems
from gateway.calaim.plan_config import (
    PLAN_DIR,
    ClosedLoopPolicy,
    CommunitySupport,
    CsContract,
    EcmAuthorizationPeriod,
    EcmContract,
    EcmPayment,
    EcmPolicy,
    OwnAuthorization,
    PlanConfig,
    PlanInfo,
    PresumptivePolicy,
    ResponsiblePartyRule,
    load_organizations,
    load_plan,
    organization_types,
)

__all__ = [
    "HCPCS_SYSTEM",
    "IG_BASE",
    "IG_DIR",
    "MODIFIER_PROPERTY",
    "ORGANIZATION_TYPE_SYSTEM",
    "PLAN_DIR",
    "POF_SYSTEM",
    "PROFILES_DIR",
    "RESPONSIBLE_PARTY_SYSTEM",
    "SERVICE_HCPCS_MAP",
    "SERVICE_SYSTEM",
    "X12_306_SYSTEM",
    "Binding",
    "ClosedLoopPolicy",
    "CodeSystem",
    "CommunitySupport",
    "Compose",
    "ComposeConcept",
    "ComposeInclude",
    "Concept",
    "ConceptMap",
    "ConceptProperty",
    "CsContract",
    "Differential",
    "EcmAuthorizationPeriod",
    "EcmContract",
    "EcmPayment",
    "EcmPolicy",
    "ElementDefinition",
    "ImplementationGuide",
    "MapElement",
    "MapGroup",
    "MapProduct",
    "MapTarget",
    "OwnAuthorization",
    "PlanConfig",
    "PlanInfo",
    "PresumptivePolicy",
    "ResponsiblePartyRule",
    "StructureDefinition",
    "TypeRef",
    "ValueSet",
    "expand",
    "load_ig",
    "load_organizations",
    "load_plan",
    "organization_types",
    "plan_problems",
    "service_hcpcs",
]
