"""Membership as index data: the (organization, patient) pairs a ServiceRequest, Task or Coverage makes.

An organization other than the plan sees the Patients assigned to it and their compartments
(docs/access-control.md "Who sees what"; issue 5). A Patient is a *member* of an organization through a
**route**: a resource that names the patient and names the organization:

- a ServiceRequest (referral): ``subject`` x ``performer`` or ``requester``;
- a Task: ``patient`` x ``owner`` or ``requester``;
- a Coverage: ``beneficiary`` x ``health-network`` (CalAIM IG search parameter), which only a health
  network's view follows (``HEALTH_NETWORK_ROUTES``).

Each such resource writes one ``idx_member`` row per (organization, patient) pair it makes, computed here
from the same reference index rows its search uses (``param``, ``target_type``, ``target_id``: only
references resolved to ``Organization/id`` and ``Patient/id`` count, as in the reference probes this table
replaces). The repository (gateway/store/repository.py) writes them with the resource's other index rows
and drops them with them on update and delete, in the same transaction, so membership is never stale
(a stale row would be a leak). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["HEALTH_NETWORK_ROUTES", "ROUTES", "member_pairs"]

ROUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ServiceRequest": ("subject", ("performer", "requester")),
    "Task": ("patient", ("owner", "requester")),
    "Coverage": ("beneficiary", ("health-network",)),
}
"""Resource type → (its patient parameter, the parameters naming the organization)."""

HEALTH_NETWORK_ROUTES = frozenset({"Coverage"})
"""Route types only a health network's view follows (an ECM/CS provider or the county does not see a
patient because a Coverage happens to name it)."""


def member_pairs(res_type: str, references: Iterable[Sequence[Any]]) -> list[tuple[str, str]]:
    """The distinct (organization id, patient id) pairs a resource of ``res_type`` makes, from its reference
    index rows given as ``(param, target_type, target_id, ...)``; empty for any type but a route's."""
    route = ROUTES.get(res_type)
    if route is None:
        return []
    patient_param, org_params = route
    patients: list[str] = []
    organizations: list[str] = []
    for row in references:
        param, target_type, target_id = row[0], row[1], row[2]
        if target_id is None:
            continue
        if param == patient_param and target_type == "Patient":
            patients.append(target_id)
        elif target_type == "Organization" and param in org_params:
            organizations.append(target_id)
    if not patients or not organizations:
        return []
    return list(dict.fromkeys((o, p) for o in organizations for p in patients))
