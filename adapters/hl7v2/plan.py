"""The plan of one REF^I12 a group commit writes itself (``adapters.hl7v2.batch``; docs/hl7v2.md "The grouped
write"): the resources the per-message path (``adapters.hl7v2.apply``) would write for it, built before any
write so that every reference between them is resolved and every refusal is known in advance.

Two kinds of messages are planned:

- a referral of a member the store does not know (``plan``, no database): the Patient, Coverage and
  Conditions are created with ids assigned here; the Patient holds the key of its ``If-None-Exist``, the
  Coverage and the first Condition are plain creates (``apply._cannot_match``: nothing stored can name a
  new member), later Conditions full conditional creates;
- a re-referral (``replan``: the member is stored, from what ``batch.screen`` read for the group): the
  Patient matched by its ``If-None-Exist`` gets the identifiers it lacks (``apply._link_identifiers``: the
  county MRN linked to the plan's member), a new version validated as its PUT would be; the Coverage and
  every Condition are full conditional creates (http.html#ccreate): one stored match answers the entry,
  several refuse it (412: the per-message path gives its AE), none creates the resource and holds the key
  of its condition. A Condition the message created answers a later DG1 of the same code, as the search
  would.

A message the plan cannot reproduce exactly (another shape, a refusal of validation or routing, a condition
matching several resources) is not planned: the per-message path answers it as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from adapters.hl7v2.prepare import Prepared
from gateway.calaim.lookups import Found
from gateway.calaim.members import pofs_of
from gateway.calaim.policy import Policy
from gateway.calaim.referral_batch import Member, member_of
from gateway.calaim.referrals import is_referral, referral_member, referral_service
from gateway.calaim.resources import OPEN_REQUEST_STATUSES, ref_id
from gateway.calaim.routing import route
from gateway.errors import FhirError
from gateway.fhir.bundles import reference_holders
from gateway.fhir.conditional import condition_key, parse_condition
from gateway.fhir.validation import ensure_valid
from gateway.store.ids import new_id
from gateway.store.repository import StoredResource
from gateway.types import JSONObject
from mappings.hl7v2.segments import match_condition

_UNSAFE = (",", "|", "\\", "$")
"""Characters that make a token value of a condition read differently as a search (OR, system, escape)."""


@dataclass(frozen=True, slots=True)
class Stored:
    """What the store holds for a re-referral's member: its Patient (the single match of the message's
    ``If-None-Exist``) and the current Coverages and Conditions naming it (oldest first)."""

    patient: Found
    coverages: Sequence[Found] = ()
    conditions: Sequence[Found] = ()


@dataclass(slots=True)
class Plan:
    """One qualifying message: its resources (references resolved, validated) and what it must not share."""

    prepared: Prepared
    creates: list[tuple[JSONObject, str]]
    """Patient (new members only), Coverage and Conditions to create, in entry order, with their ids."""
    keys: list[tuple[str, str, int]]
    """(res_type, key_hash, index in ``creates``): the uniqueness keys of their conditional creates."""
    referral: JSONObject
    referral_key: str | None
    resources: list[str]
    """``Type/id`` per entry, as the per-message path logs them (the referral's last, filled in by ``write``)."""
    member: tuple[str, Member]
    identifiers: list[tuple[str, str]]
    """The member's (system, value) pairs of the Patient's ``If-None-Exist``."""
    referral_ids: list[tuple[str, str]] = field(default_factory=list)
    stored: Stored | None = None
    """The stored member of a re-referral (None: a new member)."""
    update: tuple[JSONObject, StoredResource] | None = None
    """A re-referral's Patient with the identifiers it lacked, and the version it replaces."""


class NotPlanned(Exception):
    """The message is not of the shape this module writes."""


def plan(prepared: Prepared, policy: Policy) -> Plan | None:
    """The plan of a referral of a new member, None when it takes the per-message path. No database."""
    entries = _entries(prepared)
    if entries is None:
        return None
    try:
        return _plan(prepared, entries, policy)
    except (FhirError, NotPlanned):
        return None


def replan(found: Plan, stored: Stored, policy: Policy) -> Plan | None:
    """``found``'s message planned again as a re-referral of ``stored``'s member (module docstring), None
    when it takes the per-message path. No database: ``stored`` is what the group's look-ups read."""
    entries = _entries(found.prepared)
    if entries is None:
        return None
    try:
        return _plan(found.prepared, entries, policy, stored)
    except (FhirError, NotPlanned):
        return None


def _entries(prepared: Prepared) -> list[Any] | None:
    """A copy of the mapped Bundle's entries (bodies are edited), None when the message is not a REF^I12
    whose resources the model pass accepted."""
    mapped, header = prepared.mapped, prepared.header
    if prepared.error is not None or mapped is None or header is None or prepared.key is None:
        return None
    if header.message_type != "REF" or mapped.transitional_care:
        return None
    entries: list[Any] = mapped.bundle.get("entry") or []
    if not entries or len(prepared.model_ok) != len(entries) or not all(prepared.model_ok):
        return None
    copied: list[Any] = orjson.loads(orjson.dumps(entries))
    return copied


def _plan(prepared: Prepared, entries: list[Any], policy: Policy, stored: Stored | None = None) -> Plan:
    """``plan`` (``stored`` None) or ``replan``. The entries' bodies are validated by ``plan`` only: ``replan``
    takes a message ``plan`` accepted, whose bodies differ only in the id their member references name."""
    first, last = entries[0], entries[-1]
    check = stored is None
    if _target(first) != ("POST", "Patient") or _target(last) != ("POST", "ServiceRequest"):
        raise NotPlanned
    resolved: dict[str, str] = {}
    creates: list[tuple[JSONObject, str]] = []
    keys: list[tuple[str, str, int]] = []
    resources: list[str] = []
    patient = _body(first, resolved, check)
    identifiers = [(str(i.get("system")), str(i.get("value"))) for i in patient.get("identifier") or ()]
    condition = first["request"].get("ifNoneExist")
    if not identifiers or condition != match_condition(patient["identifier"]) or _unsafe(identifiers):
        raise NotPlanned
    update: tuple[JSONObject, StoredResource] | None = None
    if stored is None:
        patient_id = new_id()
        creates.append((patient, patient_id))
        keys.append(("Patient", condition_key(parse_condition(condition)), 0))
        member_body = patient
    else:
        patient_id = stored.patient.stored.res_id
        update = _linked(stored.patient, patient)
        member_body = update[0] if update is not None else stored.patient.body
    patient_url, patient_ref = str(first.get("fullUrl") or ""), f"Patient/{patient_id}"
    resolved[patient_url] = patient_ref
    resources.append(patient_ref)
    coverages: list[JSONObject] = [found.body for found in stored.coverages] if stored else []
    new_coverage = False
    codes: dict[tuple[str, str], str] = {}  # (system, code) -> Condition/id created by this message
    conditions = stored is not None  # a Condition search can match: later If-None-Exist are full ones
    for entry in entries[1:-1]:
        kind = _target(entry)
        url = str(entry.get("fullUrl") or "")
        request = entry["request"]
        body = _body(entry, resolved, check)
        res_id = new_id()
        text = request.get("ifNoneExist")
        if kind == ("POST", "Coverage") and not new_coverage:
            if text != f"beneficiary={patient_url}&status=active":
                raise NotPlanned
            new_coverage = True
            if stored is not None:
                active = [found for found in stored.coverages if found.body.get("status") == "active"]
                if len(active) > 1:
                    raise NotPlanned  # the search matches several: 412
                if active:
                    resolved[url] = f"Coverage/{active[0].stored.res_id}"
                    resources.append(resolved[url])
                    continue
                condition_text = f"beneficiary={patient_ref}&status=active"
                keys.append(("Coverage", condition_key(parse_condition(condition_text)), len(creates)))
            coverages.append(body)
        elif kind == ("POST", "Condition"):
            coding = _only_coding(body)  # one coding: what the search ``code=`` would match is known
            if coding is None or (text is not None and text != f"subject={patient_url}&code={coding[0]}|{coding[1]}"):
                raise NotPlanned
            if text is not None:
                matches = [f"Condition/{found.stored.res_id}" for found in _coded(stored, coding)]
                matches += [codes[coding]] if coding in codes else []
                if len(matches) > 1:
                    raise NotPlanned  # the search matches several: 412
                if matches:  # the search finds a stored Condition or this message's own
                    resolved[url] = matches[0]
                    resources.append(matches[0])
                    continue
            if text is not None and conditions:  # not a fresh type any more: a full conditional create
                condition_text = f"subject={patient_ref}&code={coding[0]}|{coding[1]}"
                keys.append(("Condition", condition_key(parse_condition(condition_text)), len(creates)))
            codes.setdefault(coding, f"Condition/{res_id}")
            conditions = True
        else:
            raise NotPlanned
        resolved[url] = f"{body['resourceType']}/{res_id}"
        creates.append((body, res_id))
        resources.append(resolved[url])
    referral = _body(last, resolved, check)
    if not is_referral(referral) or referral.get("status") not in OPEN_REQUEST_STATUSES:
        raise NotPlanned
    referral_key, referral_ids = None, []
    text = last["request"].get("ifNoneExist")
    if text is not None:
        params = parse_condition(text)
        if len(params) != 1 or params[0][0] != "identifier" or "|" not in params[0][1]:
            raise NotPlanned
        system, _, value = params[0][1].partition("|")
        referral_ids = [(system, value)]
        if _unsafe(referral_ids):
            raise NotPlanned
        referral_key = condition_key(params)
    member = member_of(member_body, coverages)
    _route(policy, referral, member)
    return Plan(
        prepared=prepared,
        creates=creates,
        keys=keys,
        referral=referral,
        referral_key=referral_key,
        resources=resources,
        member=(patient_id, member),
        identifiers=identifiers,
        referral_ids=referral_ids,
        stored=stored,
        update=update,
    )


def _linked(found: Found, mapped: JSONObject) -> tuple[JSONObject, StoredResource] | None:
    """The stored Patient with the message's identifiers it lacks (a system it has none of), validated as
    the PUT of ``apply._link_identifiers`` validates it; None when it lacks none."""
    current: JSONObject = orjson.loads(orjson.dumps(found.body))
    have = {(i.get("system"), i.get("value")) for i in current.get("identifier") or ()}
    systems = {i.get("system") for i in current.get("identifier") or ()}
    missing = [i for i in mapped.get("identifier") or () if i.get("system") not in systems]
    missing = [i for i in missing if (i.get("system"), i.get("value")) not in have]
    if not missing:
        return None
    current["identifier"] = [*(current.get("identifier") or ()), *missing]
    ensure_valid(current, resource_type="Patient", with_model=True)
    return current, found.stored


def _coded(stored: Stored | None, coding: tuple[str, str]) -> list[Found]:
    """The stored Conditions of the member coded ``system|code`` (the search ``code=``), one per resource."""
    out: dict[int, Found] = {}
    for found in stored.conditions if stored is not None else ():
        codings = (found.body.get("code") or {}).get("coding") or []
        if any((c.get("system"), c.get("code")) == coding for c in codings if isinstance(c, dict)):
            out.setdefault(found.stored.rid, found)
    return list(out.values())


def _target(entry: Any) -> tuple[str, str]:
    request = entry.get("request") if isinstance(entry, dict) else None
    if not isinstance(request, dict) or not isinstance(entry.get("resource"), dict):
        raise NotPlanned
    return str(request.get("method")), str(request.get("url"))


def _body(entry: Any, resolved: dict[str, str], check: bool) -> JSONObject:
    """The entry's resource as its interaction would store it: references resolved, no id, validated when
    ``check`` (the model pass was the parse worker's)."""
    resource: JSONObject = entry["resource"]
    if resource.get("resourceType") != entry["request"]["url"]:
        raise NotPlanned
    _rewrite(resource, resolved)
    resource.pop("id", None)
    if check:
        ensure_valid(resource, resource_type=str(resource["resourceType"]), with_model=False)
    return resource


def _rewrite(node: Any, resolved: dict[str, str]) -> None:
    """Replace references to resolved full URLs (in place); an unresolved ``urn:uuid`` is not planned."""
    for holder in reference_holders(node):
        ref = holder["reference"]
        if ref.startswith("urn:uuid:"):
            if ref not in resolved:
                raise NotPlanned
            holder["reference"] = resolved[ref]


def _only_coding(condition: JSONObject) -> tuple[str, str] | None:
    """(system, code) of a Condition coded once with both, else None."""
    codings = (condition.get("code") or {}).get("coding") or []
    if len(codings) != 1:
        return None
    system, code = codings[0].get("system"), codings[0].get("code")
    if not isinstance(system, str) or not isinstance(code, str) or not system or not code:
        return None
    return None if _unsafe([(system, code)]) else (system, code)


def _unsafe(pairs: Iterable[tuple[str, str]]) -> bool:
    return any(any(ch in part for ch in _UNSAFE) or not part for pair in pairs for part in pair)


def _route(policy: Policy, referral: JSONObject, member: Member) -> None:
    """The referral hook's refusals (``ReferralHook.before``), raised here so that a refused message takes
    the per-message path: no service, a performer that is not an Organization, no provider to route to."""
    referral_member(referral)
    service = referral_service(policy, referral)
    performers = referral.get("performer") or []
    requested = ref_id(performers[0], "Organization") if performers else None
    if performers and requested is None:
        raise NotPlanned
    route(
        policy,
        service=service,
        pofs=pofs_of(referral) or member.pofs,
        health_network=member.health_network,
        requested=requested,
    )


__all__ = ["NotPlanned", "Plan", "Stored", "plan", "replan"]
