"""Index rows of one FHIR value, per FHIR type and search parameter type.

https://hl7.org/fhir/R4/search.html#ptypes says what each parameter type matches in each FHIR type;
each function here turns one JSON value of a known FHIR type into row tuples in the column order of
``gateway.search.extract.COLUMNS``. ``extractor_for`` picks the function once per parameter, from the
types its compiled expression yields.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.search.dates import MAX_MICROS, MIN_MICROS, DateFormatError, parse_range
from gateway.search.fhirpath import split_reference
from gateway.search.normalize import fold

Row = tuple[Any, ...]
Extractor = Callable[[Any], list[Row]]

CURRENCY_SYSTEM = "urn:iso:std:iso:4217"
"""Money.currency codes are ISO 4217 (https://hl7.org/fhir/R4/datatypes.html#Money)."""


def extractor_for(kind: str, types: tuple[str, ...], targets: tuple[str, ...] = ()) -> Extractor | None:
    """The extractor of a ``kind`` parameter whose values have FHIR ``types``; None if it cannot index them.

    ``targets`` (SearchParameter.target) type the references that name no type of their own.
    """
    if kind == "reference":
        return _reference_extractor(targets) if _REFERENCEABLE.intersection(types) else None
    table = _EXTRACTORS.get(kind, {})
    if not any(t in table for t in types):
        return None
    if len(types) == 1:
        return table[types[0]]
    # Choice elements: a JSON value does not carry its type, its shape tells (Period vs Timing);
    # alternatives the parameter type cannot index (Procedure.performedAge for a date) yield no row.
    return _BY_SHAPE[kind]


# ------------------------------------------------------------------ token (search.html#token)


def _coding(value: Any) -> list[Row]:
    if type(value) is not dict:
        return []
    system, code, display = value.get("system"), value.get("code"), value.get("display")
    if system is None and code is None and display is None:
        return []
    return [(system, code, fold(display) if type(display) is str else None)]


def _codeable_concept(value: Any) -> list[Row]:
    if type(value) is not dict:
        return []
    rows = [row for coding in value.get("coding") or () for row in _coding(coding)]
    text = value.get("text")
    if type(text) is str and text.strip():
        rows.append((None, None, fold(text)))
    return rows


def _identifier(value: Any) -> list[Row]:
    if type(value) is not dict or (value.get("value") is None and value.get("system") is None):
        return []
    kind = value.get("type")
    text = kind.get("text") if type(kind) is dict else None
    return [(value.get("system"), value.get("value"), fold(text) if type(text) is str else None)]


def _contact_point(value: Any) -> list[Row]:
    # ContactPoint matches on its value only; its system (phone, email) is not a code system.
    if type(value) is not dict or type(value.get("value")) is not str:
        return []
    return [(None, value["value"], None)]


def _token_primitive(value: Any) -> list[Row]:
    if type(value) is bool:
        return [(None, "true" if value else "false", None)]
    return [(None, value, None)] if type(value) is str else []


# ------------------------------------------------------------------ string (search.html#string)

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _string(value: Any) -> list[Row]:
    if type(value) is not str:
        return []
    folded = fold(value)
    return [(folded, value)] if folded else []


def _parts(names: tuple[str, ...]) -> Extractor:
    def parts(value: Any) -> list[Row]:
        if type(value) is not dict:
            return []
        rows: list[Row] = []
        for name in names:
            part = value.get(name)
            if part is None:
                continue
            for text in part if type(part) is list else (part,):
                if type(text) is str:
                    folded = fold(text)
                    if folded:
                        rows.append((folded, text))
        return rows

    return parts


# HumanName and Address match on any of their parts (https://hl7.org/fhir/R4/search.html#string).
_human_name = _parts(_NAME_PARTS)
_address = _parts(_ADDRESS_PARTS)


# ------------------------------------------------------------------ date (search.html#date)


def _date(value: Any) -> list[Row]:
    if type(value) is not str:
        return []
    try:
        return [parse_range(value)]
    except DateFormatError:
        return []  # validation rejects malformed dates before the index is written


def _period(value: Any) -> list[Row]:
    """An open end of a Period is unbounded (https://hl7.org/fhir/R4/datatypes.html#Period)."""
    if type(value) is not dict:
        return []
    start, end = _date(value.get("start")), _date(value.get("end"))
    if not start and not end:
        return []
    return [(start[0][0] if start else MIN_MICROS, end[0][1] if end else MAX_MICROS)]


def _timing(value: Any) -> list[Row]:
    if type(value) is not dict:
        return []
    rows = [row for event in value.get("event") or () for row in _date(event)]
    repeat = value.get("repeat")
    if type(repeat) is dict:
        rows.extend(_period(repeat.get("boundsPeriod")))
    return rows


# ------------------------------------------------------------------ reference (search.html#reference)

_HISTORY = re.compile(r"/_history/[^/]*$")


def _reference_extractor(targets: tuple[str, ...]) -> Extractor:
    # Only a reference that names no type (identifier-only) is typed from the parameter's targets.
    sole_target = targets[0] if len(targets) == 1 else None

    def reference(value: Any) -> list[Row]:
        if type(value) is dict:
            return _reference(value, sole_target)
        if type(value) is str:
            url = value.split("|", 1)[0]  # canonical: the version after | is not part of the target
            return [(None, None, url, None, None)] if url else []
        return []

    return reference


def _reference(value: dict[str, Any], sole_target: str | None) -> list[Row]:
    """https://hl7.org/fhir/R4/references.html: literal (relative or absolute), logical, or both."""
    target_type: str | None = None
    target_id: str | None = None
    url: str | None = None
    text = value.get("reference")
    if type(text) is str:
        if text.startswith("#"):
            return []  # contained: not a searchable target of its own
        parts = split_reference(text)
        if parts is not None:
            target_type, target_id, absolute = parts
            url = _HISTORY.sub("", text) if absolute else None
        elif ":" in text:
            url = text  # urn:uuid:, urn:oid: or another absolute URI with no Type/id tail
    identifier = value.get("identifier")
    system, ident = (identifier.get("system"), identifier.get("value")) if type(identifier) is dict else (None, None)
    if target_id is None and url is None and system is None and ident is None:
        return []
    if target_type is None and url is None:
        declared = value.get("type")
        target_type = declared.rsplit("/", 1)[-1] if type(declared) is str else sole_target
    return [(target_type, target_id, url, system, ident)]


# ------------------------------------------------------------------ uri, number, quantity


def _uri(value: Any) -> list[Row]:
    return [(value,)] if type(value) is str else []


def implicit_range(value: Any) -> tuple[float, float] | None:
    """The range a number stands for at its precision (https://hl7.org/fhir/R4/search.html#number).

    ``100`` -> [99.5, 100.5], ``Decimal("1.50")`` -> [1.495, 1.505]. A float has lost the trailing
    zeros of its JSON text, so ``1.50`` parsed as float counts as ``1.5``.
    """
    if type(value) is bool or not isinstance(value, int | float | Decimal):
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(repr(value) if type(value) is float else value)
        exponent = number.as_tuple().exponent
        if not isinstance(exponent, int):
            return None  # NaN or infinity
        half = Decimal(5).scaleb(exponent - 1)
        return float(number - half), float(number + half)
    except (InvalidOperation, ValueError):
        return None


def _number(value: Any) -> list[Row]:
    bounds = implicit_range(value)
    return [bounds] if bounds is not None else []


def _quantity(value: Any) -> list[Row]:
    if type(value) is not dict:
        return []
    bounds = implicit_range(value.get("value"))
    if bounds is None:
        return []
    low, high = bounds
    comparator = value.get("comparator")
    if comparator in ("<", "<="):
        low = float("-inf")
    elif comparator in (">", ">="):
        high = float("inf")
    if "currency" in value:
        return [(CURRENCY_SYSTEM, value["currency"], None, low, high)]
    return [(value.get("system"), value.get("code"), value.get("unit"), low, high)]


def _range(value: Any) -> list[Row]:
    """A Range as one quantity interval; a missing end is unbounded."""
    if type(value) is not dict:
        return []
    low_q, high_q = value.get("low"), value.get("high")
    low_rows, high_rows = _quantity(low_q), _quantity(high_q)
    if not low_rows and not high_rows:
        return []
    unit_row = low_rows[0] if low_rows else high_rows[0]
    low = low_rows[0][3] if low_rows else float("-inf")
    high = high_rows[0][4] if high_rows else float("inf")
    return [(*unit_row[:3], low, high)]


def _by_shape_date(value: Any) -> list[Row]:
    if type(value) is str:
        return _date(value)
    if type(value) is dict and ("event" in value or "repeat" in value):
        return _timing(value)
    return _period(value)


def _by_shape_quantity(value: Any) -> list[Row]:
    return _range(value) if type(value) is dict and ("low" in value or "high" in value) else _quantity(value)


def _by_shape_token(value: Any) -> list[Row]:
    if type(value) is not dict:
        return _token_primitive(value)
    if "coding" in value or set(value) <= {"text", "id", "extension"}:
        return _codeable_concept(value)
    return _coding(value) if "code" in value or "display" in value else _identifier(value)


def _by_shape_string(value: Any) -> list[Row]:
    if type(value) is not dict:
        return _string(value)
    return _human_name(value) if "family" in value or "given" in value else _address(value)


_STRINGS = ("string", "markdown", "code", "id", "uri", "url", "canonical")
_NUMBERS = ("integer", "decimal", "positiveInt", "unsignedInt")
_QUANTITIES = ("Quantity", "Age", "Duration", "Count", "Distance", "SimpleQuantity", "Money")

_REFERENCEABLE = frozenset({"Reference", "canonical", "uri", "url"})

_EXTRACTORS: dict[str, dict[str, Extractor]] = {
    "token": {
        "CodeableConcept": _codeable_concept,
        "Coding": _coding,
        "Identifier": _identifier,
        "ContactPoint": _contact_point,
        "boolean": _token_primitive,
        **dict.fromkeys((*_STRINGS, "oid", "uuid"), _token_primitive),
    },
    "string": {
        "HumanName": _human_name,
        "Address": _address,
        **dict.fromkeys(_STRINGS, _string),
    },
    "date": {"date": _date, "dateTime": _date, "instant": _date, "Period": _period, "Timing": _timing},
    "uri": dict.fromkeys(("uri", "url", "canonical", "oid", "uuid"), _uri),
    "number": dict.fromkeys(_NUMBERS, _number),
    "quantity": {**dict.fromkeys(_QUANTITIES, _quantity), "Range": _range},
}

_BY_SHAPE: dict[str, Extractor] = {
    "token": _by_shape_token,
    "string": _by_shape_string,
    "date": _by_shape_date,
    "uri": _uri,
    "number": _number,
    "quantity": _by_shape_quantity,
}
