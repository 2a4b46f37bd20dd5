"""The plan's CalAIM policy, read from ``profiles/orange-county/`` (``plan.json`` and ``organizations.json``).

REFERENCE.md asks every business table to be data that plans can change; the plan directory's README
says where each value comes from. ``load_plan(directory)``: ``plan.json`` as a ``PlanConfig``
(pydantic, unknown keys refused); ``load_organizations(directory)``: the Organizations of
``organizations.json``. Both cached per directory; no policy of their own (``gateway.calaim.policy``
answers the workflow's questions from them), no database.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from pydantic.alias_generators import to_camel

from gateway.calaim.canonical import ORGANIZATION_TYPE_SYSTEM
from gateway.calaim.ig import PROFILES_DIR
from gateway.types import JSONObject

PLAN_DIR = PROFILES_DIR / "orange-county"
"""The default plan configuration (CalOptima Health, Orange County)."""


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
