"""The layouts as data and the pure mapping functions of mappings/files: values, records, round trips,
and the FHIR they build checked against R4 and the CalAIM profiles (no store involved)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from gateway.calaim import config, resources
from gateway.calaim.policy import Policy
from mappings.files import vocabulary
from mappings.files.authorization import (
    AuthorizationRow,
    Refs,
    reconciliation_rows,
    request_of,
    response_of,
    row_of_response,
)
from mappings.files.layout import (
    Column,
    FieldError,
    Header,
    Totals,
    Trailer,
    Value,
    format_detail,
    format_header,
    format_trailer,
    format_value,
    layout,
    layouts,
    npi_valid,
    parse_detail,
    parse_header,
    parse_trailer,
    parse_value,
)
from mappings.files.outbound import activity_parts, activity_row, eligibility_row
from mappings.files.provider_returns import enrollment_of, outreach_of, outreach_units, task_move
from tests.calaim.support import assert_emitted_valid
from tests.files.support import auth_row, cin

POLICY = Policy.load()


def test_every_layout_is_complete_data() -> None:
    found = layouts()
    expected = {
        "hn-authorization",
        "authorization-reconciliation",
        "pof-eligibility",
        "ecm-activity-log",
        "return-transmission",
        "outreach-tracker",
        "error-report",
    }
    assert set(found) == expected
    types = {"string", "code", "codes", "integer", "date", "month", "flag", "cin", "npi", "tin", "phone", "zip"}
    for spec in found.values():
        assert spec.version and spec.description and spec.frequency
        assert len(set(spec.names)) == len(spec.names), spec.id
        assert spec.key in spec.names and set(spec.control_totals) <= set(spec.names)
        for column in spec.columns:
            assert column.type in types, (spec.id, column.name)
            assert column.fhir, (spec.id, column.name)
            assert column.type not in ("code", "codes") or column.values or column.value_set or column.max_length


def test_the_rtf_and_otf_keep_the_observed_column_order() -> None:
    rtf = layout("return-transmission").names
    assert rtf[:5] == ("MCP_ID", "MCP_NAME", "MEMBER_CIN", "MEMBER_LAST_NAME", "MEMBER_FIRST_NAME")
    assert rtf[-3:] == ("REFERRAL_STATUS", "REFERRAL_STATUS_DATE", "LOOP_CLOSURE_REASON")
    assert len(rtf) == 41
    otf = layout("outreach-tracker").names
    assert otf == (
        "MCP_ID",
        "MCP_NAME",
        "PROVIDER_NAME",
        "PROVIDER_NPI",
        "PROVIDER_TIN",
        "CLIENT_NAME",
        "MEMBER_CIN",
        "PROVIDER_TYPE",
        "OUTREACH_DATE",
        "OUTREACH_METHOD",
        "OUTREACH_SUCCESSFUL",
        "OUTREACH_MINUTES",
    )


def test_vocabulary_names_what_the_workflow_names() -> None:
    assert vocabulary.IG_BASE == config.IG_BASE
    assert vocabulary.SERVICE_SYSTEM == config.SERVICE_SYSTEM
    assert vocabulary.HCPCS_SYSTEM == config.HCPCS_SYSTEM
    assert vocabulary.X12_306_SYSTEM == config.X12_306_SYSTEM
    assert vocabulary.AUTHORIZATION_NUMBER_SYSTEM == resources.AUTHORIZATION_NUMBER_SYSTEM
    assert vocabulary.PROFILE_AUTHORIZATION == resources.PROFILE_AUTHORIZATION
    assert vocabulary.PROFILE_AUTH_REQUEST == resources.PROFILE_AUTH_REQUEST
    assert vocabulary.EXT_UNITS == resources.EXT_UNITS
    assert vocabulary.EXT_DECISION == resources.EXT_DECISION
    assert vocabulary.EXT_HEALTH_NETWORK == resources.EXT_HEALTH_NETWORK
    assert vocabulary.REFERRAL_STATUS_SYSTEM == resources.REFERRAL_STATUS_SYSTEM


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("date", "20240229", date(2024, 2, 29)),
        ("month", "202402", date(2024, 2, 1)),
        ("integer", "48", 48),
        ("flag", "Y", True),
        ("flag", "N", False),
        ("cin", "91234567A", "91234567A"),
        ("npi", "1999999026", "1999999026"),
        ("zip", "927011234", "927011234"),
        ("phone", "7145550100", "7145550100"),
    ],
)
def test_values_round_trip(kind: str, text: str, value: Any) -> None:
    column = Column("X", kind, True, "")
    assert parse_value(column, text) == value
    assert format_value(column, value) == text


@pytest.mark.parametrize(
    ("kind", "text", "reason"),
    [
        ("date", "20230230", "exists"),
        ("date", "2023-02-01", "YYYYMMDD"),
        ("integer", "-3", "whole number"),
        ("integer", "4.5", "whole number"),
        ("flag", "yes", "Y or N"),
        ("cin", "1234", "CIN"),
        ("npi", "1999999027", "check digit"),
        ("tin", "12345", "9 digits"),
    ],
)
def test_bad_values_say_why_without_the_value(kind: str, text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        parse_value(Column("X", kind, True, ""), text)
    assert text not in str(caught.value)


def test_codes_and_required() -> None:
    decision = layout("hn-authorization").column("DECISION")
    assert parse_value(decision, "A1") == "A1"
    with pytest.raises(ValueError, match="not one of"):
        parse_value(decision, "Z9")
    with pytest.raises(ValueError, match="required"):
        parse_value(decision, "")
    pof = layout("pof-eligibility").column("POF")
    assert parse_value(pof, "1a;3") == ("1a", "3")
    assert format_value(pof, ("1a", "3")) == "1a;3"


def test_npi_check_digit_of_the_configured_organizations() -> None:
    npis = [i["value"] for o in POLICY.organizations.values() for i in o["identifier"] if "npi" in i["system"]]
    assert npis and all(npi_valid(n) for n in npis)
    assert not npi_valid("1234567890")


def test_header_and_trailer_round_trip() -> None:
    header = Header("hn-authorization", "1.0", "hn-altamed", "calop", date(2025, 1, 6), 42)
    assert parse_header(format_header(header)) == header
    spec = layout("hn-authorization")
    assert parse_trailer(spec, format_trailer(3, (96,))) == Trailer(3, (96,))
    for bad in (["DTL", "x"], ["HDR", "a", "b"], ["HDR", "a", "1.0", "s", "r", "20250106", "x"]):
        with pytest.raises(ValueError):
            parse_header(bad)
    with pytest.raises(ValueError, match="fields"):
        parse_trailer(spec, ["TRL", "3"])


def test_detail_records_report_every_bad_column_and_wrong_counts() -> None:
    spec = layout("hn-authorization")
    good = format_detail(spec, auth_row(1).values())[1:]
    values, errors = parse_detail(spec, good, 5)
    assert errors == [] and AuthorizationRow.of(values) == auth_row(1)
    bad = list(good)
    bad[spec.names.index("START_DATE")] = "20221341"
    bad[spec.names.index("DECISION")] = "ZZ"
    _, errors = parse_detail(spec, bad, 7)
    assert [(e.row, e.column, e.code) for e in errors] == [(7, "DECISION", "value"), (7, "START_DATE", "format")]
    _, errors = parse_detail(spec, good[:-1], 8)
    assert errors == [FieldError(8, "", "columns", "12 columns where layout hn-authorization 1.0 has 13")]


def test_totals_check_count_and_control_total() -> None:
    spec = layout("hn-authorization")
    totals = Totals(spec)
    totals.add(auth_row(1).values())
    totals.add(auth_row(2, units=2).values())
    assert totals.trailer() == Trailer(2, (50,))
    assert totals.check(Trailer(2, (50,)), 9) == []
    problems = totals.check(Trailer(3, (49,)), 9)
    assert [(p.row, p.column, p.code) for p in problems] == [(9, "", "trailer"), (9, "UNITS", "trailer")]


def _refs(row: AuthorizationRow, provider: str | None = "hn-altamed") -> Refs:
    return Refs(
        patient_id="fm-1",
        coverage_id="fcov-1",
        referral_id="ref-1",
        plan=POLICY.org("calop"),
        provider=POLICY.org(provider) if provider else None,
        notice_owner=None,
        service_display=POLICY.display(config.SERVICE_SYSTEM, row.service),
        decision_display=POLICY.decision_display(row.decision),
        kind_display=POLICY.display(resources.KIND_SYSTEM, row.kind),
        party="hn",
        party_display=POLICY.display(config.RESPONSIBLE_PARTY_SYSTEM, "hn"),
        outcome="complete",
        certified=row.decision in ("A1", "A2", "A6"),
    )


@pytest.mark.parametrize(
    "row",
    [
        auth_row(1),
        auth_row(2, action="CHG", units=24, reason="Units reduced", decision="A6"),
        auth_row(3, action="TRM", end=date(2023, 2, 28), reason="Services received"),
        auth_row(4, service="housing-transition-navigation", hcpcs="H0043", modifier="U6", units=None),
    ],
)
def test_authorization_rows_round_trip_through_fhir(row: AuthorizationRow) -> None:
    refs = _refs(row)
    response = response_of(row, refs, request_id="req-1")
    request = request_of(row, refs)
    assert row_of_response(response, cin=row.cin, provider_npi=row.provider_npi) == row
    for resource in (response, request):
        resource["id"] = "x"
        assert_emitted_valid(resource)
    assert response["preAuthRef"] == row.number
    assert response["insurance"][0]["benefitPeriod"] == {"start": row.start.isoformat(), "end": row.end.isoformat()}  # type: ignore[union-attr]


def test_a_row_without_certification_has_no_period() -> None:
    row = auth_row(5, decision="A3", reason="Not eligible", start=None, end=None, hcpcs=None, modifier=None, units=None)
    response = response_of(row, _refs(row), request_id="req-1")
    assert "benefitPeriod" not in response["insurance"][0] and response["insurance"][0]["inforce"] is False
    assert row_of_response(response, cin=row.cin, provider_npi=None) == row


def test_reconciliation_rows_of_an_event() -> None:
    payload = {
        "resource": "CoverageEligibilityResponse/abc",
        "version": 2,
        "authorization": "AUTH-20250106-XYZ",
        "request": "CoverageEligibilityRequest/r1",
        "referral": "ServiceRequest/s1",
        "patient": "Patient/p1",
        "service": "ecm",
        "decision": "A1",
        "kind": "initial",
        "responsibleParty": "plan",
        "healthNetwork": "Organization/hn-altamed",
        "noticeOfActionOwner": None,
        "provider": "Organization/hn-altamed",
        "period": {"start": "2025-01-06", "end": "2026-01-05"},
        "lines": [
            {"code": "G9012", "modifiers": ["U1"], "units": 48},
            {"code": "G9008", "modifiers": ["U1"], "units": 2},
        ],
        "decidedOn": "2025-01-06",
    }
    rows = reconciliation_rows(payload, cin=cin(1), provider_npi="1999999026", notice_npi=None)
    assert [(r["LINE_NO"], r["HCPCS"], r["UNITS"]) for r in rows] == [(1, "G9012", 48), (2, "G9008", 2)]
    assert rows[0]["CHANGE_ID"] == "CoverageEligibilityResponse/abc/_history/2"
    assert rows[0]["START_DATE"] == date(2025, 1, 6) and rows[0]["REFERRAL_ID"] == "s1"
    spec = layout("authorization-reconciliation")
    for row in rows:
        values, errors = parse_detail(spec, format_detail(spec, row)[1:], 2)
        assert errors == [] and values == row
    assert len(reconciliation_rows({**payload, "lines": []}, cin=cin(1), provider_npi=None, notice_npi=None)) == 1


def test_eligibility_and_activity_rows() -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": vocabulary.CIN_SYSTEM, "value": cin(7)}],
        "name": [{"family": "Filemember7", "given": ["Test"]}],
        "birthDate": "1980-01-01",
        "extension": [{"url": vocabulary.EXT_POF, "valueCoding": {"system": vocabulary.POF_SYSTEM, "code": "2"}}],
    }
    authorization = {"preAuthRef": "N1", "insurance": [{"benefitPeriod": {"start": "2025-01-01", "end": "2025-12-31"}}]}
    row = eligibility_row(
        month=date(2025, 3, 15),
        patient=patient,
        referral=None,
        authorization=authorization,
        network_npi="1999999026",
        provider_npi="1999999026",
        provider_name="AltaMed Health Services",
    )
    spec = layout("pof-eligibility")
    values, errors = parse_detail(spec, format_detail(spec, row)[1:], 2)
    assert errors == [] and values == row and row["POF"] == ("2",) and row["REPORTING_MONTH"] == date(2025, 3, 1)
    answer = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "activity",
                "part": [
                    {"name": "patient", "valueReference": {"reference": "Patient/p1"}},
                    {"name": "organization", "valueReference": {"reference": "Organization/hn-altamed"}},
                    {"name": "month", "valueString": "2025-03"},
                    {"name": "units", "valueInteger": 7},
                    {"name": "threshold", "valueInteger": 6},
                    {"name": "thresholdMet", "valueBoolean": True},
                ],
            }
        ],
    }
    (part,) = activity_parts(answer)
    assert part["patient"] == "p1" and part["organization"] == "hn-altamed"
    activity = activity_row(
        week_ending=date(2025, 3, 9), activity=part, cin=cin(1), provider_npi=None, provider_name=None
    )
    spec = layout("ecm-activity-log")
    values, errors = parse_detail(spec, format_detail(spec, activity)[1:], 2)
    assert (
        errors == []
        and values == activity
        and activity["THRESHOLD_MET"] is True
        and activity["UNAUTHORIZED_UNITS"] == 0
    )


def test_rtf_and_otf_records_become_valid_resources() -> None:
    provider = POLICY.org("hn-altamed")
    rtf: dict[str, Value] = {
        "ECM_STATUS": "DISCONTINUED",
        "ECM_START_DATE": date(2025, 1, 1),
        "ECM_END_DATE": None,
        "DISCONTINUATION_DATE": date(2025, 3, 31),
    }
    episode = enrollment_of(rtf, patient_id="fm-1", provider=provider, referral_id="ref-1")
    assert episode["status"] == "finished" and episode["period"] == {"start": "2025-01-01", "end": "2025-03-31"}
    assert enrollment_of(rtf, patient_id="fm-1", provider=provider, referral_id=None)["id"] == episode["id"]
    otf: dict[str, Value] = {
        "PROVIDER_NPI": "1999999026",
        "MEMBER_CIN": cin(1),
        "OUTREACH_DATE": date(2025, 3, 4),
        "OUTREACH_METHOD": "PHONE",
        "OUTREACH_SUCCESSFUL": False,
        "OUTREACH_MINUTES": 22,
    }
    procedure = outreach_of(
        otf,
        patient_id="fm-1",
        provider=provider,
        referral_id="ref-1",
        method_display="telephone",
        service_display="ECM",
    )
    assert procedure["extension"][0]["valueUnsignedInt"] == 1 and procedure["outcome"] == {"text": "unsuccessful"}
    assert [outreach_units(m) for m in (0, 7, 8, 22, 23, 60)] == [0, 0, 1, 1, 2, 4]
    assert task_move("OUTREACH_INITIATED", None).stated == "outreach-initiated"
    assert task_move("LOOP_CLOSED", "member-declined").status == "cancelled"
    assert task_move("LOOP_CLOSED", "services-received").status == "completed"
    assert task_move("DECLINED", None).status == "rejected"
    import orjson

    from gateway.fhir.profiles import validate_against_profile
    from gateway.fhir.validation import validate_resource

    for resource in (episode, procedure):
        resource = orjson.loads(orjson.dumps(resource))
        assert [i for i in validate_resource(resource) if i.severity == "error"] == []
        profile = resource["meta"]["profile"][0]
        assert [i for i in validate_against_profile(resource, profile) if i.severity == "error"] == []
