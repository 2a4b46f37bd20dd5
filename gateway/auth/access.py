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
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Dialect, FromClause, Select, and_, false, literal, or_, select, true, union_all

from gateway.auth.grant import Grant
from gateway.auth.scopes import Scope, matching, parse_scopes
from gateway.auth.shapes import PointSql, Shape
from gateway.errors import FhirError, Forbidden
from gateway.search.bound import ORGANIZATION, PATIENT, RES_ID, Marked, placeholders
from gateway.search.candidates import CandidateRows, DrivenNarrowing, RowIds
from gateway.search.membership import HEALTH_NETWORK_ROUTES, ROUTES
from gateway.search.probes import filter_only
from gateway.search.query import parse_query
from gateway.search.registry import PROFILES_DIR, Registry
from gateway.search.sources import params_for_target
from gateway.search.sql import Narrowing, SqlBuilder
from gateway.store.repository import CURRENT_COLUMNS
from gateway.store.schema import idx_member, idx_reference, resource

AUDIT_EVENT = "AuditEvent"
PLAN = "plan"
HEALTH_NETWORK = "health-network"

MAX_TEMPLATES = 1_024
"""Template ``Access`` objects kept (one per grant shape: scopes and roles; emptied when full)."""

OrganizationRoles = Callable[[str], frozenset[str]]
"""The roles (organization type codes: plan, health-network, ecm-provider, ...) of an Organization id."""


@cache
def patient_compartment() -> dict[str, tuple[str, ...]]:
    """Resource type → the reference parameters that put it in a Patient's compartment (R4), as the stored
    parameters whose rows pointing at a Patient are theirs (``gateway.search.sources``: Task ``patient`` is
    ``subject``'s rows); every reader here also asks for ``target_type = 'Patient'``."""
    path = PROFILES_DIR / "r4" / "compartmentdefinition-patient.json"
    definition = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, tuple[str, ...]] = {}
    for entry in definition["resource"]:
        params = tuple(p for p in entry.get("param", ()) if p != "{def}")
        if params:
            out[entry["code"]] = params_for_target(entry["code"], params, "Patient")
    return out


def _names(rid: ColumnElement[int], params: Sequence[str], target_type: str, target_id: str) -> ColumnElement[bool]:
    """The row ``rid`` references ``target_type/target_id`` through one of ``params`` (a probe of
    ``ix_reference_rid``)."""
    t = idx_reference.alias()
    return (
        select(t.c.rid)
        .where(
            t.c.rid == rid,
            filter_only(t.c.param).in_(params),  # seek on rid alone: gateway/search/probes.py says why
            t.c.target_type == target_type,
            t.c.target_id == target_id,
        )
        .exists()
    )


@dataclass(frozen=True)
class OrganizationView:
    """What the non-plan ``organization`` sees through ``user/``/``system/`` scopes.

    Membership is index data (``idx_member``, gateway/search/membership.py): one row per (organization,
    patient) pair of a referral, Task or Coverage, written and dropped by the repository with the
    resource's other index rows. Every condition is correlated: it probes the indexes from the row at
    hand (the row's patient references, then ``ix_member_organization`` for that patient) instead of
    listing the organization's members, so a point read costs a few index probes whatever the size of the
    organization.
    """

    organization: str
    health_network: bool

    def is_member(self, patient_id: ColumnElement[str | None]) -> ColumnElement[bool]:
        """The Patient ``patient_id`` is one the organization may see: the subject of a referral naming it
        as performer or requester, the patient of a Task it owns or requested, or (a health network) a
        beneficiary of a Coverage naming it as the health network. One probe of ``ix_member_organization``."""
        m = idx_member.alias()
        return select(m.c.patient).where(*self._member_rows(m), m.c.patient == patient_id).exists()

    def _member_rows(self, m: FromClause) -> list[ColumnElement[bool]]:
        """The ``idx_member`` rows (alias ``m``) of the organization's routes (a provider or the county
        does not follow Coverage: ``HEALTH_NETWORK_ROUTES``)."""
        conditions = [m.c.organization == self.organization]
        if not self.health_network:
            conditions.extend(m.c.res_type != res_type for res_type in sorted(HEALTH_NETWORK_ROUTES))
        return conditions

    def member_ids(self) -> RowIds:
        """The ids of the Patients ``is_member`` accepts: a range of ``ix_member_organization``."""
        m = idx_member.alias()
        return select(m.c.patient).where(*self._member_rows(m))

    def candidates(self, resource_type: str) -> RowIds | None:
        """``SELECT rid`` of a superset of the rows ``condition`` accepts (``gateway.search.candidates``);
        ``None`` for the directory, which the organization sees whole."""
        t = idx_reference.alias()
        if resource_type == "Patient":
            return select(resource.c.rid).where(
                resource.c.res_type == "Patient", resource.c.res_id.in_(self.member_ids())
            )
        compartment = patient_compartment().get(resource_type)
        if compartment is None:
            return None
        naming = self._naming_params(resource_type)
        if naming is not None:
            return select(t.c.rid).where(
                t.c.res_type == resource_type,
                t.c.param.in_(naming),
                t.c.target_id == self.organization,
                t.c.target_type == "Organization",
            )
        return select(t.c.rid).where(
            t.c.res_type == resource_type,
            t.c.param.in_(compartment),
            t.c.target_id.in_(self.member_ids()),
            t.c.target_type == "Patient",
        )

    def in_members_compartment(self, r: FromClause, params: Sequence[str]) -> ColumnElement[bool]:
        """The row ``r`` is in the compartment of a member (``params``: its compartment parameters)."""
        c = idx_reference.alias()
        return (
            select(c.c.rid)
            .where(
                c.c.rid == r.c.rid,
                filter_only(c.c.param).in_(params),
                c.c.target_type == "Patient",
                self.is_member(c.c.target_id),
            )
            .exists()
        )

    def condition(self, r: FromClause, resource_type: str) -> ColumnElement[bool]:
        """Rows of ``resource_type`` in ``r`` the organization sees."""
        if resource_type == "Patient":
            return self.is_member(r.c.res_id)
        compartment = patient_compartment().get(resource_type)
        if compartment is None:
            return true()  # directory resources: Organization, Practitioner, PractitionerRole, ...
        naming = self._naming_params(resource_type)
        if naming is not None:
            return _names(r.c.rid, naming, "Organization", self.organization)
        return self.in_members_compartment(r, compartment)

    def _naming_params(self, resource_type: str) -> tuple[str, ...] | None:
        """For a provider or the county, the parameters by which a referral or Task names the organization
        (``membership.ROUTES``): it sees those rows that name it, not every row of its members. None for a
        health network (it sees its members' rows) and for every other type."""
        if self.health_network or resource_type not in ROUTES or resource_type in HEALTH_NETWORK_ROUTES:
            return None
        return ROUTES[resource_type][1]


class Access:
    """The enforcement decisions for one ``Grant`` (built once per token and cached).

    Its SQL is compiled by the *template* of its shape (``template_of``): the same ``Access`` for a grant
    whose organization and launch patient are the markers of ``gateway.search.bound``, so every grant of
    the shape runs the same statements with its own ids bound (``values``)."""

    def __init__(
        self, grant: Grant, registry: Registry, roles: OrganizationRoles | None, *, template: bool = False
    ) -> None:
        self.grant = grant
        self.registry = registry
        self.scopes = parse_scopes(grant.scope)
        org_roles = roles(grant.organization) if roles is not None and grant.organization else frozenset()
        self.shape = Shape(
            grant.scope, None if roles is None else org_roles, grant.organization is not None, grant.patient is not None
        )
        self.values = {ORGANIZATION: grant.organization, PATIENT: grant.patient}
        """Marker → this grant's value, bound into the shape's SQL."""
        self._template: Access | None = self if template else None
        self._marked: dict[tuple[str, str, str, bool], Marked | None] = {}
        # Without a role directory (the CalAIM layer is off) organizations are not distinguished.
        self.plan = roles is None or PLAN in org_roles
        self.view = (
            None
            if self.plan or grant.organization is None
            else OrganizationView(grant.organization, HEALTH_NETWORK in org_roles)
        )
        self.no_organization = roles is not None and grant.organization is None
        self._granted: dict[tuple[str, str], tuple[Scope, ...]] = {}
        self._narrowings: dict[tuple[tuple[str, ...], str, str], Narrowing | None] = {}
        self._points: dict[tuple[tuple[str, ...], str, str], PointSql | None] = {}
        self._reads: dict[tuple[str, str], PointSql | None] = {}
        self._readable: dict[str, tuple[Dialect, PointSql | None]] = {}
        """Type → the dialect and ``read_sql`` of a type whose ``r`` is granted (``readable``'s one look-up)."""

    def require(self, resource_type: str, permission: str) -> tuple[Scope, ...]:
        """The scopes granting ``permission`` (a letter of ``cruds``) on ``resource_type``; 403 without one."""
        found = self._granted.get((resource_type, permission))  # every guarded request: the cache inline
        if found is None:
            found = self._granting(resource_type, permission)
        if not found:
            raise Forbidden(
                f"The access token's scopes do not allow '{permission}' on {resource_type} "
                f"(granted: {self.grant.scope or 'none'})"
            )
        return found

    def permits(self, resource_type: str, permission: str) -> bool:
        """Whether any scope grants ``permission`` on ``resource_type``."""
        return bool(self._granting(resource_type, permission))

    def _granting(self, resource_type: str, permission: str) -> tuple[Scope, ...]:
        key = (resource_type, permission)
        found = self._granted.get(key)
        if found is None:
            found = self._granted[key] = self._effective(
                matching(self.scopes, resource_type, permission), resource_type
            )
        return found

    def _effective(self, scopes: tuple[Scope, ...], resource_type: str) -> tuple[Scope, ...]:
        if resource_type == AUDIT_EVENT:
            return tuple(s for s in scopes if s.resource_type == AUDIT_EVENT and s.context != "patient" and self.plan)
        return scopes

    def narrowing(self, resource_types: Sequence[str], permission: str, *, dialect: str) -> Narrowing | None:
        """The visibility condition of rows of ``resource_types`` for ``permission``; ``None`` when the
        caller sees every row of those types (no condition to add).

        Building the SQL expression costs far more than running it (SQLAlchemy makes column proxies for
        every alias), so the condition on the ``resource`` table itself is built once per grant, types
        and permission and reused; conditions on aliases (chain targets, includes) are built per use."""
        key = (tuple(resource_types), permission, dialect)
        if key not in self._narrowings:
            self._narrowings[key] = self._narrowing(resource_types, permission, dialect=dialect)
        return self._narrowings[key]

    def template(self) -> Access:
        """The ``Access`` of this grant's shape on the markers of ``gateway.search.bound`` (``template_of``)."""
        if self._template is None:
            self._template = template_of(self.shape, self.registry)
        return self._template

    def visibility_sql(self, resource_type: str, permission: str, *, dialect: Dialect) -> PointSql | None:
        """SQL selecting the resource of ``resource_type`` whose id is ``PointSql.params``' id, if the
        caller sees it; ``None`` when the caller sees every row of the type.

        Point reads are the hottest path: the statement is compiled once per shape (constants inline:
        types, parameter codes; the organization and patient ids bound) and run as plain driver SQL,
        which costs a sixth of an SQLAlchemy execution of the same tree."""
        key = ((resource_type,), permission, dialect.name)
        if key not in self._points:
            marked = self.template().point_text(resource_type, permission, dialect, read=False)
            self._points[key] = None if marked is None else PointSql.of(*marked, self.values)
        return self._points[key]

    def read_sql(self, resource_type: str, *, dialect: Dialect) -> PointSql | None:
        """The point read of the caller (https://hl7.org/fhir/R4/http.html#read) as one statement: the
        current row of ``resource_type`` whose id is ``PointSql.params``' id (the columns of
        ``Repository.read``: rid, res_type, res_id, version_id, last_updated, deleted, body), only if the
        caller may read it; ``None`` when the caller sees every row of the type (a plain read).

        The visibility condition is the one ``visibility_sql`` checks (the same ``narrowing`` for ``r``),
        folded into the read's own SELECT, so a narrowed read is one statement: no row answers a hidden
        resource exactly like a missing one (404). Compiled once per shape, like ``visibility_sql``."""
        key = (resource_type, dialect.name)
        try:
            return self._reads[key]  # one look-up on the hot path
        except KeyError:
            marked = self.template().point_text(resource_type, "r", dialect, read=True)
            found = self._reads[key] = None if marked is None else PointSql.of(*marked, self.values)
            return found

    def readable(self, resource_type: str, dialect: Dialect) -> PointSql | None:
        """``require(resource_type, "r")`` then ``read_sql``: the checks of a read (https://hl7.org/fhir/R4/
        http.html#read) outside a transaction, as the guard runs them for every token read
        (``gateway.fhir.guard.run``); each is one look-up in its own cache. Raises 403 (``Forbidden``) as
        ``require`` does, every time (a refused type is never remembered).

        A granted type's answer is remembered by the type alone (with the dialect it is for), so the hot
        path is one dict look-up and no further call: two Python calls fewer per token read than
        ``require`` then ``read_sql`` (session 11, docs/performance.md)."""
        found = self._readable.get(resource_type)
        if found is not None and found[0] is dialect:
            return found[1]
        self.require(resource_type, "r")
        point = self.read_sql(resource_type, dialect=dialect)
        self._readable[resource_type] = (dialect, point)
        return point

    def point_text(self, resource_type: str, permission: str, dialect: Dialect, *, read: bool) -> Marked | None:
        """The text of ``visibility_sql`` (``read``: of ``read_sql``) with its markers, compiled once (on a
        template); ``None`` when the caller sees every row of the type."""
        key = (resource_type, permission, dialect.name, read)
        if key not in self._marked:
            narrowing = self.narrowing((resource_type,), permission, dialect=dialect.name)
            columns = CURRENT_COLUMNS if read else (resource.c.rid,)
            self._marked[key] = None if narrowing is None else _point_sql(resource_type, narrowing, dialect, columns)
        return self._marked[key]

    def _narrowing(self, resource_types: Sequence[str], permission: str, *, dialect: str) -> Narrowing | None:
        universe = tuple(resource_types)
        if universe and all(self._sees_all(t, permission) for t in universe):
            return None
        on_resource: dict[tuple[str, ...], ColumnElement[bool]] = {}

        def narrowing(r: FromClause, types: Sequence[str] | None) -> ColumnElement[bool]:
            wanted = tuple(types) if types is not None else universe
            if r is not resource:
                return self._condition(r, wanted, permission, dialect)
            if wanted not in on_resource:
                on_resource[wanted] = self._condition(r, wanted, permission, dialect)
            return on_resource[wanted]

        template = None if self._template is self else self.template().narrowing(universe, permission, dialect=dialect)
        assert template is None or isinstance(template, DrivenNarrowing)  # the same shape: never None here
        return DrivenNarrowing(
            narrowing, lambda types: self._candidates(types, permission), template=template, values=self.values
        )

    def _candidates(self, types: tuple[str, ...], permission: str) -> CandidateRows | None:
        """``SELECT rid`` of a superset of the rows of ``types`` the caller sees for ``permission``: the
        union over the granting scopes of the rows pointing at the launch patient or at the organization's
        members (``gateway.search.candidates``); ``None`` when a scope shows a type whole."""
        branches: list[RowIds] = []
        few = True
        for resource_type in types:
            for scope in self._effective(matching(self.scopes, resource_type, permission), resource_type):
                if self._unrestricted(scope):
                    return None
                branch: RowIds | None
                if scope.context == "patient":
                    branch = self._compartment_rows(resource_type)
                elif self.no_organization:
                    continue  # sees nothing
                elif self.view is not None:
                    branch, few = self.view.candidates(resource_type), False
                else:
                    return None  # the plan's granular scopes: every row of the type may match
                if branch is None:
                    return None
                branches.append(branch)
        if not branches:
            return CandidateRows(select(resource.c.rid).where(false()), few=True)
        return CandidateRows(union_all(*branches) if len(branches) > 1 else branches[0], few=few)

    def _compartment_rows(self, resource_type: str) -> Select[Any]:
        """``SELECT rid`` of the launch patient's compartment rows of ``resource_type`` (``_compartment``
        without the membership test)."""
        patient = self.grant.patient
        if patient is None:
            return select(resource.c.rid).where(false())
        if resource_type == "Patient":
            return select(resource.c.rid).where(resource.c.res_type == "Patient", resource.c.res_id == patient)
        params = patient_compartment().get(resource_type)
        if params is None:
            return select(resource.c.rid).where(false())
        t = idx_reference.alias()
        return select(t.c.rid).where(
            t.c.res_type == resource_type, t.c.param.in_(params), t.c.target_id == patient, t.c.target_type == "Patient"
        )

    def _sees_all(self, resource_type: str, permission: str) -> bool:
        found = self._effective(matching(self.scopes, resource_type, permission), resource_type)
        return any(self._unrestricted(s) for s in found)

    def _condition(self, r: FromClause, types: tuple[str, ...], permission: str, dialect: str) -> ColumnElement[bool]:
        """Rows of ``r`` of one of ``types`` that a scope granting ``permission`` lets the caller see."""
        whole = [t for t in types if self._sees_all(t, permission)]
        branches: list[ColumnElement[bool]] = [r.c.res_type.in_(whole)] if whole else []
        for resource_type in types:
            if resource_type in whole:
                continue
            scopes = self._effective(matching(self.scopes, resource_type, permission), resource_type)
            if scopes:
                alternatives = [self._scope_condition(s, r, resource_type, dialect) for s in scopes]
                branches.append(and_(r.c.res_type == resource_type, or_(*alternatives)))
        return or_(*branches) if branches else false()

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
            own = _names(r.c.rid, params, "Patient", patient)
        if self.view is not None:
            return and_(own, self.view.is_member(literal(patient)))
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


_TEMPLATES: dict[tuple[int, Shape], Access] = {}
_TEMPLATES_LOCK = threading.Lock()


def template_of(shape: Shape, registry: Registry) -> Access:
    """The template ``Access`` of ``shape``: a grant of those scopes and roles whose organization and
    launch patient are the markers of ``gateway.search.bound`` (one per shape and registry, bounded)."""
    key = (id(registry), shape)
    found = _TEMPLATES.get(key)
    if found is not None and found.registry is registry:
        return found
    grant = Grant(
        subject="template",
        client_id="template",
        scope=shape.scope,
        token_id="template",  # noqa: S106 - an id, not a secret
        expires_at=0,
        patient=PATIENT if shape.patient else None,
        organization=ORGANIZATION if shape.organization else None,
    )
    roles = shape.roles
    found = Access(grant, registry, None if roles is None else lambda _organization: roles, template=True)
    with _TEMPLATES_LOCK:
        if len(_TEMPLATES) >= MAX_TEMPLATES:
            _TEMPLATES.clear()
        return _TEMPLATES.setdefault(key, found)


def _point_sql(
    resource_type: str,
    narrowing: Narrowing,
    dialect: Dialect,
    columns: Sequence[ColumnElement[Any]] = (resource.c.rid,),
) -> Marked:
    """``SELECT columns`` (default: ``rid``) of one ``resource_type`` row that ``narrowing`` lets through,
    as driver SQL of ``dialect`` with the markers of ``gateway.search.bound`` as placeholders (the row's id:
    ``RES_ID``, exactly once)."""
    r = resource
    statement = select(*columns).where(
        r.c.res_type == resource_type, r.c.res_id == RES_ID, narrowing(r, (resource_type,))
    )
    sql = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}).string
    quoted = f"'{RES_ID}'"
    if quoted not in sql:  # the condition is false whatever the row (SQLAlchemy dropped the whole WHERE)
        nothing = select(*columns).where(r.c.res_type == resource_type, r.c.res_id == RES_ID, r.c.rid.is_(None))
        sql = nothing.compile(dialect=dialect, compile_kwargs={"literal_binds": True}).string
    if sql.count(quoted) != 1:
        raise AssertionError("the id placeholder must appear exactly once")
    return placeholders(sql, dialect)
