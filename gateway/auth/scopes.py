"""SMART scopes (App Launch 2.x, https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).

Clinical scopes are ``context/Type.permissions[?param=value&...]``:

- ``context``: ``patient`` (the launch patient's compartment), ``user`` (what the signed-in user may
  see), ``system`` (backend services);
- ``Type``: a resource type or ``*``;
- ``permissions``: SMART v1 ``read`` (= ``rs``), ``write`` (= ``cud``), ``*`` (= ``cruds``), or SMART v2
  letters from ``cruds`` in that order (create, read, update, delete, search);
- a v2 scope may narrow itself with search parameters (granular scopes, e.g.
  ``patient/Observation.rs?category=laboratory``).

Anything else (``openid``, ``fhirUser``, ``launch``, ``offline_access``, malformed text) grants no
resource access and is ignored here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl

CONTEXTS = ("patient", "user", "system")
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
V2_ORDER = "cruds"
_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.*))?$")


@dataclass(frozen=True, slots=True)
class Scope:
    """One clinical scope."""

    context: str
    resource_type: str
    """A resource type, or ``*`` for every type."""
    permissions: frozenset[str]
    """Letters of ``cruds``."""
    filters: tuple[tuple[str, str], ...] = ()
    """Granular search parameters (v2) the resources must match."""
    text: str = ""

    def covers(self, resource_type: str, permission: str) -> bool:
        """Whether this scope grants ``permission`` on ``resource_type`` (one letter of ``cruds``, or
        several: any of them)."""
        return self.resource_type in ("*", resource_type) and any(p in self.permissions for p in permission)


def parse_scope(text: str) -> Scope | None:
    """The clinical scope ``text`` names, or ``None`` (not a clinical scope, or malformed)."""
    found = _SCOPE.match(text)
    if found is None:
        return None
    context, resource_type, permissions, query = found.groups()
    letters = V1_PERMISSIONS.get(permissions)
    if letters is not None:
        if query:
            return None  # granular filters are SMART v2 only
    elif _v2_letters(permissions):
        letters = permissions
    else:
        return None
    filters = tuple(parse_qsl(query, keep_blank_values=False)) if query else ()
    if query and not filters:
        return None
    return Scope(context, resource_type, frozenset(letters), filters, text)


def _v2_letters(text: str) -> bool:
    """``text`` is a non-empty subsequence of ``cruds`` in that order (scopes-and-launch-context §3.1)."""
    position = 0
    for letter in text:
        position = V2_ORDER.find(letter, position)
        if position < 0:
            return False
        position += 1
    return bool(text)


@lru_cache(maxsize=4096)
def parse_scopes(scope: str) -> tuple[Scope, ...]:
    """The clinical scopes of a space-separated scope string (others are left out)."""
    return tuple(s for s in (parse_scope(part) for part in scope.split()) if s is not None)


def matching(scopes: tuple[Scope, ...], resource_type: str, permission: str) -> tuple[Scope, ...]:
    """The scopes that grant ``permission`` on ``resource_type``."""
    return tuple(s for s in scopes if s.covers(resource_type, permission))
