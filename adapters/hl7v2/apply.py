"""Apply a mapped message Bundle through the FHIR core, inside the caller's write transaction.

The transaction interaction of the core (``gateway/fhir/bundles.py``) opens its own database
transaction; a v2 message needs its resources *and* its message-log row in one transaction (exactly
once), so its entries are dispatched here one by one through ``gateway.fhir.core.dispatch`` with a
context bound to that transaction: every entry is validated and passes the CalAIM write hooks exactly as
a REST call or a transaction entry would (a referral is routed and gets its Task and outbox events).

Transaction semantics kept from https://hl7.org/fhir/R4/http.html#trules, for the subset the message
maps produce: entries in order, ``urn:uuid`` full URLs rewritten to ``Type/id`` in references and in
conditions once their entry ran, conditional create (``ifNoneExist``) and conditional update
(``PUT Type?criteria``). A member matched by one identifier gets the others of the message added (the
county's MRN linked to the plan's member), so later messages carrying only the MRN find the member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from gateway.errors import FhirError
from gateway.fhir.bundles import reference_holders
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.types import JSONObject


class EntryFailed(Exception):
    """A FHIR error of one entry: which entry (for the ERR location) and the error itself."""

    def __init__(self, index: int, full_url: str, resource_type: str, error: FhirError) -> None:
        super().__init__(f"entry {index} ({resource_type}) failed: {error.status}")
        self.index = index
        self.full_url = full_url
        self.resource_type = resource_type
        self.error = error


@dataclass
class Applied:
    """What a Bundle wrote: ``Type/id`` per full URL, and every resource written or matched, in order."""

    resolved: dict[str, str] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)


def apply_bundle(ctx: Context, bundle: JSONObject, *, model_ok: Sequence[bool] = ()) -> Applied:
    """Run the entries of ``bundle`` in ``ctx``'s transaction (``ctx.tx`` must be set). ``model_ok[i]``:
    the R4B model pass already accepted entry i's resource (``adapters.hl7v2.prevalidate``), so its
    interaction validates it without that pass (``FhirRequest.model_checked``)."""
    if ctx.tx is None:
        raise RuntimeError("apply_bundle needs a context bound to a write transaction")
    entries: list[Any] = orjson.loads(orjson.dumps(bundle.get("entry") or []))  # the core edits resources
    applied = Applied()
    fresh: set[str] = set()  # Type/id of the resources this Bundle created (not matched)
    created_types: set[str] = set()
    for index, entry in enumerate(entries):
        request, resource = entry["request"], entry["resource"]
        full_url = str(entry.get("fullUrl") or "")
        res_type = str(resource["resourceType"])
        _rewrite(resource, applied.resolved)
        url = _substitute(str(request["url"]), applied.resolved)
        path, _, query = url.partition("?")
        headers: dict[str, str] = {}
        if request.get("ifNoneExist"):
            condition = _substitute(str(request["ifNoneExist"]), applied.resolved)
            if not _cannot_match(condition, res_type, fresh, created_types):
                headers["if-none-exist"] = condition
        core = FhirRequest(
            method=str(request["method"]),
            path=path,
            query=parse_qsl(query, keep_blank_values=True),
            headers=headers,
            resource=resource,
            base_url=ctx.settings.public_base_url or "",
            model_checked=index < len(model_ok) and model_ok[index],
        )
        try:
            response = dispatch(ctx, core)
            if res_type == "Patient" and response.status == 200 and request["method"] == "POST":
                _link_identifiers(ctx, response, resource)
        except FhirError as error:
            raise EntryFailed(index, full_url, res_type, error) from None
        stored = response.stored
        if stored is None:
            continue
        reference = f"{stored.res_type}/{stored.res_id}"
        if response.status == 201:
            fresh.add(reference)
            created_types.add(res_type)
        if full_url:
            applied.resolved[full_url] = reference
        applied.resources.append(reference)
    return applied


def _cannot_match(condition: str, res_type: str, fresh: set[str], created_types: set[str]) -> bool:
    """True when an If-None-Exist condition cannot match anything, so the entry is a plain create.

    That is the case when one of its parameters must equal a reference to a resource this Bundle created
    (the Coverage ``beneficiary=`` or the Condition ``subject=`` of a member the message created) and no
    ``res_type`` was created by this Bundle yet: a resource referencing the new one can only have been
    written in this transaction, by an earlier entry (no write hook creates Coverage or Condition). The
    search, the key lookup and the key claim of the conditional create are then skipped."""
    if res_type in created_types or not fresh:
        return False
    return any(value in fresh for _, value in parse_qsl(condition, keep_blank_values=True))


def _rewrite(node: Any, resolved: dict[str, str]) -> None:
    """Replace references to full URLs already resolved (in place)."""
    for holder in reference_holders(node):
        target = resolved.get(holder["reference"])
        if target is not None:
            holder["reference"] = target


def _substitute(text: str, resolved: dict[str, str]) -> str:
    for full_url, reference in resolved.items():
        if full_url in text:
            text = text.replace(full_url, reference)
    if "urn:uuid:" in text:
        raise RuntimeError("a condition names an entry that has not run yet")  # a bug of a message map
    return text


def _link_identifiers(ctx: Context, response: FhirResponse, mapped: JSONObject) -> None:
    """Add the message's member identifiers (CIN, MRN) that the matched Patient lacks."""
    stored = response.stored
    if stored is None or stored.body is None:
        return
    current: JSONObject = orjson.loads(stored.body)
    have = {(i.get("system"), i.get("value")) for i in current.get("identifier") or ()}
    systems = {i.get("system") for i in current.get("identifier") or ()}
    missing = [i for i in mapped.get("identifier") or () if i.get("system") not in systems]
    missing = [i for i in missing if (i.get("system"), i.get("value")) not in have]
    if not missing:
        return
    current["identifier"] = [*(current.get("identifier") or ()), *missing]
    request = FhirRequest("PUT", f"Patient/{stored.res_id}", resource=current, headers={"if-match": stored.etag})
    response.stored = dispatch(ctx, request).stored
