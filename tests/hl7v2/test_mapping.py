"""The pure v2 ↔ FHIR maps (no store): header reading, escapes, data types, the REF^I12 and ADT Bundles,
ACKs that parse with python-hl7 and hl7apy, and the emitted resources valid against R4 and the profiles."""

from __future__ import annotations

import json
import re
from typing import Any
from zoneinfo import ZoneInfo

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from gateway.fhir.validation import validate_resource
from mappings.hl7v2.ack import build_ack, wants
from mappings.hl7v2.adt import map_adt
from mappings.hl7v2.bundle import Mapped
from mappings.hl7v2.datatypes import dtm
from mappings.hl7v2.er7 import HeaderError, escape, read_header, unescape
from mappings.hl7v2.errors import Location, Problem, V2Error
from mappings.hl7v2.message import parse
from mappings.hl7v2.profiles import MappingConfig, check, kind_of
from mappings.hl7v2.ref_i12 import map_ref_i12
from tests.calaim.support import SCHEMA_VALIDATORS, assert_emitted_valid
from tests.hl7v2.support import COUNTY_NPI, adt, ref_i12

CONFIG = MappingConfig(organizations_by_npi={COUNTY_NPI: "county-hca-bhs"})


def mapped(text: str) -> Mapped:
    header = read_header(text.encode())
    message = parse(text, header)
    kind = kind_of(message)
    check(message, kind)
    return (map_ref_i12 if kind == "REF" else map_adt)(message, CONFIG)


def test_header_is_read_from_bytes_with_any_delimiters() -> None:
    header = read_header(b"MSH#*%!$#APP#FAC#GW#PLAN#20250101##ADT*A01#X1#P#2.5.1######8859/1\r")
    assert (header.message_type, header.trigger_event, header.control_id, header.charset) == (
        "ADT",
        "A01",
        "X1",
        "8859/1",
    )
    assert header.delimiters.component == "*" and header.sender == "APP|FAC"
    with pytest.raises(HeaderError):
        read_header(b"PID|1\r")
    with pytest.raises(HeaderError):
        read_header(b"MSH|^^^^|x\r")


def test_escapes_round_trip() -> None:
    text = "a|b^c&d~e\\f\nline"
    assert escape(text) == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\line"
    assert unescape(escape(text)) == text
    assert unescape("caf\\XE9\\") == "café"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20250115", "2025-01-15"),
        ("202501", "2025-01"),
        ("20250115083000", "2025-01-15T08:30:00-08:00"),  # PST in January
        ("20250715083000", "2025-07-15T08:30:00-07:00"),  # PDT in July
        ("20250115083000+0000", "2025-01-15T08:30:00+00:00"),
        ("20250115083000.25-0500", "2025-01-15T08:30:00.25-05:00"),
    ],
)
def test_dtm_to_fhir(value: str, expected: str) -> None:
    text = f"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5.1\rEVN|A01|{value}\r"
    segment = parse(text, read_header(text.encode())).first("EVN")
    assert segment is not None
    assert dtm(segment, 2, zone=ZoneInfo("America/Los_Angeles")) == expected


def test_ref_i12_bundle_is_valid_r4_and_claims_the_profiles() -> None:
    result = mapped(ref_i12("M1", mrn="MRN-1"))
    types = [e["resource"]["resourceType"] for e in result.bundle["entry"]]
    assert types == ["Patient", "Coverage", "Condition", "ServiceRequest"]
    assert result.bundle["entry"][0]["request"]["ifNoneExist"].startswith("identifier=")
    for entry in result.bundle["entry"]:
        resource = _resolved(entry["resource"], result)
        if resource["resourceType"] in SCHEMA_VALIDATORS:
            assert_emitted_valid(resource)
        else:
            assert [i for i in validate_resource(resource) if i.severity == "error"] == []
    assert str(result.source_of("ServiceRequest.code.coding[0]")) == "RF1^1^3"
    assert result.source_of("Patient.gender") == Location("PID", 1)


def test_the_same_message_maps_to_the_same_bundle() -> None:
    assert mapped(ref_i12("M2")).bundle == mapped(ref_i12("M2")).bundle


def test_adt_bundle() -> None:
    result = mapped(adt("M3", "A03", discharge="20250314120000"))
    patient, encounter, _condition = (e["resource"] for e in result.bundle["entry"])
    assert encounter["status"] == "finished" and encounter["period"]["end"] == "2025-03-14T12:00:00-07:00"
    assert result.bundle["entry"][1]["request"]["url"].startswith("Encounter?identifier=")
    assert result.transitional_care == "A03"
    for resource in (patient, encounter):
        assert_emitted_valid(_resolved(resource, result))


def _resolved(resource: dict[str, Any], mapped: Mapped) -> dict[str, Any]:
    """urn:uuid references replaced by literal ones of the entries' types (what the store sees)."""
    types = {e["fullUrl"]: e["resource"]["resourceType"] for e in mapped.bundle["entry"]}
    text = re.sub(r"urn:uuid:[0-9a-f-]{36}", lambda m: f"{types[m.group(0)]}/x-1", json.dumps(resource))
    result: dict[str, Any] = json.loads(text)
    return result


def test_ack_parses_with_python_hl7_and_hl7apy() -> None:
    header = read_header(ref_i12("M4").encode())
    problems = [Problem("101", "PID-5 is required", Location("PID", 1, 5))]
    text = build_ack(header, code="AE", control_id="ACK-1", timestamp="20250301101501-0800", problems=problems)
    parsed = hl7.parse(text)
    assert str(parsed.segment("MSA")[1]) == "AE" and str(parsed.segment("MSA")[2]) == "M4"
    assert str(parsed.segment("ERR")[2]) == "PID^1^5"
    strict = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert strict.validate()
    assert strict.err.err_3.to_er7() == "101^Required field missing^HL70357"


def test_ack_conditions_of_table_0155() -> None:
    assert wants("AL", "CA") and wants("", "AE") and not wants("NE", "AA")
    assert wants("ER", "AE") and not wants("ER", "AA") and wants("SU", "AA") and not wants("SU", "AR")


def test_errors_summarize_without_values() -> None:
    error = V2Error("AE", [Problem("102", "not a DTM", Location("PID", 1, 7))])
    assert error.summary == "AE 102 PID^1^7"
