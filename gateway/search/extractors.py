"""Index rows of one FHIR value, per FHIR type and search parameter type.

https://hl7.org/fhir/R4/search.html#ptypes says what each parameter type matches in each FHIR type;
each extractor here turns one JSON value of a known FHIR type into whole index rows: the parameter's
code, then the value columns in the order of ``gateway.search.extract.COLUMNS``. ``extractor_for``
builds one per parameter (its code bound in, so a row is one tuple, built once), from the types its
compiled expression yields.
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
"""``(param, *COLUMNS[kind])``."""
Extractor = Callable[[Any], list[Row]]
"""The rows of one JSON value, each a ``Row``."""
Factory = Callable[[str], Extractor]
"""An extractor of a FHIR type, for the parameter code given."""

CURRENCY_SYSTEM = "urn:iso:std:iso:4217"
"""Money.currency codes are ISO 4217 (https://hl7.org/fhir/R4/datatypes.html#Money)."""


def extractor_for(
    kind: str, types: tuple[str, ...], targets: tuple[str, ...] = (), param: str = ""
) -> Extractor | None:
    """The extractor of a ``kind`` parameter ``param`` whose values have FHIR ``types``; None if it cannot
    index them. Its rows start with ``param``.

    ``targets`` (SearchParameter.target) type the references that name no type of their own.
    """
    if kind == "reference":
        return _reference_extractor(param, targets) if _REFERENCEABLE.intersection(types) else None
    table = _EXTRACTORS.get(kind, {})
    if not any(t in table for t in types):
        return None
    if len(types) == 1:
        return table[types[0]](param)
    # Choice elements: a JSON value does not carry its type, its shape tells (Period vs Timing);
    # alternatives the parameter type cannot index (Procedure.performedAge for a date) yield no row.
    return _BY_SHAPE[kind](param)


# ------------------------------------------------------------------ token (search.html#token)


def _coding(param: str) -> Extractor:
    def coding(value: Any) -> list[Row]:
        if type(value) is not dict:
            return []
        system, code, display = value.get("system"), value.get("code"), value.get("display")
        if system is None and code is None and display is None:
            return []
        return [(param, system, code, fold(display) if type(display) is str else None)]

    return coding


def _codeable_concept(param: str) -> Extractor:
    """A row per Coding (display folded, for ``:text``), and one for ``text``."""

    def codeable_concept(value: Any) -> list[Row]:
        if type(value) is not dict:
            return []
        rows: list[Row] = []
        for coding in value.get("coding") or ():
            if type(coding) is dict:
                system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
                if system is not None or code is not None or display is not None:
                    rows.append((param, system, code, fold(display) if type(display) is str else None))
        text = value.get("text")
        if type(text) is str and text.strip():
            rows.append((param, None, None, fold(text)))
        return rows

    return codeable_concept


def _identifier(param: str) -> Extractor:
    def identifier(value: Any) -> list[Row]:
        if type(value) is not dict:
            return []
        system, ident = value.get("system"), value.get("value")
        if ident is None and system is None:
            return []
        kind = value.get("type")
        text = kind.get("text") if type(kind) is dict else None
        return [(param, system, ident, fold(text) if type(text) is str else None)]

    return identifier


def _contact_point(param: str) -> Extractor:
    # ContactPoint matches on its value only; its system (phone, email) is not a code system.
    def contact_point(value: Any) -> list[Row]:
        if type(value) is not dict:
            return []
        text = value.get("value")
        return [(param, None, text, None)] if type(text) is str else []

    return contact_point


def _token_primitive(param: str) -> Extractor:
    def token_primitive(value: Any) -> list[Row]:
        if type(value) is str:
            return [(param, None, value, None)]
        if type(value) is bool:
            return [(param, None, "true" if value else "false", None)]
        return []

    return token_primitive


# ------------------------------------------------------------------ string (search.html#string)

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _string(param: str) -> Extractor:
    def string(value: Any) -> list[Row]:
        if type(value) is not str:
            return []
        folded = fold(value)
        return [(param, folded, value)] if folded else []

    return string


def _parts(names: tuple[str, ...]) -> Factory:
    def factory(param: str) -> Extractor:
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
                            rows.append((param, folded, text))
            return rows

        return parts

    return factory


# HumanName and Address match on any of their parts (https://hl7.org/fhir/R4/search.html#string).
_human_name = _parts(_NAME_PARTS)
_address = _parts(_ADDRESS_PARTS)
PART_NAMES: dict[str, tuple[str, ...]] = {"HumanName": _NAME_PARTS, "Address": _ADDRESS_PARTS}
"""The string parts a HumanName or Address value is indexed by, each folded as a plain string is
(``gateway.search.sources`` derives from it which string parameters repeat a parent's rows)."""


# ------------------------------------------------------------------ date (search.html#date)


def _range_of(value: Any) -> tuple[int, int] | None:
    if type(value) is not str:
        return None
    try:
        return parse_range(value)
    except DateFormatError:
        return None  # validation rejects malformed dates before the index is written


def _period_of(value: Any) -> tuple[int, int] | None:
    """An open end of a Period is unbounded (https://hl7.org/fhir/R4/datatypes.html#Period)."""
    if type(value) is not dict:
        return None
    start, end = _range_of(value.get("start")), _range_of(value.get("end"))
    if start is None and end is None:
        return None
    return (start[0] if start is not None else MIN_MICROS, end[1] if end is not None else MAX_MICROS)


def _date(param: str) -> Extractor:
    def date(value: Any) -> list[Row]:
        bounds = _range_of(value)
        return [] if bounds is None else [(param, *bounds)]

    return date


def _period(param: str) -> Extractor:
    def period(value: Any) -> list[Row]:
        bounds = _period_of(value)
        return [] if bounds is None else [(param, *bounds)]

    return period


def _timing(param: str) -> Extractor:
    def timing(value: Any) -> list[Row]:
        if type(value) is not dict:
            return []
        rows: list[Row] = []
        for event in value.get("event") or ():
            bounds = _range_of(event)
            if bounds is not None:
                rows.append((param, *bounds))
        repeat = value.get("repeat")
        if type(repeat) is dict:
            bounds = _period_of(repeat.get("boundsPeriod"))
            if bounds is not None:
                rows.append((param, *bounds))
        return rows

    return timing


# ------------------------------------------------------------------ reference (search.html#reference)

_HISTORY = re.compile(r"/_history/[^/]*$")


def _reference_extractor(param: str, targets: tuple[str, ...]) -> Extractor:
    """https://hl7.org/fhir/R4/references.html: literal (relative or absolute), logical, or both; a
    canonical or uri is its url (the version after ``|`` is not part of the target)."""
    # Only a reference that names no type (identifier-only) is typed from the parameter's targets.
    sole_target = targets[0] if len(targets) == 1 else None
    known: dict[str, Row] = {}  # the row of a Reference that is only its text: the same text, the same row

    def reference(value: Any) -> list[Row]:
        if type(value) is dict:
            text = value.get("reference")
            if type(text) is str and value.get("identifier") is None and len(text) <= _KNOWN_LENGTH:
                row = known.get(text)
                if row is None:
                    if len(known) >= _KNOWN_TEXTS:
                        known.clear()
                    row = known[text] = _literal_row(param, text)
                return [row] if row else []
            return _reference(param, value, sole_target)
        if type(value) is str:
            url = value.split("|", 1)[0]
            return [(param, None, None, url, None, None)] if url else []
        return []

    return reference


_KNOWN_TEXTS = 1024
"""Reference texts whose rows each reference parameter remembers (all forgotten when full): a write names
the same few targets many times (the member's Patient, the plan's Organizations)."""
_KNOWN_LENGTH = 256
"""Longer texts are not remembered."""


def _literal_row(param: str, text: str) -> Row:
    """The row of a Reference with ``text`` and no identifier; ``()`` if it has none."""
    if text.startswith("#"):
        return ()  # contained: not a searchable target of its own
    parts = split_reference(text)
    if parts is not None:
        target_type, target_id, absolute = parts
        return (param, target_type, target_id, _HISTORY.sub("", text) if absolute else None, None, None)
    if ":" in text:
        return (param, None, None, text, None, None)  # urn:uuid:, urn:oid: or another absolute URI
    return ()  # neither a target nor an identifier


def _reference(param: str, value: dict[str, Any], sole_target: str | None) -> list[Row]:
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
    return [(param, target_type, target_id, url, system, ident)]


# ------------------------------------------------------------------ uri, number, quantity


def _uri(param: str) -> Extractor:
    def uri(value: Any) -> list[Row]:
        return [(param, value)] if type(value) is str else []

    return uri


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


def _number(param: str) -> Extractor:
    def number(value: Any) -> list[Row]:
        bounds = implicit_range(value)
        return [(param, *bounds)] if bounds is not None else []

    return number


def _quantity_of(value: Any) -> tuple[Any, Any, Any, float, float] | None:
    if type(value) is not dict:
        return None
    bounds = implicit_range(value.get("value"))
    if bounds is None:
        return None
    low, high = bounds
    comparator = value.get("comparator")
    if comparator in ("<", "<="):
        low = float("-inf")
    elif comparator in (">", ">="):
        high = float("inf")
    if "currency" in value:
        return (CURRENCY_SYSTEM, value["currency"], None, low, high)
    return (value.get("system"), value.get("code"), value.get("unit"), low, high)


def _range_quantity_of(value: Any) -> tuple[Any, ...] | None:
    """A Range as one quantity interval; a missing end is unbounded."""
    if type(value) is not dict:
        return None
    low_q, high_q = _quantity_of(value.get("low")), _quantity_of(value.get("high"))
    if low_q is None and high_q is None:
        return None
    unit = low_q if low_q is not None else high_q
    assert unit is not None
    low = low_q[3] if low_q is not None else float("-inf")
    high = high_q[4] if high_q is not None else float("inf")
    return (*unit[:3], low, high)


def _quantity(param: str) -> Extractor:
    def quantity(value: Any) -> list[Row]:
        found = _quantity_of(value)
        return [(param, *found)] if found is not None else []

    return quantity


def _range(param: str) -> Extractor:
    def range_(value: Any) -> list[Row]:
        found = _range_quantity_of(value)
        return [(param, *found)] if found is not None else []

    return range_


def _by_shape_date(param: str) -> Extractor:
    date, timing, period = _date(param), _timing(param), _period(param)

    def by_shape(value: Any) -> list[Row]:
        if type(value) is str:
            return date(value)
        if type(value) is dict and ("event" in value or "repeat" in value):
            return timing(value)
        return period(value)

    return by_shape


def _by_shape_quantity(param: str) -> Extractor:
    range_, quantity = _range(param), _quantity(param)

    def by_shape(value: Any) -> list[Row]:
        return range_(value) if type(value) is dict and ("low" in value or "high" in value) else quantity(value)

    return by_shape


def _by_shape_token(param: str) -> Extractor:
    primitive, concept = _token_primitive(param), _codeable_concept(param)
    coding, identifier = _coding(param), _identifier(param)

    def by_shape(value: Any) -> list[Row]:
        if type(value) is not dict:
            return primitive(value)
        if "coding" in value or set(value) <= {"text", "id", "extension"}:
            return concept(value)
        return coding(value) if "code" in value or "display" in value else identifier(value)

    return by_shape


def _by_shape_string(param: str) -> Extractor:
    string, human_name, address = _string(param), _human_name(param), _address(param)

    def by_shape(value: Any) -> list[Row]:
        if type(value) is not dict:
            return string(value)
        return human_name(value) if "family" in value or "given" in value else address(value)

    return by_shape


_STRINGS = ("string", "markdown", "code", "id", "uri", "url", "canonical")
_NUMBERS = ("integer", "decimal", "positiveInt", "unsignedInt")
_QUANTITIES = ("Quantity", "Age", "Duration", "Count", "Distance", "SimpleQuantity", "Money")

_REFERENCEABLE = frozenset({"Reference", "canonical", "uri", "url"})

_EXTRACTORS: dict[str, dict[str, Factory]] = {
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

_BY_SHAPE: dict[str, Factory] = {
    "token": _by_shape_token,
    "string": _by_shape_string,
    "date": _by_shape_date,
    "uri": _uri,
    "number": _number,
    "quantity": _by_shape_quantity,
}
