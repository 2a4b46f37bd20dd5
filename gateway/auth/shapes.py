"""Grants of one shape share their narrowing SQL (issue 5; ``gateway.search.bound`` says why and how).

``Shape`` is what a grant's narrowing depends on besides its organization and launch patient ids;
``gateway.auth.access.Access`` builds one *template* ``Access`` per shape, whose grant carries the markers
of ``gateway.search.bound`` instead of ids, and compiles SQL only there. ``PointSql`` is a point statement
of one grant: the shape's text with the grant's values to bind around the resource id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.search.bound import RES_ID, bind_values
from gateway.store.repository import StoredResource


@dataclass(frozen=True, slots=True)
class Shape:
    """A grant's narrowing without its ids: the scopes, the organization's roles, and whether the grant
    has an organization and a launch patient."""

    scope: str
    roles: frozenset[str] | None
    """The organization's roles; ``None`` without a role directory (the CalAIM layer off)."""
    organization: bool
    patient: bool


@dataclass(frozen=True, slots=True)
class PointSql:
    """A point statement of one grant: driver SQL whose positional parameters are ``before``, the resource
    id, then ``after`` (the grant's organization and patient, where the shape's text wants them)."""

    sql: str
    before: tuple[Any, ...]
    after: tuple[Any, ...]

    @staticmethod
    def of(sql: str, names: Sequence[str], values: Mapping[str, str | None]) -> PointSql:
        """A grant's statement from the shape's text and markers (``RES_ID`` exactly once)."""
        at = names.index(RES_ID)
        return PointSql(sql, bind_values(names[:at], values), bind_values(names[at + 1 :], values))

    def params(self, res_id: str) -> tuple[Any, ...]:
        """The positional parameters of a run for the resource ``res_id``."""
        return (*self.before, res_id, *self.after)

    def stored(self, row: tuple[Any, ...] | None) -> StoredResource | None:
        """The ``StoredResource`` of a row of a read statement (the columns of ``Repository.read``)."""
        if row is None:
            return None
        rid, res_type, res_id, version_id, last_updated, deleted, body = row
        if body is not None and not isinstance(body, bytes):
            body = bytes(body)  # psycopg may hand out memoryviews
        return StoredResource(rid, res_type, res_id, version_id, last_updated, bool(deleted), body, "")
