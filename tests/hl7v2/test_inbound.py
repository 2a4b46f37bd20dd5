"""Inbound county messages on a real store (SQLite file and PostgreSQL): REF^I12 and ADT through the FHIR
core and the CalAIM workflow, ACK codes and ERR locations, exactly-once by the message log, charsets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from adapters.hl7v2 import messagelog
from adapters.hl7v2.processor import InboundProcessor
from gateway.calaim import events
from gateway.calaim.config import IG_BASE, SERVICE_SYSTEM
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from gateway.settings import Settings
from gateway.store.schema import conditional_key, hl7v2_message, outbox
from tests.hl7v2.support import adt, count, msa, processor_for, ref_i12, search, segments_of

CIN = f"{IG_BASE}/sid/medi-cal-cin"
MRN = f"{IG_BASE}/sid/county-hca-bhs/mrn"
TYPES = ("Patient", "ServiceRequest", "Task", "Condition", "Coverage", "Encounter")


@pytest.fixture
def processor(ctx: Context, settings: Settings) -> InboundProcessor:
    return processor_for(ctx, settings)


def send(processor: InboundProcessor, text: str, charset: str = "utf-8") -> bytes:
    acks = processor.process(text.encode(charset))
    assert len(acks) == 1
    return acks[0]


def write(ctx: Context, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = dispatch(ctx, FhirRequest(method, path, resource=body))
    assert response.status in (200, 201), response.body
    assert response.body is not None
    result: dict[str, Any] = orjson.loads(response.body)
    return result


def totals(ctx: Context) -> dict[str, int]:
    out = {t: count(ctx, t) for t in TYPES}
    with ctx.repo.connect() as conn:
        out["outbox"] = int(conn.execute(select(func.count()).select_from(outbox)).scalar_one())
    return out


def err(ack: bytes) -> list[tuple[str, str]]:
    """(ERR-2 location, ERR-3 code) of each ERR segment."""
    return [(fields[2], fields[3].split("^")[0]) for fields in segments_of(ack).get("ERR", [])]


def test_ref_i12_creates_member_referral_and_task(ctx: Context, processor: InboundProcessor) -> None:
    ack = send(processor, ref_i12("REF-1", mrn="MRN-77", referral_id="CR-900"))
    assert msa(ack) == ("AA", "REF-1")
    header = segments_of(ack)["MSH"][0]
    assert header[2:6] == ["CALAIM-GATEWAY", "CALOPTIMA", "HCA-BHS", "OCHCA"] and header[8] == "ACK^I12^ACK"

    (member,) = search(ctx, "Patient", [("identifier", f"{CIN}|91000001A")])
    assert {(i["system"], i["value"]) for i in member["identifier"]} == {(CIN, "91000001A"), (MRN, "MRN-77")}
    assert member["name"][0]["family"] == "Testmember" and member["birthDate"] == "1990-04-01"
    (referral,) = search(ctx, "ServiceRequest", [("subject", f"Patient/{member['id']}")])
    assert referral["code"]["coding"][0] == {"system": SERVICE_SYSTEM, "code": "ecm", "display": "Service"}
    assert referral["performer"][0]["reference"] == "Organization/county-hca-bhs"  # POF 3 routes to the county
    assert referral["requester"]["reference"] == "Organization/county-hca-bhs"  # PRD RP's NPI
    assert referral["identifier"] == [{"system": f"{IG_BASE}/sid/county-hca-bhs/referral-id", "value": "CR-900"}]
    assert referral["occurrencePeriod"] == {"start": "2025-03-01", "end": "2026-02-28"}
    (task,) = search(ctx, "Task", [("focus", f"ServiceRequest/{referral['id']}")])
    assert task["status"] == "requested" and task["owner"]["reference"] == "Organization/county-hca-bhs"
    (condition,) = search(ctx, "Condition", [("subject", f"Patient/{member['id']}")])
    assert referral["reasonReference"] == [{"reference": f"Condition/{condition['id']}"}]
    assert count(ctx, "Coverage") == 1

    with ctx.repo.connect() as conn:
        queued = conn.execute(select(outbox.c.topic).where(outbox.c.topic.like("%>hl7v2"))).scalars().all()
        row = conn.execute(select(hl7v2_message)).one()
    assert events.queue(events.REFERRAL_STATUS, events.HL7V2) in queued
    assert row.status == "AA" and row.control_id == "REF-1" and row.sender == "HCA-BHS|OCHCA"
    assert bytes(row.ack) == ack and f"ServiceRequest/{referral['id']}" in orjson.loads(row.resources)


def test_resend_is_acknowledged_again_and_changes_nothing(ctx: Context, processor: InboundProcessor) -> None:
    first = send(processor, ref_i12("REF-2"))
    before = totals(ctx)
    again = send(processor, ref_i12("REF-2"))
    assert again == first  # the stored ACK, byte for byte
    assert totals(ctx) == before
    (row,) = messagelog.search(ctx.repo.engine, direction="in")
    assert row.attempts == 2 and row.status == "AA"


def test_a_new_control_id_for_the_same_referral_finds_it(ctx: Context, processor: InboundProcessor) -> None:
    assert msa(send(processor, ref_i12("REF-3a", referral_id="CR-1")))[0] == "AA"
    assert msa(send(processor, ref_i12("REF-3b", referral_id="CR-1")))[0] == "AA"
    assert count(ctx, "ServiceRequest") == 1 and count(ctx, "Task") == 1 and count(ctx, "Patient") == 1


def test_new_member_conditions_and_coverage_are_not_duplicated(ctx: Context, processor: InboundProcessor) -> None:
    # The Coverage and Condition of a member the message creates skip their If-None-Exist search (nothing
    # can reference a member created in this transaction); a second DG1 with the same code in the same
    # message, and the next message for the same member, still find the first ones.
    dg1 = "DG1|1||F20.9^Schizophrenia, unspecified^I10||20241201|W\r"
    twice = ref_i12("DUP-1", referral_id="CR-D1").replace(dg1, dg1 + dg1.replace("DG1|1|", "DG1|2|"))
    assert twice.count("F20.9") == 2
    assert msa(send(processor, twice))[0] == "AA"
    with ctx.repo.connect() as conn:
        keyed = conn.execute(select(conditional_key.c.res_type)).scalars().all()
    assert "Coverage" not in keyed and "Condition" not in keyed  # plain creates: no search, no key claimed
    assert count(ctx, "Condition") == 1 and count(ctx, "Coverage") == 1  # the second DG1 matched the first
    (referral,) = search(ctx, "ServiceRequest", [("identifier", "CR-D1")])
    assert len({r["reference"] for r in referral["reasonReference"]}) == 1

    assert msa(send(processor, ref_i12("DUP-2", referral_id="CR-D2")))[0] == "AA"  # the member now exists
    assert count(ctx, "Patient") == 1 and count(ctx, "Condition") == 1 and count(ctx, "Coverage") == 1


def test_plan_member_matched_by_cin_gets_the_county_mrn(ctx: Context, processor: InboundProcessor) -> None:
    write(
        ctx,
        "PUT",
        "Patient/m-1",
        {
            "resourceType": "Patient",
            "id": "m-1",
            "identifier": [{"system": CIN, "value": "91000001A"}],
            "name": [{"family": "Planmember"}],
        },
    )
    assert msa(send(processor, ref_i12("REF-4", mrn="MRN-4")))[0] == "AA"
    (member,) = search(ctx, "Patient", [("identifier", f"{MRN}|MRN-4")])
    assert member["id"] == "m-1" and member["name"][0]["family"] == "Planmember"  # the plan's data is kept
    assert count(ctx, "Patient") == 1
    # an ADT that carries only the MRN finds the same member
    assert msa(send(processor, adt("ADT-4", cin=None, mrn="MRN-4")))[0] == "AA"
    assert count(ctx, "Patient") == 1
    (visit,) = search(ctx, "Encounter", [("subject", "Patient/m-1")])
    assert visit["status"] == "in-progress"


@pytest.mark.parametrize(
    ("message", "location", "code"),
    [
        (ref_i12("E1", service="not-a-service"), "RF1^1^3", "103"),
        (ref_i12("E2", pid="PID|1||91000001A^^^MEDI-CAL^MA"), "PID^1^5", "101"),
        (ref_i12("E3", pid="PID|1||91000001A^^^MEDI-CAL^MA||Testmember^A||19901345"), "PID^1^7", "102"),
        (ref_i12("E4", pid="PID|1||91000001A^^^MEDI-CAL^MA||Testmember^A|||X"), "PID^1^8", "103"),
        (ref_i12("E5", extra=("PRD|RT|Late",)), "PRD^2", "100"),
        (ref_i12("E6", extra=("P1D|x",)), "P1D^1", "100"),
        (ref_i12("E6b", extra=("P1|x",)), "", "100"),
        (ref_i12("E7", pid="PID|1||X-1^^^OTHER^XX||Testmember^A"), "PID^1^3", "103"),
        (ref_i12("E8", pof="", service="ecm"), "RF1^1^10", "101"),  # workflow: ECM needs a POF (422)
    ],
)
def test_content_errors_answer_ae_at_the_field(
    ctx: Context, processor: InboundProcessor, message: str, location: str, code: str
) -> None:
    ack = send(processor, message)
    assert msa(ack)[0] == "AE", ack
    assert (location, code) in err(ack), err(ack)
    assert all(n == 0 for t, n in totals(ctx).items() if t != "outbox")  # nothing applied
    (row,) = messagelog.search(ctx.repo.engine, direction="in")
    assert row.status == "AE" and row.error is not None and row.error.startswith(f"AE {err(ack)[0][1]}")


@pytest.mark.parametrize(
    ("message", "location", "code"),
    [
        (ref_i12("R1").replace("REF^I12^REF_I12", "ORU^R01^ORU_R01"), "MSH^1^9^^1", "200"),
        (adt("R2").replace("ADT^A01^ADT_A01", "ADT^A02^ADT_A02"), "MSH^1^9^^2", "201"),
        (ref_i12("R3", version="2.3"), "MSH^1^12", "203"),
        (ref_i12("R4", version="9.9"), "MSH^1^12", "203"),
        (ref_i12("R5").replace("|R5|P|", "|R5|T|"), "MSH^1^11", "202"),
        (ref_i12("R6", msh_tail="||||||KLINGON"), "MSH^1^18", "103"),
        (ref_i12("R7").replace("|R7|", "||"), "MSH^1^10", "101"),
        ("PID|1||X^^^^MR\r", "MSH^1", "100"),
    ],
)
def test_rejects_answer_ar(ctx: Context, processor: InboundProcessor, message: str, location: str, code: str) -> None:
    ack = send(processor, message)
    assert msa(ack)[0] == "AR", ack
    expected_echo = message.split("|")[9] if message.startswith("MSH") else ""
    assert msa(ack)[1] == expected_echo  # MSA-2 echoes MSH-10
    assert (location, code) in err(ack), err(ack)
    assert count(ctx, "Patient") == 0


def test_a_rejected_message_resent_corrected_is_applied(ctx: Context, processor: InboundProcessor) -> None:
    assert msa(send(processor, ref_i12("F1", pid="PID|1||91000001A^^^MEDI-CAL^MA")))[0] == "AE"
    assert msa(send(processor, ref_i12("F1")))[0] == "AA"
    assert count(ctx, "ServiceRequest") == 1
    (row,) = messagelog.search(ctx.repo.engine, direction="in")
    assert row.status == "AA" and row.attempts == 2


@pytest.mark.parametrize(
    ("msh18", "codec", "family"),
    [
        ("8859/1", "latin-1", "Muñoz-Peña"),
        ("UNICODE UTF-8", "utf-8", "Nguyễn"),
        ("", "utf-8", "Zoë"),
        ("ASCII", "ascii", "Doe"),
    ],
)
def test_charsets_of_msh18(ctx: Context, processor: InboundProcessor, msh18: str, codec: str, family: str) -> None:
    text = ref_i12("C1", family=family, msh_tail=f"||||||{msh18}" if msh18 else "")
    ack = send(processor, text, codec)
    assert msa(ack)[0] == "AA"
    (member,) = search(ctx, "Patient", [("identifier", f"{CIN}|91000001A")])
    assert member["name"][0]["family"] == family
    assert segments_of(ack)["MSH"][0][17:18] == ([msh18] if msh18 else [])


def test_bytes_invalid_in_the_declared_charset_are_an_error(ctx: Context, processor: InboundProcessor) -> None:
    raw = ref_i12("C2", family="Mu\u00f1oz").encode("latin-1")  # declared UTF-8, sent latin-1
    (ack,) = processor.process(raw)
    assert msa(ack)[0] == "AE" and ("MSH^1^18", "102") in err(ack)
    assert count(ctx, "Patient") == 0


def enroll(ctx: Context, patient: str, *, lead: str | None = "Practitioner/p-lcm") -> None:
    """An active ECM enrollment (calaim-enrollment) and, with ``lead``, a care team with that LCM."""
    write(
        ctx,
        "POST",
        "EpisodeOfCare",
        {
            "resourceType": "EpisodeOfCare",
            "meta": {"profile": [f"{IG_BASE}/StructureDefinition/calaim-enrollment"]},
            "status": "active",
            "type": [{"coding": [{"system": SERVICE_SYSTEM, "code": "ecm"}]}],
            "patient": {"reference": f"Patient/{patient}"},
            "managingOrganization": {"reference": "Organization/county-hca-bhs"},
            "period": {"start": "2025-01-01"},
        },
    )
    if lead:
        write(
            ctx,
            "POST",
            "CareTeam",
            {
                "resourceType": "CareTeam",
                "status": "active",
                "subject": {"reference": f"Patient/{patient}"},
                "participant": [
                    {
                        "role": [
                            {
                                "coding": [
                                    {"system": f"{IG_BASE}/CodeSystem/care-team-role", "code": "lead-care-manager"}
                                ]
                            }
                        ],
                        "member": {"reference": lead},
                    }
                ],
            },
        )


def test_adt_admission_and_discharge_of_an_ecm_member(ctx: Context, processor: InboundProcessor) -> None:
    write(
        ctx,
        "PUT",
        "Patient/m-2",
        {"resourceType": "Patient", "id": "m-2", "identifier": [{"system": CIN, "value": "91000001A"}]},
    )
    enroll(ctx, "m-2")
    assert msa(send(processor, adt("A-1", "A01")))[0] == "AA"
    (visit,) = search(ctx, "Encounter", [("subject", "Patient/m-2")])
    assert visit["status"] == "in-progress" and visit["class"]["code"] == "IMP"
    assert visit["period"] == {"start": "2025-03-10T08:15:00-07:00"}  # local time in the plan's zone (PDT)
    (task,) = search(ctx, "Task", [("focus", f"Encounter/{visit['id']}")])
    assert task["owner"] == {"reference": "Practitioner/p-lcm"} and task["for"] == {"reference": "Patient/m-2"}
    assert "admission" in task["description"]

    assert msa(send(processor, adt("A-2", "A08")))[0] == "AA"  # an update: no new Task
    assert msa(send(processor, adt("A-3", "A03", discharge="20250314120000")))[0] == "AA"
    (visit,) = search(ctx, "Encounter", [("subject", "Patient/m-2")])
    assert visit["status"] == "finished" and visit["period"]["end"] == "2025-03-14T12:00:00-07:00"
    tasks = search(ctx, "Task", [("focus", f"Encounter/{visit['id']}")])
    assert sorted("discharge" in t["description"] for t in tasks) == [False, True]
    (condition,) = search(ctx, "Condition", [("encounter", f"Encounter/{visit['id']}")])
    assert condition["code"]["coding"][0]["code"] == "F31.9"


def test_adt_for_a_member_not_in_ecm_makes_no_task(ctx: Context, processor: InboundProcessor) -> None:
    assert msa(send(processor, adt("A-9", "A04", patient_class="E")))[0] == "AA"
    (visit,) = search(ctx, "Encounter", [("identifier", f"{IG_BASE}/sid/county-hca-bhs/visit-number|V-1")])
    assert visit["status"] == "arrived" and visit["class"]["code"] == "EMER"
    assert count(ctx, "Task") == 0


def test_lead_care_manager_falls_back_to_the_ecm_provider(ctx: Context, processor: InboundProcessor) -> None:
    write(
        ctx,
        "PUT",
        "Patient/m-3",
        {"resourceType": "Patient", "id": "m-3", "identifier": [{"system": CIN, "value": "91000001A"}]},
    )
    enroll(ctx, "m-3", lead=None)
    assert msa(send(processor, adt("A-5", "A01")))[0] == "AA"
    (task,) = search(ctx, "Task", [("patient", "Patient/m-3")])
    assert task["owner"] == {"reference": "Organization/county-hca-bhs"}


def test_enhanced_mode_sends_accept_and_application_acks(ctx: Context, processor: InboundProcessor) -> None:
    both = processor.process(ref_i12("H1", msh_tail="|||AL|AL|||UNICODE UTF-8").encode())
    assert [msa(a) for a in both] == [("CA", "H1"), ("AA", "H1")]
    errors_only = processor.process(ref_i12("H2", msh_tail="|||NE|ER|||UNICODE UTF-8").encode())
    assert errors_only == []  # success, and the sender asked for error acknowledgements only
    failed = processor.process(ref_i12("H3", service="x", msh_tail="|||ER|ER|||UNICODE UTF-8").encode())
    assert [msa(a)[0] for a in failed] == ["AE"]  # stored (no CE), the application error is reported
    assert count(ctx, "ServiceRequest") == 1


def test_message_log_search_and_replay(ctx: Context, processor: InboundProcessor, settings: Settings) -> None:
    send(processor, ref_i12("L1"))
    send(processor, ref_i12("L2", service="nope"))
    failed = messagelog.search(ctx.repo.engine, status="AE")
    assert [r.control_id for r in failed] == ["L2"]
    row = messagelog.get(ctx.repo.engine, failed[0].id)
    assert row is not None and row.raw is not None and b"L2" in row.raw and row.ack is not None

    from click.testing import CliRunner

    from gateway.cli import main

    env = {"CALAIM_DATABASE_URL": settings.database_url}
    applied = messagelog.search(ctx.repo.engine, status="AA")[0]
    result = CliRunner().invoke(main, ["mllp", "replay", str(applied.id)], env=env)
    assert result.exit_code == 0, result.output
    assert "AA\tunchanged" in result.output
    assert count(ctx, "ServiceRequest") == 1
    listing = CliRunner().invoke(main, ["mllp", "log", "--status", "AE"], env=env)
    assert "L2" in listing.output and "AE 103 RF1^1^3" in listing.output
