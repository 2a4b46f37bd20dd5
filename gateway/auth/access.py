"""What one caller may see and do: its SMART scopes, its patient compartment, its organization.

Visibility is a SQL condition on resource rows (``gateway.search.sql.Narrowing``), added to every query
the caller's interaction runs: search results, chain and ``_has`` targets, ``_include``/``_revinclude``,
history, and the existence check of reads and writes. Counts and pages therefore never reveal a hidden
resource (SMART App Launch 2.x scopes-and-launch-context; issue 5).

A row is visible when one of the caller's scopes that grants the permission covers it:

- ``patient/`` scopes: the resource is in the launch patient's compartment (R4 CompartmentDefinition
  ``patient``, vendored in profiles/r4), and that patient is one the organization may see;
- ``user/`` and ``system/`` scopes: the organization's view (``OrganizationView``): the plan everything;
  a health network its members (Coverage ``health-network``) and their data; an ECM/CS provider or the
  county the referrals (ServiceRequest performer or requester) and Tasks (owner or requester) assigned to
  it, and the other patient-compartment data of the members of those referrals. Resources outside the
  patient compartment (Organization, Practitioner, PractitionerRole) are a directory everyone may read;
- granular scopes (``?param=value``) add their search criteria;
- ``AuditEvent`` is visible to the plan's auditors only: a plan grant whose scope names AuditEvent
  itself (a wildcard ``*`` scope never covers it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from sqlalchemy import ColumnElement, FromClause, Select, and_, false, or_, select, true

from gateway.auth.grant import Grant
from gateway.auth.scopes import Scope, matching, parse_scopes
from gateway.errors import FhirError, Forbidden
from gateway.search.query import parse_query
from gateway.search.registry import PROFILES_DIR, Registry
from gateway.search.sql import Narrowing, SqlBuilder
from gateway.store.schema import idx_reference

AUDIT_EVENT = "AuditEvent"
PLAN = "plan"
HEALTH_NETWORK = "health-network"

OrganizationRoles = Callable[[str], frozenset[str]]
"""The roles (organization type codes: plan, health-network, ecm-provider, ...) of an Organization id."""


@cache
def patient_compartment() -> dict[str, tuple[str, ...]]:
    """Resource type → the reference parameters that put it in a Patient's compartment (R4)."""
    path = PROFILES_DIR / "r4" / "compartmentdefinition-patient.json"
    definition = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, tuple[str, ...]] = {}
    for entry in definition["resource"]:
        params = tuple(p for p in entry.get("param", ()) if p != "{def}")
        if params:
            out[entry["code"]] = params
    return out


def _refers(res_type: str, params: Sequence[str], target_type: str, target_ids: object) -> Select[tuple[int]]:
    """``rid``s of ``res_type`` rows whose ``params`` reference ``target_type`` with an id in ``target_ids``
    (a value or a subquery of ids)."""
    t = idx_reference
    ids = t.c.target_id.in_(target_ids) if isinstance(target_ids, Select) else t.c.target_id == target_ids
    return select(t.c.rid).where(t.c.res_type == res_type, t.c.param.in_(params), t.c.target_type == target_type, ids)


def _targets(res_type: str, param: str, target_type: str, rids: Select[tuple[int]]) -> Select[tuple[str | None]]:
    """The ``target_type`` ids that the ``param`` references of the rows ``rids`` (of ``res_type``) point at."""
    t = idx_reference.alias()
    return select(t.c.target_id).where(
        t.c.res_type == res_type, t.c.param == param, t.c.target_type == target_type, t.c.rid.in_(rids)
    )


@dataclass(frozen=True)
class OrganizationView:
    """What the non-plan ``organization`` sees through ``user/``/``system/`` scopes."""

    organization: str
    health_network: bool

    def assigned_referrals(self) -> Select[tuple[int]]:
        """ServiceRequests naming the organization as performer or requester."""
        return _refers("ServiceRequest", ("performer", "requester"), "Organization", self.organization)

    def assigned_tasks(self) -> Select[tuple[int]]:
        """Tasks the organization owns or requested."""
        return _refers("Task", ("owner", "requester"), "Organization", self.organization)

    def members(self) -> Select[tuple[str | None]]:
        """Ids of the Patients the organization may see."""
        referred = _targets("ServiceRequest", "subject", "Patient", self.assigned_referrals())
        tasked = _targets("Task", "patient", "Patient", self.assigned_tasks())
        parts = [referred, tasked]
        if self.health_network:
            covered = _refers("Coverage", ("health-network",), "Organization", self.organization)
            parts.append(_targets("Coverage", "beneficiary", "Patient", covered))
        return parts[0].union(*parts[1:]).subquery().select()

    def condition(self, r: FromClause, resource_type: str) -> ColumnElement[bool]:
        """Rows of ``resource_type`` in ``r`` the organization sees."""
        if resource_type == "Patient":
            return r.c.res_id.in_(self.members())
        compartment = patient_compartment().get(resource_type)
        if compartment is None:
            return true()  # directory resources: Organization, Practitioner, PractitionerRole, ...
        in_members = r.c.rid.in_(_refers(resource_type, compartment, "Patient", self.members()))
        if self.health_network:
            return in_members
        if resource_type == "ServiceRequest":
            return r.c.rid.in_(self.assigned_referrals())
        if resource_type == "Task":
            return r.c.rid.in_(self.assigned_tasks())
        return in_members


class Access:
    """The enforcement decisions for one ``Grant`` (built once per token and cached)."""

    def __init__(self, grant: Grant, registry: Registry, roles: OrganizationRoles | None) -> None:
        self.grant = grant
        self.registry = registry
        self.scopes = parse_scopes(grant.scope)
        org_roles = roles(grant.organization) if roles is not None and grant.organization else frozenset()
        # Without a role directory (the CalAIM layer is off) organizations are not distinguished.
        self.plan = roles is None or PLAN in org_roles
        self.view = (
            None
            if self.plan or grant.organization is None
            else OrganizationView(grant.organization, HEALTH_NETWORK in org_roles)
        )
        self.no_organization = roles is not None and grant.organization is None

    def require(self, resource_type: str, permission: str) -> tuple[Scope, ...]:
        """The scopes granting ``permission`` (a letter of ``cruds``) on ``resource_type``; 403 without one."""
        found = self._effective(matching(self.scopes, resource_type, permission), resource_type)
        if not found:
            raise Forbidden(
                f"The access token's scopes do not allow '{permission}' on {resource_type} "
                f"(granted: {self.grant.scope or 'none'})"
            )
        return found

    def permits(self, resource_type: str, permission: str) -> bool:
        """Whether any scope grants ``permission`` on ``resource_type``."""
        return bool(self._effective(matching(self.scopes, resource_type, permission), resource_type))

    def _effective(self, scopes: tuple[Scope, ...], resource_type: str) -> tuple[Scope, ...]:
        if resource_type == AUDIT_EVENT:
            return tuple(s for s in scopes if s.resource_type == AUDIT_EVENT and s.context != "patient" and self.plan)
        return scopes

    def narrowing(self, resource_types: Sequence[str], permission: str, *, dialect: str) -> Narrowing | None:
        """The visibility condition of rows of ``resource_types`` for ``permission``; ``None`` when the
        caller sees every row of those types (no condition to add)."""
        per_type: dict[str, list[Scope]] = {}
        for resource_type in resource_types:
            per_type[resource_type] = list(
                self._effective(matching(self.scopes, resource_type, permission), resource_type)
            )
        if all(any(self._unrestricted(s) for s in scopes) for scopes in per_type.values()) and per_type:
            return None

        def condition(r: FromClause) -> ColumnElement[bool]:
            branches = []
            for resource_type, scopes in per_type.items():
                if not scopes:
                    continue
                alternatives = [self._scope_condition(s, r, resource_type, dialect) for s in scopes]
                branches.append(and_(r.c.res_type == resource_type, or_(*alternatives)))
            return or_(*branches) if branches else false()

        return condition

    def _unrestricted(self, scope: Scope) -> bool:
        return scope.context != "patient" and not scope.filters and self.plan

    def _scope_condition(self, scope: Scope, r: FromClause, resource_type: str, dialect: str) -> ColumnElement[bool]:
        parts: list[ColumnElement[bool]] = []
        if scope.context == "patient":
            parts.append(self._compartment(r, resource_type))
        elif self.no_organization:
            parts.append(false())  # a user or client without an organization sees nothing
        elif self.view is not None:
            parts.append(self.view.condition(r, resource_type))
        if scope.filters:
            parts.append(self._filters(scope, r, resource_type, dialect))
        return and_(true(), *parts)

    def _compartment(self, r: FromClause, resource_type: str) -> ColumnElement[bool]:
        """Rows in the launch patient's compartment (and that patient visible to the organization)."""
        patient = self.grant.patient
        if patient is None:
            return false()
        if resource_type == "Patient":
            own = r.c.res_id == patient
        else:
            params = patient_compartment().get(resource_type)
            if params is None:
                return false()
            own = r.c.rid.in_(_refers(resource_type, params, "Patient", patient))
        if self.view is not None:
            return (
                and_(own, self.view.condition(r, resource_type))
                if resource_type == "Patient"
                else and_(own, _patient_visible(self.view, patient))
            )
        return own

    def _filters(self, scope: Scope, r: FromClause, resource_type: str, dialect: str) -> ColumnElement[bool]:
        """The granular scope's search criteria on rows of ``resource_type`` (a criterion the type does
        not know matches nothing)."""
        try:
            query = parse_query(
                self.registry,
                resource_type,
                list(scope.filters),
                base_url="",
                strict=True,
                default_count=1,
                max_count=1,
            )
        except FhirError:
            return false()
        builder = SqlBuilder((resource_type,), dialect=dialect, narrowing=None)
        return and_(true(), *builder.criteria(query.criteria, r, (resource_type,)))


def _patient_visible(view: OrganizationView, patient: str) -> ColumnElement[bool]:
    members = view.members().subquery()
    return select(members.c[0]).where(members.c[0] == patient).exists()
