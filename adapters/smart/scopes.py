"""SMART scopes as the authorization server needs them: parse, contain, intersect.

https://build.fhir.org/ig/HL7/smart-app-launch/scopes-and-launch-context.html: clinical scopes are
``(patient|user|system)/(Type|*).(permissions)[?query]`` with SMART v1 permissions ``read``, ``write``,
``*`` and SMART v2 permissions, a subset of ``cruds`` in that order; the rest (``launch``,
``launch/patient``, ``openid``, ``fhirUser``, ``offline_access``...) are plain names.

The server grants the intersection of what a client asks for and what it was registered with: a
registered ``patient/*.rs`` covers a requested ``patient/Observation.rs`` or ``patient/Observation.read``,
never ``patient/Observation.c``. A refresh may ask for a narrower scope, never a wider one. (Enforcement
of scopes on FHIR requests is gateway/auth's; this module only decides what a token may carry.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONTEXTS = ("patient", "user", "system")
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_CLINICAL = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(\?.+)?$")
_V2_PERMISSIONS = re.compile(r"^c?r?u?d?s?$")

LAUNCH = "launch"
LAUNCH_PATIENT = "launch/patient"
LAUNCH_ENCOUNTER = "launch/encounter"
OPENID = "openid"
FHIR_USER = "fhirUser"
OFFLINE_ACCESS = "offline_access"
ONLINE_ACCESS = "online_access"
NAMED_SCOPES = frozenset(
    {LAUNCH, LAUNCH_PATIENT, LAUNCH_ENCOUNTER, OPENID, FHIR_USER, "profile", OFFLINE_ACCESS, ONLINE_ACCESS}
)


@dataclass(frozen=True, slots=True)
class ClinicalScope:
    """A parsed ``context/Type.permissions?query`` scope."""

    context: str
    resource_type: str
    permissions: frozenset[str]
    """Letters of ``cruds`` (v1 ``read``/``write``/``*`` translated)."""
    query: str | None


def parse_clinical(scope: str) -> ClinicalScope | None:
    """The clinical scope ``scope`` denotes, or ``None`` when it is not a (valid) clinical scope."""
    match = _CLINICAL.match(scope)
    if match is None:
        return None
    context, resource_type, permissions, query = match.groups()
    if permissions in V1_PERMISSIONS:
        if query is not None:
            return None  # granular queries are SMART v2 only
        letters = V1_PERMISSIONS[permissions]
    elif _V2_PERMISSIONS.match(permissions) and permissions:
        letters = permissions
    else:
        return None
    return ClinicalScope(context, resource_type, frozenset(letters), query[1:] if query else None)


def split(scope: str | None) -> list[str]:
    """The scopes of a space-separated scope string, in order, without duplicates."""
    return list(dict.fromkeys((scope or "").split()))


def is_valid(scope: str) -> bool:
    """True for a scope this server knows how to grant."""
    return scope in NAMED_SCOPES or parse_clinical(scope) is not None


def covers(granted: str, requested: str) -> bool:
    """True when holding ``granted`` allows everything ``requested`` asks for."""
    if granted == requested:
        return True
    wide, narrow = parse_clinical(granted), parse_clinical(requested)
    if wide is None or narrow is None or wide.context != narrow.context:
        return False
    if wide.resource_type not in ("*", narrow.resource_type):
        return False
    if wide.query is not None and wide.query != narrow.query:
        return False
    return narrow.permissions <= wide.permissions


def intersect(requested: str | None, allowed: str) -> str:
    """The requested scopes that ``allowed`` covers (space-separated, request order); unknown dropped."""
    held = split(allowed)
    return " ".join(s for s in split(requested) if is_valid(s) and any(covers(h, s) for h in held))


def is_subset(requested: str | None, original: str) -> bool:
    """True when every requested scope is covered by the originally granted ``original``."""
    held = split(original)
    return all(any(covers(h, s) for h in held) for s in split(requested))


def has_patient_scopes(scope: str) -> bool:
    """True when some granted scope is a ``patient/`` clinical scope (it needs a patient context)."""
    return any((parsed := parse_clinical(s)) is not None and parsed.context == "patient" for s in split(scope))


def has_refresh(scope: str) -> bool:
    """True when the scope asks for a refresh token (``offline_access`` or ``online_access``)."""
    names = set(split(scope))
    return OFFLINE_ACCESS in names or ONLINE_ACCESS in names


SCOPES_SUPPORTED = (
    OPENID,
    FHIR_USER,
    LAUNCH,
    LAUNCH_PATIENT,
    LAUNCH_ENCOUNTER,
    OFFLINE_ACCESS,
    ONLINE_ACCESS,
    "patient/*.rs",
    "patient/*.cruds",
    "user/*.rs",
    "user/*.cruds",
    "system/*.rs",
    "system/*.cruds",
    "patient/*.read",
    "user/*.read",
    "system/*.read",
)
"""Examples advertised in ``scopes_supported`` of the discovery documents."""
