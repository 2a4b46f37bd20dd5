"""Which mapped resources still need the R4B model pass, decided in step 1 (the parse workers).

Validation on write has two passes (``gateway.fhir.validation``): the R4 element walk and the profile
check (cheap), and the ``fhir.resources`` R4B model (``model_issues``: ~0.35 ms for the four resources of
a REF^I12). For the resources our own pure mappings build (``mappings.hl7v2``) from messages the screen
accepted (hl7apy, the profile check, the maps' own checks), the model pass finds **one thing only** that
the walk does not: a string-typed element whose value is made of nothing but whitespace other than space,
tab, CR and LF (``'\\u00a0'``, ``'\\x0b'``, ``'\\u2028'`` ...). The R4 regex of ``string`` is
``[ \\r\\n\\t\\S]+``; the walk reads it as XML Schema does (where ``\\s`` is those four characters only: the
regex then just means "not empty"), the model's pattern check runs it unanchored with Unicode ``\\s`` (the
Rust regex crate's White_Space: ``ODD_SPACE`` plus those four), so a value with no other character fails
there only. Everything else the model refuses on mapping output the walk refuses too, at the same
element, so the 422 is the same with or without the model (evidence: tests/hl7v2/test_model_claim.py, a
generated corpus of screened messages with hostile field content, every mapped resource validated both
ways; and tests/fhir/test_validation.py on random mutations of examples).

So ``model_verdicts`` runs the model only on a resource that contains one of ``ODD_SPACE`` anywhere (a
byte search over its JSON, ~2 µs); any other resource is passed as the model would pass it, without
building it (~80 µs each). This keeps the HL7 v2 path consistent with the HN file import, which writes
its mapping output without a per-row model pass (``adapters/files/hn_authorizations.py``), while an HL7
message, whose text is the county's free text, still gets the model's verdict where it differs.

A verdict goes back with the ``Prepared`` message (picklable: one bool per entry) and reaches the core as
``FhirRequest.model_checked`` (``adapters.hl7v2.apply``) for the entries whose verdict is True: the
interaction then runs the walk and the profile check alone, which give the answer the full validation
gives (the same issues: the model adds none). An entry whose verdict is False (the model refused it, or
crashed) is validated again in full by the interaction, which answers its usual 422, so the AE is the
same as with the model pass on every entry.
"""

from __future__ import annotations

import re

import orjson

from gateway.types import JSONObject

ODD_SPACE = "\x0b\x0c\x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
"""Unicode White_Space (what the model's Rust regex calls ``\\s``) but space, tab, CR and LF: a string made
of these only is refused by the R4B model and accepted by the R4 walk (module docstring)."""

_ODD_JSON = re.compile(
    b"|".join(
        re.escape(orjson.dumps(char)[1:-1])
        for char in ODD_SPACE  # as orjson writes each inside a JSON string
    )
)
"""``ODD_SPACE`` as it appears in orjson's output (``\\u000b``, ``\\f`` escaped, the others as UTF-8)."""


def needs_model(resource: JSONObject) -> bool:
    """Whether the R4B model pass may find something in ``resource`` that the R4 walk does not: one of
    ``ODD_SPACE`` somewhere in it (conservative: a match anywhere, not only a value made of them)."""
    return _ODD_JSON.search(orjson.dumps(resource)) is not None


def model_verdicts(bundle: JSONObject) -> tuple[bool, ...]:
    """One per entry of ``bundle``: True when its resource is a POST or PUT body whose validation without
    the R4B model pass is its full validation (the model adds nothing: module docstring; for a create
    without its ``id``, as the interaction judges it)."""
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
        try:
            checked = needs_model(resource)
        except (TypeError, ValueError):  # not JSON orjson writes (an integer beyond 64 bits): judge it in full
            verdicts.append(False)
            continue
        verdicts.append(not checked or model_issues(resource, rtype) == [])
    return tuple(verdicts)
