"""Resource validation on write: https://hl7.org/fhir/R4/validation.html.

Two passes over a resource; every problem is an error ``Issue`` whose ``expression`` is a FHIRPath-style
location (``Patient.name[0].given``, ``AuditEvent.entity[0].detail[0].value[x]``):

1. **The R4 walk**: one pass over the JSON driven by ``profiles/r4/elements.json`` (the official R4 4.0.1
   definitions, vendored by ``scripts/vendor/structure.py``, compiled by ``element_tables``). It checks

   - elements unknown to R4 (https://hl7.org/fhir/R4/json.html), also inside datatypes and ``_name`` twins;
   - cardinality (https://hl7.org/fhir/R4/conformance-rules.html#cardinality): every ``min >= 1`` element
     at every level (primitives too; an extension-only ``_name`` counts as present), an array for
     ``max = '*'``, a single value for ``max = '1'``, at most one type of a choice element ``[x]``;
   - primitives (https://hl7.org/fhir/R4/datatypes.html#primitive): the JSON type, 32-bit integer ranges,
     the R4 regex of each type (id ``[A-Za-z0-9\\-\\.]{1,64}``, code, uri, dates, ...), real calendar days,
     no empty strings, objects or arrays (ele-1), ``null`` only as a placeholder in a primitive array
     paired with its ``_name`` array; Narrative.div is an XHTML ``<div>`` (txt-1);
   - codes of required bindings (https://hl7.org/fhir/R4/terminologies.html#required): a ``code`` must be
     in the expanded ValueSet; a Coding / CodeableConcept must carry a coding (system + code) from it;
   - Reference targets (https://hl7.org/fhir/R4/references.html): a literal ``Type/id`` must name a type
     the element allows (``urn:uuid:`` and ``#local`` references are not judged here);
   - contained resources: an R4 type, no nested ``contained`` (dom-2), no versionId/lastUpdated (dom-4).

2. **The R4B model** (``fhir.resources.R4B``; there is no R4 package), whose pydantic errors become
   readable issues; those at or under a path the walk already reported are dropped, and so are its
   unknown-element and choice-element errors, on which the R4 walk is the truth. Complex elements the
   model has already accepted (the same class, the same JSON) are not validated again
   (``gateway.fhir.model_memo``), and the library's own per-model checks run over field tables computed
   once per class (``gateway.fhir.model_checks``: same verdicts, ~35 % less time in the model pass).

Where R4B and R4 differ for the served types (the models compared with the R4 definitions, then probed):
R4B's ``Extension.value[x]`` adds ``valueCodeableReference`` and ``valueRatioRange`` (rejected here) and
lacks ``valueMeta`` (accepted here); R4B accepts in ``contained`` the R4B-only resource types (Citation,
SubscriptionStatus, ...), primitive ``min = 1`` left out, codes outside required bindings (its
``enum_values`` are not enforced), lax JSON types (``"true"`` for a boolean, ``"3"`` or ``2.0`` for an
integer, ``"1.5"`` for a decimal, ``null`` values), ids over 64 characters, uris with spaces, malformed
oid/uuid/base64Binary, any Narrative.div text, references to types the element does not allow, empty
objects and arrays, and nested ``contained``; and it raises AttributeError instead of a validation error
on some wrong JSON types (an integer uri). Element names and cardinalities are otherwise identical.

3. **Claimed profiles** (``meta.profile``, https://hl7.org/fhir/R4/validation.html#profile-validation):
   each profile of the CalAIM guide the resource claims is checked by ``gateway.fhir.profiles`` (errors,
   with the profile named in the diagnostics); a claimed url the gateway does not know gives a
   **warning** (``not-supported``), not an error, since R4 lets a server accept resources claiming
   profiles it does not know. ``ensure_valid`` raises only for errors. A resource without
   ``meta.profile`` costs one dictionary look-up here.

Not checked: other FHIRPath invariants, bindings weaker than required, the ValueSets that cannot be
enumerated (``currencies``, ``mimetypes``: profiles/r4/README.md), elements of contained resources of
types the gateway does not serve (the R4B pass still sees them).

Cost (2-core VM, Python 3.11, best of 5-7 timeit runs, other sessions loading the machine, so read the
ratios): for a small Patient (id, identifier, name, gender, birthDate) the walk takes ~4 µs and the R4B
``model_validate`` ~50-65 µs; for the rich example Patient (meta, narrative, extensions, ``_given``,
contact, communication: 37 JSON objects) ~30-48 µs and ~300-500 µs; for a referral ServiceRequest
~15-20 µs and ~120-160 µs; over the 21 examples of tests/fhir ~26 µs and ~490 µs per resource. The R4B
pass is thus ~90-95% of ``validate_resource``; ``with_model=False`` skips it, and a randomized test shows
it finding nothing the walk misses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import pydantic
from fhir.resources.R4B import get_fhir_model_class

from gateway.errors import Issue, Unprocessable
from gateway.fhir import model_checks, model_memo
from gateway.fhir.element_tables import (
    COMPLEX,
    IGNORE,
    PRIMITIVE,
    RESOURCE,
    Context,
    Slot,
    kind_of,
    string_problem,
    tables,
)
from gateway.fhir.profiles import ProfileSet, claimed_profile_issues
from gateway.fhir.resource_types import SERVED_TYPE_SET
from gateway.types import JSONObject

_MAX_DEPTH = 100
_CHOICE_MESSAGES = ("Value error, Any of one field value", "Value error, Expect any of field value")
"""fhir.resources' messages for a choice element given twice or, when required, not at all."""
_LITERAL_REF_RE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-\.]{1,64}(?:/_history/[A-Za-z0-9\-\.]{1,64})?$")


model_memo.install()
model_checks.install()  # before the first model class is built (gateway/fhir/model_checks.py)


@lru_cache(maxsize=64)
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def _issue(code: str, expression: str, text: str) -> Issue:
    return Issue(code=code, diagnostics=f"{expression}: {text}", expression=(expression,))


def _walk(obj: JSONObject, ctx: Context, path: str, out: list[Issue], depth: int) -> None:
    """Check one JSON object against its context and descend into its complex children.

    The common cases (a valid string-typed primitive, a complex value needing no binding or target
    check) are handled inline without building the child's path; everything else goes to ``_one``.
    """
    if depth > _MAX_DEPTH:
        out.append(_issue("structure", path, f"nested deeper than {_MAX_DEPTH} levels"))
        return
    slots = ctx.slots
    groups: set[str] | None = None
    for key, value in obj.items():
        slot = slots.get(key)
        if slot is None:
            out.append(_issue("structure", f"{path}.{key}", f"unknown element: R4 {ctx.name} has no '{key}'"))
            continue
        if slot.group is not None:
            if groups is None:
                groups = {slot.group}
            elif slot.group in groups:
                out.append(_issue("structure", f"{path}.{key}", f"only one type of {slot.group} is allowed"))
            else:
                groups.add(slot.group)
        kind = slot.kind
        if kind == IGNORE:
            continue
        if not slot.many:
            if kind == PRIMITIVE:
                # Inlined (no call): a non-empty string matching the type's regex and binding.
                if (
                    slot.text
                    and type(value) is str
                    and value
                    and ((match := slot.match) is None or match(value) is not None)
                    and ((codes := slot.codes) is None or value in codes)
                ):
                    continue
            elif kind == COMPLEX and slot.plain and type(value) is dict and value:
                _walk(value, slot.ctx, f"{path}.{key}", out, depth + 1)  # type: ignore[arg-type]
                continue
            _one(value, slot, f"{path}.{key}", out, depth)
        elif type(value) is not list:
            text = f"expected an array (max cardinality *), got {kind_of(value)}"
            out.append(_issue("structure", f"{path}.{key}", text))
        elif not value:
            out.append(_issue("structure", f"{path}.{key}", "empty arrays are not allowed"))
        else:
            for i, item in enumerate(value):
                if kind == PRIMITIVE:
                    if (
                        slot.text
                        and type(item) is str
                        and item
                        and ((match := slot.match) is None or match(item) is not None)
                        and ((codes := slot.codes) is None or item in codes)
                    ):
                        continue
                elif kind == COMPLEX and slot.plain and type(item) is dict and item:
                    _walk(item, slot.ctx, f"{path}.{key}[{i}]", out, depth + 1)  # type: ignore[arg-type]
                    continue
                if item is None and slot.pair_key and slot.pair_key in obj:
                    continue  # null only keeps a primitive array and its "_name" twin aligned
                _one(item, slot, f"{path}.{key}[{i}]", out, depth)
    for element, keys in ctx.required:
        for key in keys:
            if key in obj:
                break
        else:
            out.append(_issue("required", f"{path}.{element}", "missing required element (min cardinality 1)"))


def _one(value: Any, slot: Slot, path: str, out: list[Issue], depth: int) -> None:
    """One value (or array item) in full: the slow path with every check and message."""
    if type(value) is list:
        text = "max cardinality is 1: expected a single value" if not slot.many else "expected a single value"
        out.append(_issue("structure", path, f"{text}, got an array"))
    elif value is None:
        out.append(_issue("structure", path, "null is not allowed"))
    elif slot.kind == PRIMITIVE:
        _primitive(value, slot, path, out)
    else:
        _complex(value, slot, path, out, depth)


def _primitive(value: Any, slot: Slot, path: str, out: list[Issue]) -> None:
    check = slot.check
    problem = string_problem(value) if check is None else check(value)
    if problem is not None:
        out.append(_issue("value", path, problem))
    elif slot.codes is not None and value not in slot.codes:
        out.append(_not_in_value_set(path, repr(value), slot))


def _complex(value: Any, slot: Slot, path: str, out: list[Issue], depth: int) -> None:
    if type(value) is not dict:
        out.append(_issue("structure", path, f"expected a JSON object, got {kind_of(value)}"))
        return
    if not value:
        out.append(_issue("structure", path, "empty objects are not allowed (ele-1)"))
        return
    if slot.kind == RESOURCE:
        _contained(value, path, out, depth)
        return
    if slot.ctx is not None:
        _walk(value, slot.ctx, path, out, depth + 1)
    if slot.pairs is not None:
        _check_coded(value, slot, path, out)
    if slot.targets is not None:
        reference = value.get("reference")
        match = _LITERAL_REF_RE.search(reference) if type(reference) is str else None
        if match is not None and match.group(1) not in slot.targets:
            allowed = ", ".join(sorted(slot.targets))
            text = f"a reference to {match.group(1)} is not allowed here (allowed: {allowed})"
            out.append(_issue("value", f"{path}.reference", text))


def _check_coded(value: JSONObject, slot: Slot, path: str, out: list[Issue]) -> None:
    """Required binding on a Coding or CodeableConcept: at least one coding from the ValueSet."""
    assert slot.pairs is not None
    codings = value.get("coding", []) if slot.concept else [value]
    if type(codings) is not list:
        return  # a structural issue already reported by the walk
    for coding in codings:
        if type(coding) is dict:
            system, code = coding.get("system"), coding.get("code")
            if type(system) is str and type(code) is str and (system, code) in slot.pairs:
                return
    shown = ", ".join(f"{c.get('system')}|{c.get('code')}" for c in codings if type(c) is dict) or "no coding"
    out.append(_not_in_value_set(path, shown, slot))


def _not_in_value_set(path: str, shown: str, slot: Slot) -> Issue:
    allowed = sorted(slot.codes) if slot.codes is not None else sorted(code for _, code in slot.pairs or ())
    listing = f" (one of: {', '.join(allowed)})" if len(allowed) <= 12 else ""
    return _issue("code-invalid", path, f"{shown} is not in the required value set {slot.value_set}{listing}")


def _contained(resource: JSONObject, path: str, out: list[Issue], depth: int) -> None:
    """A contained resource: https://hl7.org/fhir/R4/references.html#contained."""
    known = tables()
    rtype = resource.get("resourceType")
    if type(rtype) is not str:
        out.append(_issue("required", f"{path}.resourceType", "a contained resource needs a resourceType"))
        return
    if rtype not in known.resource_types:
        # Reported on the resource itself, so the R4B model's complaints inside it are dropped.
        out.append(_issue("structure", path, f"{rtype!r} is not an R4 resource type"))
        return
    if "contained" in resource:
        out.append(_issue("structure", f"{path}.contained", "a contained resource cannot contain resources (dom-2)"))
    meta = resource.get("meta")
    if type(meta) is dict and ("versionId" in meta or "lastUpdated" in meta):
        out.append(_issue("structure", f"{path}.meta", "a contained resource has no versionId or lastUpdated (dom-4)"))
    ctx = known.contexts.get(rtype)
    if ctx is not None:
        _walk(resource, ctx, path, out, depth + 1)
    elif "id" in resource and (problem := known.id_check(resource["id"])) is not None:
        out.append(_issue("value", f"{path}.id", problem))


def _pydantic_issue(error: Any, root: str) -> Issue | None:
    """One pydantic error of the R4B model as an Issue; None for errors the R4 walk owns."""
    kind = str(error["type"])
    message = str(error["msg"])
    if kind == "extra_forbidden" or message.startswith(_CHOICE_MESSAGES):
        return None  # unknown elements and choice elements [x]: decided by the R4 walk
    path = root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    shown = repr(error.get("input"))[:80]
    if kind in ("missing", "model_field_validation.missing"):
        return _issue("required", path, "missing required element (min cardinality 1)")
    if kind.endswith("_type") or kind in ("model_type", "model_attributes_type"):
        return _issue("structure", path, f"wrong JSON type: {message.replace('Input should be', 'expected')}")
    if kind == "string_pattern_mismatch":
        return _issue("value", path, f"{shown} does not have the format this element requires")
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return _issue("value", path, f"invalid value {shown}: {message.replace('Input should be', 'must be')}")


def model_issues(resource: JSONObject, resource_type: str) -> list[Issue] | None:
    """The R4B model's verdict as issues; None when the model crashed instead of answering."""
    try:
        _model(resource_type).model_validate(resource)
    except pydantic.ValidationError as exc:
        found = (_pydantic_issue(err, resource_type) for err in exc.errors(include_url=False))
        return [issue for issue in found if issue is not None]
    except Exception:
        # fhir.resources validators trip over some wrong JSON types (AttributeError on an int uri)
        # instead of raising ValidationError; the R4 walk has then reported the real problem.
        return None
    return []


def model_crash_issue(resource_type: str) -> Issue:
    """The issue reported when the R4B model crashes on a resource the R4 walk found nothing wrong with."""
    return _issue("structure", resource_type, "the resource does not fit the R4B model")


def warm_models(resource_types: Iterable[str]) -> None:
    """Build the R4B model classes of ``resource_types`` now (a worker process starting up)."""
    for resource_type in resource_types:
        _model(resource_type)


def _reported(expression: str, seen: set[str]) -> bool:
    """True when ``expression`` or one of its enclosing paths already has an issue."""
    while expression:
        if expression in seen:
            return True
        cut = max(expression.rfind("."), expression.rfind("["))
        expression = expression[:cut] if cut > 0 else ""
    return False


def validate_resource(
    resource: JSONObject,
    *,
    resource_type: str | None = None,
    with_model: bool = True,
    profiles: ProfileSet | None = None,
) -> list[Issue]:
    """Every problem of ``resource`` against the R4 definition of its type and the profiles it claims.

    Errors make the resource invalid; the only non-errors are warnings for ``meta.profile`` urls the
    gateway does not know (an empty list: valid, claiming nothing unknown).
    ``resource_type``, when given (the type in the request URL), must equal ``resource.resourceType``.
    ``with_model=False`` skips the R4B model pass (about 85% of the cost; see the module docstring).
    ``profiles`` replaces the CalAIM guide (``gateway.fhir.profiles.default_profiles()``), for tests.
    """
    if type(resource) is not dict:
        return [Issue(code="structure", diagnostics="A resource must be a JSON object")]
    rtype = resource.get("resourceType")
    if type(rtype) is not str or not rtype:
        return [Issue(code="required", diagnostics="resourceType is missing", expression=("resourceType",))]
    if rtype not in SERVED_TYPE_SET:
        return [_issue("not-supported", "resourceType", f"{rtype!r} is not a resource type this server serves")]
    issues: list[Issue] = []
    if resource_type is not None and rtype != resource_type:
        text = f"{rtype!r} does not match the expected type {resource_type!r}"
        issues.append(_issue("invalid", "resourceType", text))
    _walk(resource, tables().contexts[rtype], rtype, issues, 0)
    if with_model:
        seen = {e for issue in issues for e in issue.expression}
        found = model_issues(resource, rtype)
        if found is None:
            if not issues:
                issues.append(model_crash_issue(rtype))
        else:
            issues.extend(i for i in found if not _reported(i.expression[0], seen))
    meta = resource.get("meta")
    if type(meta) is dict and "profile" in meta:
        issues.extend(claimed_profile_issues(resource, rtype, profiles=profiles))
    return issues


def ensure_valid(resource: JSONObject, *, resource_type: str | None = None, with_model: bool = True) -> None:
    """Raise ``Unprocessable`` (422, https://hl7.org/fhir/R4/http.html#2.21.0.8) if ``resource`` has errors.

    The 422 lists the errors only: a warning (an unknown claimed profile) does not stop a write.
    """
    raise_errors(validate_resource(resource, resource_type=resource_type, with_model=with_model))


def raise_errors(issues: list[Issue]) -> None:
    """Raise ``Unprocessable`` (422) with the errors among ``issues``, if any (``ensure_valid``'s answer)."""
    errors = [issue for issue in issues if issue.severity in ("error", "fatal")]
    if errors:
        raise Unprocessable(message="The resource is not valid FHIR R4", issues=errors)


def unexpandable_value_sets() -> frozenset[str]:
    """Required-binding ValueSets whose codes are not enumerated, so the validator does not check them."""
    return tables().unexpandable
