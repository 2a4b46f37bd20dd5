"""The R4B model pass of a mapped message's resources, run in step 1 (the parse workers), off the commit thread.

Validation on write has two passes (``gateway.fhir.validation``): the R4 element walk and the profile
check (cheap), and the ``fhir.resources`` R4B model (``model_issues``: most of the cost, ~2-3 ms for the
four resources of a REF^I12). The model pass depends only on a resource's structure, not on the values
of its references, so it can judge the mapped Bundle's resources before ``apply_bundle`` rewrites their
``urn:uuid`` references, in the worker process that parsed the message (docs/hl7v2.md "Throughput").

The verdict goes back with the ``Prepared`` message (picklable: one bool per entry) and reaches the core
as ``FhirRequest.model_checked`` (``adapters.hl7v2.apply``), for the entries the model accepted only: the
interaction then runs the walk and the profile check alone. An entry the model rejected (or crashed on)
is validated again in full by the interaction, which answers its usual 422, so the AE is the same as
without this step.
"""

from __future__ import annotations

from gateway.types import JSONObject


def model_verdicts(bundle: JSONObject) -> tuple[bool, ...]:
    """One per entry of ``bundle``: True when its resource is a POST or PUT body the R4B model accepts as
    the interaction would judge it (a create without its ``id``)."""
    from gateway.fhir.validation import model_issues  # fhir.resources: imported in the worker, once

    verdicts: list[bool] = []
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        request = entry.get("request") if isinstance(entry, dict) else None
        method = request.get("method") if isinstance(request, dict) else None
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(resource, dict) or not isinstance(rtype, str) or method not in ("POST", "PUT"):
            verdicts.append(False)
            continue
        if method == "POST":
            resource = {k: v for k, v in resource.items() if k != "id"}
        verdicts.append(model_issues(resource, rtype) == [])
    return tuple(verdicts)
