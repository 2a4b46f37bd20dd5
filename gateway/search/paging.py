"""Keyset paging: the sort order of a search, and opaque cursors that resume after a row.

https://hl7.org/fhir/R4/search.html#paging leaves the paging mechanism to the server; the ``next``
link carries a ``_cursor`` holding the sort values and ``rid`` of the last row of the page, and the
next page starts strictly after that position. No OFFSET and no server-side state: any process can
serve any page, and rows inserted or updated between two fetches neither shift nor repeat the rows
that follow (``rid`` never changes for a resource; new resources get larger ones).

Order: the ``_sort`` keys (https://hl7.org/fhir/R4/search.html#sort), then ``rid`` as tiebreaker
in the direction of the last key, so the order is total. Resources without a value for a sort
parameter come last in either direction.

A cursor is base64url JSON ``[fingerprint, values, rid]``. It is a position, not a credential (the
search's own conditions, access narrowing included, apply to every page), so it is not signed; the
fingerprint ties it to the sort order it was made for, and anything malformed is a 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
from sqlalchemy import ColumnElement, and_, case, false, or_, tuple_

from gateway.errors import BadRequest
from gateway.search.query import ID, LAST_UPDATED, SortKey

_TEXT_KINDS = frozenset({"string", "token", "uri", ID})
_INT_KINDS = frozenset({"date", LAST_UPDATED})
E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)


@dataclass(frozen=True, slots=True)
class OrderKey:
    """One component of the page order."""

    expression: ColumnElement[Any]
    descending: bool
    nullable: bool


@dataclass(frozen=True, slots=True)
class Cursor:
    """The position after which the next page starts."""

    values: tuple[Any, ...]
    rid: int


def fingerprint(sort: Sequence[SortKey], types: Sequence[str]) -> str:
    """A short digest of the order a cursor belongs to."""
    text = ",".join(f"{'-' if k.descending else ''}{k.code}" for k in sort) + "@" + ",".join(types)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def encode_cursor(digest: str, values: Sequence[Any], rid: int) -> str:
    """The opaque ``_cursor`` value of the position ``(values, rid)``."""
    raw = orjson.dumps([digest, list(values), rid])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(text: str, digest: str, sort: Sequence[SortKey]) -> Cursor:
    """The position in ``text``; ``BadRequest`` unless it is a cursor of this very sort order."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        payload = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise BadRequest("Parameter '_cursor': not a valid paging cursor") from None
    if not (isinstance(payload, list) and len(payload) == 3 and payload[0] == digest):
        raise BadRequest("Parameter '_cursor': the cursor does not belong to this search")
    _, values, rid = payload
    if not (isinstance(values, list) and len(values) == len(sort) and _is_int(rid)):
        raise BadRequest("Parameter '_cursor': not a valid paging cursor")
    for key, value in zip(sort, values, strict=True):
        if not _fits(key, value):
            raise BadRequest("Parameter '_cursor': not a valid paging cursor")
    return Cursor(tuple(values), rid)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fits(key: SortKey, value: Any) -> bool:
    if value is None:
        return key.kind not in (ID, LAST_UPDATED)
    if key.kind in _TEXT_KINDS:
        return isinstance(value, str)
    if key.kind in _INT_KINDS:
        return _is_int(value)
    return _is_int(value) or isinstance(value, float)


def order_by(keys: Sequence[OrderKey]) -> list[ColumnElement[Any]]:
    """ORDER BY clauses for ``keys``: NULLs last, whatever the direction (both dialects)."""
    clauses: list[ColumnElement[Any]] = []
    for key in keys:
        if key.nullable:
            clauses.append(_null_flag(key.expression).asc())
        clauses.append(key.expression.desc() if key.descending else key.expression.asc())
    return clauses


class _Key(Protocol[E_co]):
    """An order component, as ``OrderKey`` (Core expressions) or ``TextKey`` (SQL text)."""

    @property
    def expression(self) -> E_co: ...

    @property
    def descending(self) -> bool: ...

    @property
    def nullable(self) -> bool: ...


def _components(
    keys: Sequence[_Key[E]], values: Sequence[Any], null_flag: Callable[[E], E]
) -> tuple[list[tuple[E, bool, Any]], bool | None]:
    """The comparisons ``(expression, descending, value)`` that place a row after the position ``values``
    (a NULL flag before each nullable key), and their one direction when a row-value comparison can
    test them all (every value given, one direction; SQLite and PostgreSQL use a composite index for
    it), else None."""
    components: list[tuple[E, bool, Any]] = []
    for key, value in zip(keys, values, strict=True):
        if key.nullable:
            components.append((null_flag(key.expression), False, 1 if value is None else 0))
        components.append((key.expression, key.descending, value))
    directions = {descending for _, descending, _ in components}
    if len(directions) == 1 and all(v is not None for _, _, v in components):
        return components, directions.pop()
    return components, None


def after(keys: Sequence[OrderKey], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after the position ``values`` (one per key) in the order of ``keys``."""
    components, row_descending = _components(keys, values, _null_flag)
    if row_descending is not None:
        left = tuple_(*(c for c, _, _ in components))
        right = tuple_(*(v for _, _, v in components))
        return left < right if row_descending else left > right
    disjuncts: list[ColumnElement[bool]] = []
    equal: list[ColumnElement[bool]] = []
    for expression, descending, value in components:
        if value is not None:
            disjuncts.append(and_(*equal, expression < value if descending else expression > value))
            equal.append(expression == value)
        else:  # within the NULL group every value is equal; nothing sorts after NULL
            equal.append(expression.is_(None))
    return or_(*disjuncts) if disjuncts else false()


def _null_flag(expression: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((expression.is_(None), 1), else_=0)


# -- the same order and keyset condition as driver SQL text (the prepared path, ``sqltext.py``) ---------


@dataclass(frozen=True, slots=True)
class TextKey:
    """One component of the page order as SQL text (``expression`` has no placeholders)."""

    expression: str
    descending: bool
    nullable: bool


def order_by_text(keys: Sequence[TextKey]) -> str:
    """``order_by`` as SQL text: NULLs last, whatever the direction."""
    clauses: list[str] = []
    for key in keys:
        if key.nullable:
            clauses.append(f"{_null_flag_text(key.expression)} ASC")
        clauses.append(f"{key.expression} {'DESC' if key.descending else 'ASC'}")
    return ", ".join(clauses)


def after_text(keys: Sequence[TextKey], values: Sequence[Any], placeholder: str) -> tuple[str, tuple[Any, ...]]:
    """``after`` as SQL text and its parameters: rows strictly after the position ``values``."""
    components, row_descending = _components(keys, values, _null_flag_text)
    if row_descending is not None:
        left = ", ".join(c for c, _, _ in components)
        right = ", ".join(placeholder for _ in components)
        operator = "<" if row_descending else ">"
        return f"({left}) {operator} ({right})", tuple(v for _, _, v in components)
    disjuncts: list[str] = []
    params: list[Any] = []
    equal: list[str] = []
    equal_params: list[Any] = []
    for expression, descending, value in components:
        if value is not None:
            test = f"{expression} {'<' if descending else '>'} {placeholder}"
            disjuncts.append("(" + " AND ".join([*equal, test]) + ")")
            params.extend([*equal_params, value])
            equal.append(f"{expression} = {placeholder}")
            equal_params.append(value)
        else:  # within the NULL group every value is equal; nothing sorts after NULL
            equal.append(f"{expression} IS NULL")
    if not disjuncts:
        return "1 != 1", ()
    return " OR ".join(disjuncts), tuple(params)


def _null_flag_text(expression: str) -> str:
    return f"CASE WHEN {expression} IS NULL THEN 1 ELSE 0 END"
