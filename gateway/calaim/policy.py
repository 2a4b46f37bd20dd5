"""The plan's CalAIM policy as the workflow asks it: every answer comes from the IG (``profiles/calaim``)
and the plan's configuration (``profiles/<plan>/plan.json``, ``organizations.json``), never from code.

One ``Policy`` is built by ``gateway.calaim.setup.install`` and shared by the hooks and operations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.calaim.config import (
    IG_BASE,
    POF_SYSTEM,
    SERVICE_SYSTEM,
    ImplementationGuide,
    OwnAuthorization,
    PlanConfig,
    load_ig,
    load_organizations,
    load_plan,
)
from gateway.calaim.resources import coding, reference
from gateway.types import JSONObject

DECISIONS = f"{IG_BASE}/ValueSet/authorization-decision"
DECISION_TASK_MAP = f"{IG_BASE}/ConceptMap/decision-task-status"
TASK_REFERRAL_STATUS_MAP = f"{IG_BASE}/ConceptMap/task-status-referral-status"
CERTIFYING_DECISIONS = f"{IG_BASE}/ValueSet/certifying-decision"
NOTICE_OF_ACTION_REQUIRED = f"{IG_BASE}/ValueSet/notice-of-action-required"


@dataclass(frozen=True, eq=False)
class Policy:
    """The IG, the plan configuration and the plan's Organizations by id."""

    ig: ImplementationGuide
    plan: PlanConfig
    organizations: Mapping[str, JSONObject]
    _translations: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict, repr=False)
    """``translate`` by (ConceptMap, code): the IG does not change while the process runs."""

    @classmethod
    def load(cls, plan_dir: Path | None = None) -> Policy:
        """The default IG with the plan configuration of ``plan_dir`` (default ``profiles/orange-county``)."""
        organizations = {str(o["id"]): o for o in load_organizations(plan_dir)}
        return cls(ig=load_ig(), plan=load_plan(plan_dir), organizations=organizations)

    # --- services (CodeSystem calaim-service, ConceptMap service-hcpcs, plan.json) -----------------

    def is_service(self, code: str | None) -> bool:
        """Whether ``code`` is a CalAIM service (ECM or a Community Support)."""
        return code is not None and self.ig.concept(SERVICE_SYSTEM, code) is not None

    def is_ecm(self, service: str) -> bool:
        """Whether ``service`` is ECM (its ``category`` property in CodeSystem calaim-service)."""
        concept = self.ig.concept(SERVICE_SYSTEM, service)
        return concept is not None and concept.prop("category") == "ecm"

    def display(self, system: str, code: str) -> str | None:
        """The display of a code of one of the IG's CodeSystems."""
        concept = self.ig.concept(system, code)
        return concept.display if concept is not None else None

    def hcpcs(self, service: str) -> frozenset[tuple[str, str | None]]:
        """The DHCS HCPCS code and modifier pairs of ``service`` (REFERENCE.md §3)."""
        return self.ig.service_hcpcs(service)

    def needs_own_authorization(self, service: str, pair: tuple[str, str | None]) -> OwnAuthorization | None:
        """The ``ownAuthorization`` rule a line of ``service`` would break: ``pair`` belongs to a service that
        needs its own referral and authorization, which an authorization of ``service`` does not imply."""
        for rule in self.plan.own_authorization:
            if service in rule.not_implied_by and pair in self.hcpcs(rule.service):
                return rule
        return None

    def closed_loop_exempt(self, service: str | None) -> bool:
        """Whether the closed-loop rules exempt ``service`` (REFERENCE.md §5: sobering centers)."""
        return service in self.plan.closed_loop.exempt_services

    def presumptive_required(self, service: str, pofs: Iterable[str]) -> bool:
        """Whether ECM for a member of ``pofs`` must be authorized presumptively (REFERENCE.md §4: POF 4)."""
        return self.is_ecm(service) and any(p in self.plan.presumptive.required_for_pofs for p in pofs)

    def pof_known(self, code: str) -> bool:
        """Whether ``code`` is a Population of Focus."""
        return self.ig.concept(POF_SYSTEM, code) is not None

    # --- terminology of the workflow (ValueSets and ConceptMaps of the IG) ---------------------------

    def in_value_set(self, valueset_url: str, system: str, code: str) -> bool:
        """Whether ``system|code`` is in an IG ValueSet."""
        return (system, code) in self.ig.expand(valueset_url)

    def translate(self, concept_map_url: str, code: str) -> list[str]:
        """The target codes of ``code`` in an IG ConceptMap, in order ([] when unmatched or unknown)."""
        known = self._translations.get((concept_map_url, code))
        if known is None:
            concept_map = self.ig.concept_maps[concept_map_url]
            known = self._translations[(concept_map_url, code)] = tuple(
                target.code
                for group in concept_map.group
                for element in group.element
                if element.code == code
                for target in element.target
                if target.code is not None and target.equivalence != "unmatched"
            )
        return list(known)

    def decision_display(self, decision: str) -> str:
        """The display of an X12 306 decision code in ValueSet authorization-decision (the code if absent)."""
        for include in self.ig.value_sets[DECISIONS].compose.include:
            for concept in include.concept:
                if concept.code == decision and concept.display:
                    return concept.display
        return decision

    # --- organizations ----------------------------------------------------------------------------

    @property
    def plan_organization(self) -> str:
        """The plan's Organization id."""
        return self.plan.plan.organization

    def org(self, org_id: str) -> JSONObject:
        """A Reference to an Organization, with its configured name as display."""
        return reference("Organization", org_id, self.organization_name(org_id))

    def coded(self, system: str, code: str) -> JSONObject:
        """A Coding of an IG CodeSystem, with its display."""
        return coding(system, code, self.display(system, code))

    def organization_name(self, org_id: str) -> str | None:
        """The name of a configured Organization."""
        org = self.organizations.get(org_id)
        return str(org["name"]) if org is not None and "name" in org else None
