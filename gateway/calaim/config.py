"""The CalAIM implementation guide and the plan's configuration, read from ``profiles/`` (data, never code).

REFERENCE.md asks every business table to be data that plans can change: the IG's conformance
resources live in ``profiles/calaim/`` (URLs and file names per docs/calaim-ig.md) and the plan's
policy in ``profiles/orange-county/`` (``plan.json`` and ``organizations.json``, described in its
README). This module reads, types and cross-checks them; it holds no policy of its own and touches
no database. Both loads are cached per directory (``load_ig.cache_clear()`` after editing the files).

- ``load_ig()``: CodeSystems, ValueSets, ConceptMaps and StructureDefinitions by canonical URL (the
  raw JSON of every resource too), ``expand(valueset_url)`` (compose of concept lists, whole code
  systems and imported value sets: https://hl7.org/fhir/R4/valueset.html#compositions) and
  ``service_hcpcs(service)``: the HCPCS code and modifier pairs ConceptMap ``service-hcpcs`` allows.
- ``load_plan(directory)``: ``plan.json`` as a ``PlanConfig`` (pydantic, unknown keys refused);
  ``load_organizations(directory)``: the Organizations of ``organizations.json``;
  ``plan_problems(...)``: every code and organization id the plan uses that the IG or the
  organizations do not define.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from pydantic.alias_generators import to_camel

from gateway.types import JSONObject

PROFILES_DIR = Path(__file__).resolve().parent.parent.parent / "profiles"
IG_DIR = PROFILES_DIR / "calaim"
PLAN_DIR = PROFILES_DIR / "orange-county"
"""The default plan configuration (CalOptima Health, Orange County)."""

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


class _Fhir(BaseModel):
    """The parts of a FHIR resource this module reads; other elements are ignored (kept in the raw JSON)."""

    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)


# ----------------------------------------------------------------------------- IG resources


class ConceptProperty(_Fhir):
    """``CodeSystem.concept.property`` (https://hl7.org/fhir/R4/codesystem-definitions.html#CodeSystem.concept.property)."""

    code: str
    value_code: str | None = None
    value_boolean: bool | None = None
    value_string: str | None = None
    value_integer: int | None = None

    @property
    def value(self) -> str | bool | int | None:
        """Whichever ``value[x]`` is present."""
        for value in (self.value_code, self.value_boolean, self.value_string, self.value_integer):
            if value is not None:
                return value
        return None


class Concept(_Fhir):
    """One concept of a CodeSystem, with its properties by code."""

    code: str
    display: str | None = None
    definition: str | None = None
    properties: tuple[ConceptProperty, ...] = Field(default=(), alias="property")
    concept: tuple[Concept, ...] = ()

    def prop(self, code: str) -> str | bool | int | None:
        """The value of the property ``code`` (None when absent)."""
        return next((p.value for p in self.properties if p.code == code), None)


class CodeSystem(_Fhir):
    """https://hl7.org/fhir/R4/codesystem.html"""

    url: str
    name: str
    content: str
    concept: tuple[Concept, ...] = ()

    def concepts(self) -> dict[str, Concept]:
        """Every concept by code, hierarchies flattened."""
        out: dict[str, Concept] = {}
        stack = list(self.concept)
        while stack:
            concept = stack.pop()
            out[concept.code] = concept
            stack.extend(concept.concept)
        return out


class ComposeConcept(_Fhir):
    """``ValueSet.compose.include.concept``."""

    code: str
    display: str | None = None


class ComposeInclude(_Fhir):
    """``ValueSet.compose.include`` / ``exclude`` (filters are not supported: none of the IG's uses one)."""

    system: str | None = None
    concept: tuple[ComposeConcept, ...] = ()
    filter: tuple[JSONObject, ...] = ()
    value_set: tuple[str, ...] = ()


class Compose(_Fhir):
    """``ValueSet.compose``."""

    include: tuple[ComposeInclude, ...]
    exclude: tuple[ComposeInclude, ...] = ()


class ValueSet(_Fhir):
    """https://hl7.org/fhir/R4/valueset.html"""

    url: str
    name: str
    compose: Compose


class MapProduct(_Fhir):
    """``ConceptMap.group.element.target.product`` / ``dependsOn``."""

    prop: str = Field(alias="property")
    system: str | None = None
    value: str


class MapTarget(_Fhir):
    """``ConceptMap.group.element.target``."""

    code: str | None = None
    equivalence: str
    depends_on: tuple[MapProduct, ...] = ()
    product: tuple[MapProduct, ...] = ()


class MapElement(_Fhir):
    """``ConceptMap.group.element``."""

    code: str
    target: tuple[MapTarget, ...] = ()


class MapGroup(_Fhir):
    """``ConceptMap.group``."""

    source: str | None = None
    target: str | None = None
    element: tuple[MapElement, ...]


class ConceptMap(_Fhir):
    """https://hl7.org/fhir/R4/conceptmap.html"""

    url: str
    name: str
    group: tuple[MapGroup, ...]


class TypeRef(_Fhir):
    """``ElementDefinition.type``."""

    code: str
    profile: tuple[str, ...] = ()
    target_profile: tuple[str, ...] = ()


class Binding(_Fhir):
    """``ElementDefinition.binding``."""

    strength: str
    value_set: str | None = None


class ElementDefinition(_Fhir):
    """One differential element (https://hl7.org/fhir/R4/elementdefinition.html); ``fixed[x]``/``pattern[x]``
    are kept as JSON in ``model_extra`` and read through ``fixed()``/``pattern()``."""

    model_config = ConfigDict(extra="allow")

    id: str
    path: str
    slice_name: str | None = None
    min: int | None = None
    max: str | None = None
    must_support: bool = False
    type: tuple[TypeRef, ...] = ()
    binding: Binding | None = None
    slicing: JSONObject | None = None

    def _choice(self, prefix: str) -> tuple[str, Any] | None:
        for key, value in (self.model_extra or {}).items():
            if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
                return key[len(prefix) :], value
        return None

    def fixed(self) -> tuple[str, Any] | None:
        """``(type, value)`` of ``fixed[x]`` (``("Uri", "https://...")``), or None."""
        return self._choice("fixed")

    def pattern(self) -> tuple[str, Any] | None:
        """``(type, value)`` of ``pattern[x]``, or None."""
        return self._choice("pattern")


class Differential(_Fhir):
    """``StructureDefinition.differential``."""

    element: tuple[ElementDefinition, ...]


class StructureDefinition(_Fhir):
    """A profile or extension (https://hl7.org/fhir/R4/structuredefinition.html), differential only."""

    url: str
    name: str
    type: str
    kind: str
    base_definition: str
    derivation: str
    context: tuple[JSONObject, ...] = ()
    differential: Differential


@dataclass(frozen=True, eq=False)
class ImplementationGuide:
    """The IG's conformance resources by canonical URL (NamingSystems, which have no url in R4, by
    ``{ig}/NamingSystem/{id}``), typed where the gateway reads them."""

    resources: Mapping[str, JSONObject]
    code_systems: Mapping[str, CodeSystem]
    value_sets: Mapping[str, ValueSet]
    concept_maps: Mapping[str, ConceptMap]
    structure_definitions: Mapping[str, StructureDefinition]
    _concepts: dict[str, dict[str, Concept]] = field(default_factory=dict, repr=False)
    _expansions: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict, repr=False)

    def of_type(self, resource_type: str) -> dict[str, JSONObject]:
        """The raw resources of one type (``SearchParameter``, ``OperationDefinition``, ...) by URL."""
        return {url: res for url, res in self.resources.items() if res.get("resourceType") == resource_type}

    def concept(self, system: str, code: str) -> Concept | None:
        """The concept ``code`` of the IG's CodeSystem ``system`` (None if either is unknown)."""
        if system not in self._concepts:
            cs = self.code_systems.get(system)
            self._concepts[system] = cs.concepts() if cs is not None else {}
        return self._concepts[system].get(code)

    def codes(self, system: str) -> frozenset[str]:
        """Every code of the IG's CodeSystem ``system``; KeyError if the IG has no such CodeSystem."""
        return frozenset(self.code_systems[system].concepts())

    def expand(self, valueset_url: str) -> frozenset[tuple[str, str]]:
        """The ``(system, code)`` pairs of a ValueSet of the IG; KeyError for unknown ValueSets, ValueError
        for what cannot be enumerated (a filter, a whole code system the IG does not define)."""
        if valueset_url not in self._expansions:
            self._expansions[valueset_url] = frozenset()  # a cycle of imports expands to nothing
            compose = self.value_sets[valueset_url].compose
            included = set().union(*(self._part(inc, valueset_url) for inc in compose.include))
            excluded = set().union(*(self._part(exc, valueset_url) for exc in compose.exclude))
            self._expansions[valueset_url] = frozenset(included - excluded)
        return self._expansions[valueset_url]

    def _part(self, part: ComposeInclude, valueset_url: str) -> set[tuple[str, str]]:
        if part.filter:
            raise ValueError(f"{valueset_url}: compose filters are not supported")
        imported = [self.expand(url) for url in part.value_set]
        if part.system is None:
            if not imported:
                raise ValueError(f"{valueset_url}: an include needs a system or a valueSet")
            pairs = set(imported.pop())
        elif part.concept:
            pairs = {(part.system, c.code) for c in part.concept}
        elif part.system in self.code_systems:
            pairs = {(part.system, code) for code in self.codes(part.system)}
        else:
            raise ValueError(f"{valueset_url}: cannot enumerate the whole code system {part.system}")
        for other in imported:  # system and valueSets of one include intersect (valueset.html#compositions)
            pairs &= other
        return pairs

    def service_hcpcs(self, service_code: str) -> frozenset[tuple[str, str | None]]:
        """``(HCPCS code, modifier or None)`` allowed for a CalAIM service (empty: nothing is allowed)."""
        pairs: set[tuple[str, str | None]] = set()
        for group in self.concept_maps[SERVICE_HCPCS_MAP].group:
            if group.source != SERVICE_SYSTEM or group.target != HCPCS_SYSTEM:
                continue
            for element in group.element:
                if element.code != service_code:
                    continue
                for target in element.target:
                    modifiers = [p.value for p in target.product if p.prop == MODIFIER_PROPERTY]
                    if target.code is not None:
                        pairs.add((target.code, modifiers[0] if modifiers else None))
        return frozenset(pairs)


def _canonical(resource: JSONObject) -> str:
    if resource.get("resourceType") == "NamingSystem":
        return f"{IG_BASE}/NamingSystem/{resource['id']}"
    return str(resource["url"])


@lru_cache(maxsize=4)
def load_ig(directory: Path | None = None) -> ImplementationGuide:
    """Every ``*.json`` resource of ``directory`` (default ``profiles/calaim``), typed where it matters."""
    resources: dict[str, JSONObject] = {}
    for path in sorted((directory or IG_DIR).glob("*.json")):
        resource = orjson.loads(path.read_bytes())
        url = _canonical(resource)
        if url in resources:
            raise ValueError(f"{path.name}: duplicate canonical URL {url}")
        resources[url] = resource

    def typed(resource_type: str, model: type[Any]) -> dict[str, Any]:
        found = (r for r in resources.values() if r.get("resourceType") == resource_type)
        return {str(r["url"]): model.model_validate(r) for r in found}

    return ImplementationGuide(
        resources=resources,
        code_systems=typed("CodeSystem", CodeSystem),
        value_sets=typed("ValueSet", ValueSet),
        concept_maps=typed("ConceptMap", ConceptMap),
        structure_definitions=typed("StructureDefinition", StructureDefinition),
    )


def expand(valueset_url: str) -> frozenset[tuple[str, str]]:
    """``load_ig().expand``: the ``(system, code)`` pairs of a ValueSet of the default IG."""
    return load_ig().expand(valueset_url)


def service_hcpcs(service_code: str) -> frozenset[tuple[str, str | None]]:
    """``load_ig().service_hcpcs``: the HCPCS code and modifier pairs allowed for a CalAIM service."""
    return load_ig().service_hcpcs(service_code)


# ----------------------------------------------------------------------------- plan configuration


class _Plan(BaseModel):
    """plan.json objects: camelCase keys, unknown keys refused (a misspelt key must not be ignored)."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


class PlanInfo(_Plan):
    """The plan: its Organization id in organizations.json, its name and county."""

    organization: str
    name: str
    county: str


class ResponsiblePartyRule(_Plan):
    """Authorizations created before ``cutover`` belong to the member's HN, later ones to the plan."""

    cutover: date
    created_before: str
    created_on_or_after: str

    def for_created(self, created: date) -> str:
        """The responsible-party code of an authorization created on ``created``."""
        return self.created_before if created < self.cutover else self.created_on_or_after


class EcmAuthorizationPeriod(_Plan):
    """ECM authorization periods for authorizations effective in ``[effective_from, effective_to]``."""

    effective_from: date
    effective_to: date | None = None
    initial_months: PositiveInt
    reauthorization_months: PositiveInt
    months_are_maximum: bool = False
    """True when the months are upper bounds (a decision may give less), False when they are the period."""

    def covers(self, day: date) -> bool:
        """Whether an authorization effective on ``day`` follows this rule."""
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)


class EcmPayment(_Plan):
    """ECM is paid per member and month once ``monthly_unit_threshold`` units of ``unit_minutes`` are reached."""

    unit_minutes: PositiveInt
    monthly_unit_threshold: PositiveInt


class EcmPolicy(_Plan):
    """The ECM service code, its authorization periods over time and its payment threshold."""

    service: str
    authorization_periods: tuple[EcmAuthorizationPeriod, ...] = Field(min_length=1)
    payment: EcmPayment

    @model_validator(mode="after")
    def _no_overlap(self) -> EcmPolicy:
        periods = sorted(self.authorization_periods, key=lambda p: p.effective_from)
        for before, after in pairwise(periods):
            if before.effective_to is None or before.effective_to >= after.effective_from:
                raise ValueError(f"ECM authorization periods overlap at {after.effective_from}")
        return self


class CommunitySupport(_Plan):
    """A Community Support the plan offers from ``offered_from``, authorized for ``authorization_months``."""

    service: str
    offered_from: date
    authorization_months: PositiveInt


class OwnAuthorization(_Plan):
    """``service`` needs its own referral and authorization: an authorization of ``not_implied_by`` is not one."""

    service: str
    not_implied_by: tuple[str, ...]


class PresumptivePolicy(_Plan):
    """Presumptive authorization: required for these POFs, encouraged for these services."""

    required_for_pofs: tuple[str, ...]
    encouraged_for_services: tuple[str, ...]


class ClosedLoopPolicy(_Plan):
    """Closed-loop referral reporting: effective and monitored dates, exempt services."""

    effective_from: date
    monitored_from: date
    exempt_services: tuple[str, ...]


class EcmContract(_Plan):
    """An ECM provider (Organization id) and the POFs and services it is contracted for."""

    organization: str
    pofs: tuple[str, ...] = Field(min_length=1)
    services: tuple[str, ...] = Field(min_length=1)


class CsContract(_Plan):
    """A Community Supports provider (Organization id) and the services it is contracted for."""

    organization: str
    services: tuple[str, ...] = Field(min_length=1)


class PlanConfig(_Plan):
    """plan.json: the plan's CalAIM policy (profiles/orange-county/README.md says where each value comes from)."""

    plan: PlanInfo
    responsible_party: ResponsiblePartyRule
    ecm: EcmPolicy
    community_supports: tuple[CommunitySupport, ...]
    own_authorization: tuple[OwnAuthorization, ...] = ()
    presumptive: PresumptivePolicy
    closed_loop: ClosedLoopPolicy
    ecm_providers: tuple[EcmContract, ...]
    cs_providers: tuple[CsContract, ...]

    @model_validator(mode="after")
    def _unique(self) -> PlanConfig:
        for what, keys in (
            ("community support", [c.service for c in self.community_supports]),
            ("ECM provider", [c.organization for c in self.ecm_providers]),
            ("CS provider", [c.organization for c in self.cs_providers]),
        ):
            if len(keys) != len(set(keys)):
                raise ValueError(f"a {what} is listed twice")
        return self

    def ecm_period(self, effective: date) -> EcmAuthorizationPeriod | None:
        """The ECM period rule for an authorization effective on ``effective`` (None before ECM began)."""
        return next((p for p in self.ecm.authorization_periods if p.covers(effective)), None)

    def community_support(self, service: str) -> CommunitySupport | None:
        """The plan's offering of a Community Support (None if not offered)."""
        return next((c for c in self.community_supports if c.service == service), None)

    def ecm_providers_for(self, pof: str) -> tuple[str, ...]:
        """Organization ids of the ECM providers contracted for ``pof``."""
        return tuple(c.organization for c in self.ecm_providers if pof in c.pofs)

    def cs_providers_for(self, service: str) -> tuple[str, ...]:
        """Organization ids of the CS providers contracted for ``service``."""
        return tuple(c.organization for c in self.cs_providers if service in c.services)


@lru_cache(maxsize=4)
def load_plan(directory: Path | None = None) -> PlanConfig:
    """``plan.json`` of ``directory`` (default ``profiles/orange-county``); pydantic ValidationError if malformed."""
    return PlanConfig.model_validate_json((directory or PLAN_DIR).joinpath("plan.json").read_bytes())


@lru_cache(maxsize=4)
def load_organizations(directory: Path | None = None) -> tuple[JSONObject, ...]:
    """The Organizations of ``organizations.json`` (a collection Bundle) of ``directory``."""
    bundle = orjson.loads((directory or PLAN_DIR).joinpath("organizations.json").read_bytes())
    return tuple(entry["resource"] for entry in bundle.get("entry", ()))


def organization_types(organization: JSONObject) -> set[str]:
    """The ``organization-type`` codes of an Organization (plan, health-network, ecm-provider, ...)."""
    return {
        str(coding.get("code"))
        for concept in organization.get("type", ())
        for coding in concept.get("coding", ())
        if coding.get("system") == ORGANIZATION_TYPE_SYSTEM
    }


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
