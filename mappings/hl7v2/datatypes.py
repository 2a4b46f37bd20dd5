"""v2 data types ↔ FHIR data types, after the HL7 Version 2 to FHIR IG data type maps
(https://build.fhir.org/ig/HL7/v2-to-fhir/datatype_maps.html): DTM → dateTime/date, CX → Identifier,
XPN → HumanName, XAD → Address, XTN → ContactPoint, CWE → CodeableConcept.

Functions take a ``Segment`` and a field number so that a bad value is reported at its ERR-2 location
(AE, 0357 code 102) without quoting the value itself.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from mappings.hl7v2.errors import DATA_TYPE_ERROR, content_error
from mappings.hl7v2.message import Repetition, Segment
from mappings.hl7v2.tables import CODING_SYSTEMS, v2_table_system

JSON = dict[str, Any]

_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")


def dtm(segment: Segment, field: int, *, zone: ZoneInfo, component: int = 1, date_only: bool = False) -> str | None:
    """A DTM (or DT/TS) as FHIR ``dateTime`` (or ``date``); None when empty.

    FHIR requires a time zone whenever a time is given (R4 datatypes.html#dateTime): a DTM without an
    offset is read in ``zone`` (the plan's zone), as the v2-to-FHIR IG recommends for local times.
    """
    text = segment.get(field, component)
    if not text:
        return None
    where = segment.where(field, component if component > 1 else 0)
    match = _DTM.match(text)
    if match is None:
        raise content_error(DATA_TYPE_ERROR, "not a DTM (YYYY[MM[DD[HH[MM[SS]]]]][+/-ZZZZ])", where)
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        if month and day:
            datetime(int(year), int(month), int(day))
    except ValueError:
        raise content_error(DATA_TYPE_ERROR, "not a calendar date", where) from None
    date_text = "-".join(p for p in (year, month, day) if p)
    if date_only or hour is None or day is None:
        return date_text
    if int(hour) > 23 or int(minute or 0) > 59 or int(second or 0) > 59:
        raise content_error(DATA_TYPE_ERROR, "not a time of day", where)
    local = datetime(int(year), int(month), int(day), int(hour), int(minute or 0), int(second or 0))
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])) * sign
    else:
        delta = local.replace(tzinfo=zone).utcoffset() or timedelta(0)
    total = int(delta.total_seconds() // 60)
    sign_text = "+" if total >= 0 else "-"
    zone_text = f"{sign_text}{abs(total) // 60:02d}:{abs(total) % 60:02d}"
    frac = fraction or ""
    return f"{local.strftime('%Y-%m-%dT%H:%M:%S')}{frac}{zone_text}"


def codeable(rep: Repetition) -> JSON | None:
    """CWE/CNE/CE → CodeableConcept: primary triplet (1-3), alternate (4-6), original text (9)."""

    def comp(n: int) -> str:
        return rep[n - 1][0] if n <= len(rep) and rep[n - 1] else ""

    codings: list[JSON] = []
    for code_at, text_at, system_at in ((1, 2, 3), (4, 5, 6)):
        code, display, system_name = comp(code_at), comp(text_at), comp(system_at)
        if not code:
            continue
        coding: JSON = {"code": code}
        system = coding_system(system_name)
        if system:
            coding = {"system": system, **coding}
        if display:
            coding["display"] = display
        codings.append(coding)
    text = comp(9) or comp(2)
    if not codings and not text:
        return None
    concept: JSON = {}
    if codings:
        concept["coding"] = codings
    if text:
        concept["text"] = text
    return concept


def coding_system(name: str) -> str | None:
    """The FHIR system of a v2 coding system name (table 0396, ``HL7nnnn``, or a URL sent as is)."""
    if not name:
        return None
    if name in CODING_SYSTEMS:
        return CODING_SYSTEMS[name]
    if re.fullmatch(r"HL7\d{4}", name):
        return v2_table_system(name[3:])
    if name.startswith(("http://", "https://", "urn:")):
        return name
    return None


def code_in(concept: JSON | None, system: str) -> str | None:
    """The first code of ``system`` in a CodeableConcept."""
    for coding in (concept or {}).get("coding", ()):
        if coding.get("system") == system:
            return str(coding["code"])
    return None


def human_name(rep: Repetition) -> JSON | None:
    """XPN → HumanName: family (1.1), given (2) and middle (3), suffix (4), prefix (5), use from 7 (table 0200)."""

    def comp(n: int) -> str:
        return rep[n - 1][0] if n <= len(rep) and rep[n - 1] else ""

    name: JSON = {}
    if comp(1):
        name["family"] = comp(1)
    given = [g for g in (comp(2), comp(3)) if g]
    if given:
        name["given"] = given
    if comp(4):
        name["suffix"] = [comp(4)]
    if comp(5):
        name["prefix"] = [comp(5)]
    use = {"L": "official", "M": "maiden", "N": "nickname", "D": "usual", "A": "anonymous"}.get(comp(7))
    if use:
        name["use"] = use
    return name or None


def address(rep: Repetition) -> JSON | None:
    """XAD → Address: lines (1.1, 2), city (3), state (4), postal code (5), country (6), use/type (7)."""

    def comp(n: int) -> str:
        return rep[n - 1][0] if n <= len(rep) and rep[n - 1] else ""

    out: JSON = {}
    lines = [line for line in (comp(1), comp(2)) if line]
    if lines:
        out["line"] = lines
    for key, n in (("city", 3), ("state", 4), ("postalCode", 5), ("country", 6)):
        if comp(n):
            out[key] = comp(n)
    kind = comp(7)
    if kind in ("H", "C"):
        out["use"] = "home" if kind == "H" else "temp"
    elif kind in ("B", "O"):
        out["use"] = "work"
    elif kind == "M":
        out["type"] = "postal"
    return out or None


def contact_point(rep: Repetition) -> JSON | None:
    """XTN → ContactPoint: use (2, table 0201), equipment (3, table 0202), email (4), number (6, 7, 8) or 1."""

    def comp(n: int) -> str:
        return rep[n - 1][0] if n <= len(rep) and rep[n - 1] else ""

    use_code, equipment = comp(2), comp(3)
    if use_code == "NET" or equipment in ("Internet", "X.400") or comp(4):
        value = comp(4) or comp(1)
        return {"system": "email", "value": value} if value else None
    number = "".join(p for p in (comp(6), comp(7)) if p)
    if comp(8):
        number = f"{number} x{comp(8)}"
    value = number or comp(1)
    if not value:
        return None
    point: JSON = {"system": "fax" if equipment == "FX" else "phone", "value": value}
    use = {"PRN": "home", "WPN": "work", "ORN": "home", "VHN": "temp"}.get(use_code)
    if equipment == "CP":
        use = "mobile"
    if use:
        point["use"] = use
    return point
