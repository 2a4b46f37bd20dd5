"""The logic of ``$validate``: https://hl7.org/fhir/R4/resource-operation-validate.html.

Pure: the route hands over the request body and the ``mode`` / ``profile`` query parameters and sends
back the OperationOutcome with status 200 whatever it says, because the operation succeeded even when
the resource did not (the spec: "the operation returns 200 OK with an OperationOutcome"). Only a request
that cannot be understood (no resource, a bad Parameters body, an unknown mode) is a 400.

The body is the resource itself or a Parameters resource (https://hl7.org/fhir/R4/parameters.html) with
``resource``, ``mode`` and ``profile`` parameters; those win over the query parameters of the same name.
Modes (https://hl7.org/fhir/R4/valueset-resource-validation-mode.html):

- ``create`` / no mode: the resource is checked against the R4 base definition of its type;
- ``update``: the same, and the resource must carry an id (equal to the URL's when there is one);
- ``delete``: nothing in a resource stops a delete in this gateway (no referential-integrity rules), so
  the answer is "All OK" and a resource in the body is not judged;
- ``profile``: the same as no mode, stated explicitly.

Profiles (https://hl7.org/fhir/R4/validation.html#profile-validation): a ``profile`` argument is checked
when it is the type's base R4 definition or a profile of the CalAIM guide (``gateway.fhir.profiles``);
any other url is an error issue "unknown profile", since the caller asked for a check that cannot be
done. Profiles claimed in ``meta.profile`` are handled by ``validate_resource``: known ones checked,
unknown ones a warning that they were not checked.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import BadRequest, Issue, operation_outcome
from gateway.fhir.profiles import BASE_PROFILE, default_profiles, is_base_profile, validate_against_profile
from gateway.fhir.validation import validate_resource
from gateway.types import JSONObject

VALIDATION_MODES = ("create", "update", "delete", "profile")
"""https://hl7.org/fhir/R4/codesystem-resource-validation-mode.html"""

_VALUE_KEYS = ("valueCode", "valueUri", "valueCanonical", "valueString", "valueUrl")


def validate_operation(
    body: JSONObject,
    *,
    resource_type: str,
    mode: str | None,
    profile: str | None,
    resource_id: str | None = None,
) -> JSONObject:
    """Run ``[base]/[resource_type](/[resource_id])/$validate`` on ``body``; the OperationOutcome to answer.

    Raises ``BadRequest`` for an unknown mode, a malformed Parameters body, or a missing resource.
    """
    if not isinstance(body, dict):
        raise BadRequest("$validate needs a resource or a Parameters resource as its body")
    resource, body_mode, body_profile = _arguments(body)
    mode = body_mode if body_mode is not None else mode
    profile = body_profile if body_profile is not None else profile
    if mode is not None and mode not in VALIDATION_MODES:
        raise BadRequest(f"Unknown $validate mode {mode[:64]!r}: use one of {', '.join(VALIDATION_MODES)}")
    if mode == "delete":
        return operation_outcome([_all_ok()])
    if resource is None:
        raise BadRequest("$validate needs the resource to validate (body, or the 'resource' parameter)")
    issues = validate_resource(resource, resource_type=resource_type)
    if mode == "update":
        issues.extend(_update_issues(resource, resource_id))
    issues.extend(_profile_issues(resource, resource_type, profile))
    return operation_outcome(issues or [_all_ok()])


def _arguments(body: JSONObject) -> tuple[JSONObject | None, str | None, str | None]:
    """(resource, mode, profile) from the body: a Parameters resource, or the resource itself."""
    if body.get("resourceType") != "Parameters":
        return body, None, None
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list):
        raise BadRequest("Parameters.parameter must be an array")
    resource: JSONObject | None = None
    values: dict[str, str] = {}
    for parameter in parameters:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if name == "resource":
            if resource is not None or not isinstance(parameter.get("resource"), dict):
                raise BadRequest("The 'resource' parameter must hold exactly one resource")
            resource = parameter["resource"]
        elif name in ("mode", "profile"):
            if name in values:
                raise BadRequest(f"The '{name}' parameter may appear once")
            values[name] = _value(parameter, name)
        else:
            raise BadRequest(f"Unknown $validate parameter {str(name)[:64]!r}: expected resource, mode or profile")
    return resource, values.get("mode"), values.get("profile")


def _value(parameter: dict[str, Any], name: str) -> str:
    for key in _VALUE_KEYS:
        value = parameter.get(key)
        if isinstance(value, str) and value:
            return value
    raise BadRequest(f"The '{name}' parameter needs a value (valueCode or valueUri)")


def _update_issues(resource: JSONObject, resource_id: str | None) -> list[Issue]:
    """An update replaces a resource named by its id: https://hl7.org/fhir/R4/http.html#update."""
    body_id = resource.get("id")
    if body_id is None:
        return [Issue(code="required", diagnostics="An update needs the resource's id", expression=("id",))]
    if resource_id is not None and body_id != resource_id:
        text = f"The resource's id {str(body_id)[:64]!r} differs from the id in the URL {resource_id!r}"
        return [Issue(code="invalid", diagnostics=text, expression=("id",))]
    return []


def _profile_issues(resource: JSONObject, resource_type: str, profile: str | None) -> list[Issue]:
    """The ``profile`` argument: the base definition (already checked), a known profile, or an error."""
    if profile is None or is_base_profile(profile, resource_type):
        return []
    profiles = default_profiles()
    if not profiles.knows(profile):
        text = (
            f"unknown profile {profile[:200]}: this server checks the base R4 definition "
            f"{BASE_PROFILE}{resource_type} and the profiles its CapabilityStatement lists"
        )
        return [Issue(code="not-supported", diagnostics=text)]
    meta = resource.get("meta")
    claimed = meta.get("profile") if isinstance(meta, dict) else None
    if isinstance(claimed, list) and profile in claimed:
        return []  # validate_resource checked it as a claimed profile
    return validate_against_profile(resource, profile, profiles=profiles)


def _all_ok() -> Issue:
    return Issue(code="informational", severity="information", diagnostics="All OK")
