"""``POST [base]/CoverageEligibilityRequest/$submit`` (OperationDefinition submit): the EHR-facing check.

An EHR posts a CoverageEligibilityRequest (purpose ``auth-requirements`` or ``validation``) for a member
and one CalAIM service, as the body or as the ``resource`` parameter, and gets its
CoverageEligibilityResponse at once: authorized or not, authorization number (``preAuthRef``), period
(``insurance.benefitPeriod``), responsible party (extension), from the stored authorizations. Authorized
means a certified authorization (A1, A2, A6) of that member and service whose period covers the
request's ``servicedDate`` (or ``servicedPeriod.start``; default today) and whose lines include every
HCPCS line the request names.

Both are stored, in one transaction: the request (completed with ``status``, ``created``, ``insurer``
when missing, claiming profile calaim-authorization-request) and the answer, which is an eligibility
answer, not an authorization: it claims no CalAIM profile and carries no authorization-number
identifier (that stays unique to the authorization itself; search ``identifier=`` finds only it), but
mirrors the authorization's extensions (decision, responsible party, kind, referral, Notice of Action).
"""

from __future__ import annotations

import copy
from datetime import date

from gateway.calaim.authorizations import Authorization, of_member
from gateway.calaim.config import HCPCS_SYSTEM, IG_BASE, SERVICE_SYSTEM
from gateway.calaim.members import membership
from gateway.calaim.parameters import read_parameters
from gateway.calaim.policy import Policy
from gateway.calaim.resources import (
    PROFILE_AUTH_REQUEST,
    add_profile,
    codes_of,
    conn_of,
    first_code,
    ref_id,
    reference,
    refuse,
    to_date,
    today,
    write,
)
from gateway.errors import BadRequest, Unprocessable
from gateway.fhir.context import Context
from gateway.fhir.operations import operation_body
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.responses import version_headers
from gateway.store.repository import StoredResource
from gateway.types import JSONObject

DEFINITION = f"{IG_BASE}/OperationDefinition/submit"
PURPOSES = ("auth-requirements", "validation")
"""The purposes $submit answers (OperationDefinition submit; https://hl7.org/fhir/R4/valueset-eligibilityrequest-purpose.html)."""


class SubmitOperation:
    """The ``$submit`` handler (registered by ``gateway.calaim.setup``)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def __call__(self, ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
        """Check the request, store it and its answer, answer 200 with the CoverageEligibilityResponse."""
        body = operation_body(
            ctx, request, missing="$submit takes a CoverageEligibilityRequest (or Parameters with it) as its body"
        )
        if body.get("resourceType") == "Parameters":
            definition = self.policy.ig.resources[DEFINITION]
            root = read_parameters(body, definition, policy=self.policy, beyond="$submit takes only the request")
            found = root.one("resource")
            body = found.resource if found is not None and found.resource is not None else {}
        if body.get("resourceType") != "CoverageEligibilityRequest":
            raise BadRequest("$submit takes a CoverageEligibilityRequest")
        stored = ctx.run_write(lambda: submit(ctx, policy=self.policy, resource=copy.deepcopy(body)))
        return FhirResponse(200, stored.body, version_headers(request, stored), stored=stored)


def submit(ctx: Context, *, policy: Policy, resource: JSONObject, checked_on: date | None = None) -> StoredResource:
    """Store the request and its answer in ``ctx``'s transaction (or a new one); the stored answer."""
    purposes = [p for p in resource.get("purpose") or () if isinstance(p, str)]
    if not any(p in PURPOSES for p in purposes):
        text = f"$submit answers purpose {' or '.join(PURPOSES)}"
        raise refuse(Unprocessable, "not-supported", text, "CoverageEligibilityRequest.purpose")
    patient = ref_id(resource.get("patient"), "Patient")
    if patient is None:
        text = "The request names the member (a Patient)"
        raise refuse(Unprocessable, "required", text, "CoverageEligibilityRequest.patient")
    items = [i for i in resource.get("item") or () if isinstance(i, dict)]
    services = {first_code(i.get("category"), SERVICE_SYSTEM) for i in items}
    if len(services) != 1 or None in services or not policy.is_service(next(iter(services))):
        text = f"Ask about one CalAIM service per request: every item's category codes the same {SERVICE_SYSTEM} code"
        raise refuse(Unprocessable, "business-rule", text, "CoverageEligibilityRequest.item")
    service = str(next(iter(services)))
    day = to_date(resource.get("servicedDate")) or to_date((resource.get("servicedPeriod") or {}).get("start"))
    day = day or checked_on or today()
    wanted = {
        (str(first_code(i.get("productOrService"), HCPCS_SYSTEM)), _modifier(i))
        for i in items
        if first_code(i.get("productOrService"), HCPCS_SYSTEM)
    }
    resource.pop("id", None)
    resource.setdefault("status", "active")
    resource.setdefault("created", (checked_on or today()).isoformat())
    resource.setdefault("insurer", policy.org(policy.plan_organization))
    add_profile(resource, PROFILE_AUTH_REQUEST)
    with ctx.writing() as tx:
        inner = ctx.in_transaction(tx)
        request_stored = write(inner, "POST", "CoverageEligibilityRequest", resource)
        conn = conn_of(inner)
        found = [
            a
            for a in of_member(inner, conn, patient, service)
            if a.certified(policy)
            and a.covers(day)
            and wanted <= {(line.code, line.modifiers[0] if line.modifiers else None) for line in a.lines}
        ]
        auth = max(found, key=lambda a: a.start or date.min, default=None)
        member = membership(inner, conn, patient)
        answer = _answer(
            policy,
            request=resource,
            request_id=request_stored.res_id,
            service=service,
            day=day,
            auth=auth,
            coverage_id=member.coverage_id if member else None,
        )
        return write(inner, "POST", "CoverageEligibilityResponse", answer)


def _modifier(item: JSONObject) -> str | None:
    found = [m for mod in item.get("modifier") or () for m in codes_of(mod, HCPCS_SYSTEM)]
    return found[0] if found else None


def _answer(
    policy: Policy,
    *,
    request: JSONObject,
    request_id: str,
    service: str,
    day: date,
    auth: Authorization | None,
    coverage_id: str | None,
) -> JSONObject:
    answer: JSONObject = {
        "resourceType": "CoverageEligibilityResponse",
        "status": "active",
        "purpose": request["purpose"],
        "patient": request["patient"],
        "servicedDate": day.isoformat(),
        "created": today().isoformat(),
        "request": reference("CoverageEligibilityRequest", request_id),
        "outcome": "complete",
        "insurer": policy.org(policy.plan_organization),
    }
    if auth is None:
        answer["disposition"] = f"Not authorized: no {service} authorization of the member covers {day}"
    else:
        answer["extension"] = [e for e in auth.body.get("extension", ()) if isinstance(e, dict)]
        answer["preAuthRef"] = auth.number
        answer["disposition"] = (
            f"Authorized: {auth.number}, {auth.start} to {auth.end}, responsible party {auth.responsible_party}"
        )
    if coverage_id is not None:
        insurance: JSONObject = {"coverage": reference("Coverage", coverage_id), "inforce": auth is not None}
        if auth is not None:
            authorized = (auth.body.get("insurance") or [{}])[0]
            insurance["benefitPeriod"] = authorized.get("benefitPeriod")
            insurance["item"] = authorized.get("item")
        else:
            category = {"coding": [policy.coded(SERVICE_SYSTEM, service)]}
            insurance["item"] = [{"category": category, "authorizationRequired": True}]
        answer["insurance"] = [insurance]
    return answer
