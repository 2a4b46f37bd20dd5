"""What the workflow reads about members and providers from the store: the member's Coverage and health
network (profile calaim-coverage, extension ext-health-network), the member's Populations of Focus
(calaim-member, ext-pof) and whether a provider is trusted for presumptive authorization
(ext-trusted-presumptive-provider, on the Organization so that it travels with it: profiles/orange-county/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from gateway.calaim.config import POF_SYSTEM
from gateway.calaim.policy import Policy
from gateway.calaim.resources import EXT_HEALTH_NETWORK, EXT_POF, EXT_TRUSTED, extensions, find, load, ref_id
from gateway.fhir.context import Context
from gateway.types import JSONObject


@dataclass(frozen=True, slots=True)
class Membership:
    """The member's active Coverage with the plan and the health network it names (None: none named)."""

    coverage_id: str
    health_network: str | None


def membership(ctx: Context, conn: Connection, patient_id: str) -> Membership | None:
    """The member's active Coverage (the first one, oldest first), or None.

    https://hl7.org/fhir/R4/coverage.html: ``beneficiary`` is the member; the health network is the
    ``ext-health-network`` extension of profile calaim-coverage.
    """
    params = [("beneficiary", f"Patient/{patient_id}"), ("status", "active")]
    for coverage in find(ctx, conn, "Coverage", params, limit=1):
        values = [e.get("valueReference") for e in extensions(coverage, EXT_HEALTH_NETWORK)]
        networks = [ref_id(v, "Organization") for v in values]
        return Membership(str(coverage["id"]), next((n for n in networks if n), None))
    return None


def pofs_of(element: JSONObject | None) -> list[str]:
    """The Populations of Focus (ext-pof codes) on a Patient or a ServiceRequest, in order."""
    out: list[str] = []
    for ext in extensions(element, EXT_POF):
        value = ext.get("valueCoding") or {}
        if value.get("system") == POF_SYSTEM and value.get("code") and value["code"] not in out:
            out.append(str(value["code"]))
    return out


def member_pofs(conn: Connection, patient_id: str) -> list[str]:
    """The Populations of Focus the member's Patient resource names."""
    found = load(conn, "Patient", patient_id)
    return pofs_of(found[1]) if found is not None else []


def trusted_for_presumptive(policy: Policy, conn: Connection, org_id: str) -> bool:
    """Whether the provider may authorize presumptively: its stored Organization's flag, else the configured one."""
    found = load(conn, "Organization", org_id)
    organization = found[1] if found is not None else policy.organizations.get(org_id)
    flags = [e.get("valueBoolean") for e in extensions(organization, EXT_TRUSTED)]
    return bool(flags) and flags[0] is True
