"""File layouts as data (``mappings/files/layouts/*.json``) and the pure functions that read and write
their records (docs/files.md; REFERENCE.md §6: the plan-HN layouts are ours to define, with a header and
a trailer carrying record counts).

Every file of the exchange has the same envelope, pipe-delimited UTF-8 text read and written with the
``csv`` module (``|`` delimiter, a field holding ``|``, a quote or a line break is quoted):

- ``HDR|layout id|layout version|sender|receiver|created YYYYMMDD|sequence`` (one, first);
- ``DTL|column 1|column 2|...`` (one per record, columns in the order of the layout);
- ``TRL|detail record count|control total 1|...`` (one, last; control totals are the sums of the layout's
  ``controlTotals`` columns).

A column has a name, a type (below), ``required``, an optional ``maxLength``, allowed ``values`` for codes,
and ``fhir``: where it goes in (or comes from) FHIR. Types: ``string``, ``code``, ``codes`` (several codes
separated by ``;``), ``integer`` (0 or more), ``date`` (``YYYYMMDD``), ``month`` (``YYYYMM``), ``flag``
(``Y``/``N``), ``cin`` (Medi-Cal CIN: 8 digits and a letter, e.g. ``91000001A``), ``npi`` (10 digits with
the Luhn check of the NPI standard), ``tin`` (9 digits), ``phone`` (10 digits), ``zip`` (5 or 9 digits).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

LAYOUT_DIR = Path(__file__).resolve().parent / "layouts"
DELIMITER = "|"
HEADER, DETAIL, TRAILER = "HDR", "DTL", "TRL"
LIST_SEPARATOR = ";"

Value = str | int | date | bool | tuple[str, ...] | None
"""A typed column value: str (string, code, cin, npi, tin, phone, zip), int, date (date; month as its
first day), bool (flag), tuple of codes, or None when empty."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem of a record: the line it is on, the column (empty: the whole record), a code of the
    error-report layout's CODE column and the reason in words. Never carries the value itself (PHI)."""

    row: int
    column: str
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a layout."""

    name: str
    type: str
    required: bool
    fhir: str
    max_length: int | None = None
    values: Mapping[str, str] | None = None
    value_set: str | None = None


@dataclass(frozen=True, slots=True)
class Layout:
    """A versioned file layout (one JSON file of ``mappings/files/layouts``)."""

    id: str
    version: str
    title: str
    direction: str
    frequency: str
    description: str
    key: str
    control_totals: tuple[str, ...]
    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The column names, in file order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        """The column ``name``."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Header:
    """The ``HDR`` record."""

    layout: str
    version: str
    sender: str
    receiver: str
    created: date
    sequence: int


@dataclass(frozen=True, slots=True)
class Trailer:
    """The ``TRL`` record: the detail record count and the control totals, in layout order."""

    count: int
    totals: tuple[int, ...]


def _layout(data: Mapping[str, Any]) -> Layout:
    columns = tuple(
        Column(
            name=str(c["name"]),
            type=str(c["type"]),
            required=bool(c["required"]),
            fhir=str(c.get("fhir", "")),
            max_length=c.get("maxLength"),
            values=c.get("values"),
            value_set=c.get("valueSet"),
        )
        for c in data["columns"]
    )
    return Layout(
        id=str(data["id"]),
        version=str(data["version"]),
        title=str(data["title"]),
        direction=str(data["direction"]),
        frequency=str(data["frequency"]),
        description=str(data["description"]),
        key=str(data["key"]),
        control_totals=tuple(data.get("controlTotals", ())),
        columns=columns,
    )


@cache
def layouts() -> dict[str, Layout]:
    """Every layout shipped, by id."""
    found: dict[str, Layout] = {}
    for path in sorted(LAYOUT_DIR.glob("*.json")):
        layout = _layout(json.loads(path.read_text(encoding="utf-8")))
        found[layout.id] = layout
    return found


def layout(layout_id: str) -> Layout:
    """The layout ``layout_id`` (KeyError when unknown)."""
    return layouts()[layout_id]


# ----------------------------------------------------------------------------- values

_CIN = re.compile(r"^[0-9]{8}[A-Z]$")
_DIGITS = {"npi": 10, "tin": 9, "phone": 10}
_ZIP = re.compile(r"^[0-9]{5}([0-9]{4})?$")
_DATE = re.compile(r"^[0-9]{8}$")
_MONTH = re.compile(r"^[0-9]{6}$")
_INTEGER = re.compile(r"^[0-9]{1,9}$")


def npi_valid(npi: str) -> bool:
    """The NPI check digit (Luhn over ``80840`` + the first 9 digits, per the NPI standard)."""
    if len(npi) != 10 or not npi.isdigit():
        return False
    total = 24  # the constant the "80840" prefix adds
    for i, ch in enumerate(reversed(npi[:9])):
        digit = int(ch)
        if i % 2 == 0:
            digit *= 2
            digit = digit - 9 if digit > 9 else digit
        total += digit
    return (10 - total % 10) % 10 == int(npi[9])


def _string(column: Column, text: str) -> Value:
    return text


def _code(column: Column, text: str) -> Value:
    if column.values is not None and text not in column.values:
        raise ValueError(f"not one of {', '.join(column.values)}")
    return text


def _codes(column: Column, text: str) -> Value:
    codes = tuple(c.strip() for c in text.split(LIST_SEPARATOR) if c.strip())
    unknown = [c for c in codes if column.values is not None and c not in column.values]
    if unknown or not codes:
        raise ValueError(f"codes separated by ';', each one of {', '.join(column.values or ())}")
    return codes


def _integer(column: Column, text: str) -> Value:
    if not _INTEGER.match(text):
        raise ValueError("a whole number of 0 or more")
    return int(text)


def _month(column: Column, text: str) -> Value:
    if not _MONTH.match(text):
        raise ValueError("a month YYYYMM")
    return _date(text + "01")


def _flag(column: Column, text: str) -> Value:
    if text not in ("Y", "N"):
        raise ValueError("Y or N")
    return text == "Y"


def _cin(column: Column, text: str) -> Value:
    if not _CIN.match(text):
        raise ValueError("a Medi-Cal CIN: 8 digits and a capital letter")
    return text


def _digits(column: Column, text: str) -> Value:
    wanted = _DIGITS[column.type]
    if len(text) != wanted or not text.isdigit():
        raise ValueError(f"{wanted} digits")
    if column.type == "npi" and not npi_valid(text):
        raise ValueError("an NPI whose check digit is wrong")
    return text


def _zip(column: Column, text: str) -> Value:
    if not _ZIP.match(text):
        raise ValueError("a ZIP code of 5 or 9 digits")
    return text


_PARSERS = {
    "string": _string,
    "code": _code,
    "codes": _codes,
    "integer": _integer,
    "date": lambda column, text: _date(text),
    "month": _month,
    "flag": _flag,
    "cin": _cin,
    "npi": _digits,
    "tin": _digits,
    "phone": _digits,
    "zip": _zip,
}


def parse_value(column: Column, text: str) -> Value:
    """The typed value of ``text`` (already stripped) in ``column``; ValueError with the reason when it does
    not fit (the reason never quotes the value: files carry PHI)."""
    if text == "":
        if column.required:
            raise ValueError("required")
        return None
    if column.max_length is not None and len(text) > column.max_length:
        raise ValueError(f"longer than {column.max_length} characters")
    parser = _PARSERS.get(column.type)
    if parser is None:
        raise ValueError(f"unknown column type {column.type}")
    return parser(column, text)


def _date(text: str) -> date:
    if not _DATE.match(text):
        raise ValueError("a date YYYYMMDD")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise ValueError("a date YYYYMMDD that exists") from None


def format_value(column: Column, value: Value) -> str:
    """``value`` as written in ``column``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, date):
        return f"{value:%Y%m}" if column.type == "month" else f"{value:%Y%m%d}"
    if isinstance(value, tuple):
        return LIST_SEPARATOR.join(value)
    return str(value)


# ----------------------------------------------------------------------------- records


def parse_detail(layout: Layout, fields: list[str], row: int) -> tuple[dict[str, Value], list[FieldError]]:
    """The typed values of a ``DTL`` record (``fields`` without the record type) and its problems; a record
    with the wrong number of fields has one problem and no values."""
    if len(fields) != len(layout.columns):
        reason = f"{len(fields)} columns where layout {layout.id} {layout.version} has {len(layout.columns)}"
        return {}, [FieldError(row, "", "columns", reason)]
    values: dict[str, Value] = {}
    errors: list[FieldError] = []
    for column, text in zip(layout.columns, fields, strict=True):
        text = text.strip()
        try:
            if text and column.type == "string" and (column.max_length is None or len(text) <= column.max_length):
                values[column.name] = text  # the common case, without the general checks
            else:
                values[column.name] = parse_value(column, text)
        except ValueError as exc:
            code = "required" if str(exc) == "required" else ("value" if column.type in ("code", "codes") else "format")
            errors.append(FieldError(row, column.name, code, f"{column.name}: {exc}"))
    return values, errors


def format_detail(layout: Layout, values: Mapping[str, Value]) -> list[str]:
    """A ``DTL`` record (with its record type) of ``values`` (missing columns are empty)."""
    return [DETAIL, *(format_value(c, values.get(c.name)) for c in layout.columns)]


def format_header(header: Header) -> list[str]:
    """The ``HDR`` record."""
    return [
        HEADER,
        header.layout,
        header.version,
        header.sender,
        header.receiver,
        f"{header.created:%Y%m%d}",
        str(header.sequence),
    ]


def parse_header(fields: list[str]) -> Header:
    """The ``HDR`` record (``fields`` with the record type); ValueError saying what is wrong."""
    if not fields or fields[0] != HEADER:
        raise ValueError("the first record is not a header (HDR)")
    if len(fields) != 7:
        raise ValueError(f"the header has {len(fields)} fields where HDR has 7")
    _, layout_id, version, sender, receiver, created, sequence = (f.strip() for f in fields)
    if not layout_id or not version or not sender or not receiver:
        raise ValueError("the header names the layout, its version, the sender and the receiver")
    if not _INTEGER.match(sequence):
        raise ValueError("the header's sequence is a whole number")
    return Header(layout_id, version, sender, receiver, _date(created), int(sequence))


def format_trailer(count: int, totals: tuple[int, ...]) -> list[str]:
    """The ``TRL`` record."""
    return [TRAILER, str(count), *(str(t) for t in totals)]


def parse_trailer(layout: Layout, fields: list[str]) -> Trailer:
    """The ``TRL`` record (``fields`` with the record type); ValueError saying what is wrong."""
    expected = 2 + len(layout.control_totals)
    if len(fields) != expected:
        raise ValueError(f"the trailer has {len(fields)} fields where TRL of {layout.id} has {expected}")
    numbers = [f.strip() for f in fields[1:]]
    if not all(re.match(r"^[0-9]{1,12}$", n) for n in numbers):
        raise ValueError("the trailer's count and control totals are whole numbers")
    return Trailer(int(numbers[0]), tuple(int(n) for n in numbers[1:]))


class Totals:
    """Running detail count and control totals of a file being read or written."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.count = 0
        self.sums = [0] * len(layout.control_totals)
        names = [c.name for c in layout.columns]
        self._controls = tuple(
            (k, names.index(name), layout.columns[names.index(name)])
            for k, name in enumerate(layout.control_totals)
            if name in names
        )
        """(index in ``sums``, index in a detail record, column) of each control-total column."""

    def add_fields(self, fields: Sequence[str]) -> None:
        """``add`` of a detail record as read (``fields`` without the record type, as many as the layout's
        columns), parsing its control-total columns only: what ``add(parse_detail(...)[0])`` adds."""
        self.count += 1
        for k, index, column in self._controls:
            text = fields[index].strip()
            if column.type == "integer" and column.max_length is None:
                if text.isascii() and text.isdigit() and len(text) <= 9:  # what _integer accepts
                    self.sums[k] += int(text)
                continue
            try:
                value = parse_value(column, text)
            except ValueError:
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                self.sums[k] += value

    def add(self, values: Mapping[str, Value]) -> None:
        """Count one detail record and add its control-total columns."""
        self.count += 1
        for i, name in enumerate(self.layout.control_totals):
            value = values.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                self.sums[i] += value

    def trailer(self) -> Trailer:
        """The trailer these totals make."""
        return Trailer(self.count, tuple(self.sums))

    def check(self, trailer: Trailer, row: int) -> list[FieldError]:
        """The differences between ``trailer`` and what was read (on row ``row``, the trailer's line).

        Counted are all detail records of the file (those with errors too): the trailer checks that the
        file arrived whole, not that its records are good. Control totals add the readable values."""
        errors: list[FieldError] = []
        if trailer.count != self.count:
            reason = f"the trailer counts {trailer.count} detail records, the file has {self.count}"
            errors.append(FieldError(row, "", "trailer", reason))
        for name, stated, summed in zip(self.layout.control_totals, trailer.totals, self.sums, strict=True):
            if stated != summed:
                errors.append(
                    FieldError(row, name, "trailer", f"control total of {name} is {stated}, rows add {summed}")
                )
        return errors
