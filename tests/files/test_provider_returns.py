"""Return transmission files and outreach tracker files from an ECM provider (adapters/files/provider_returns.py):
enrollment, closed-loop Task moves through the workflow's rules, outreach attempts counted in $ecm-activity,
and the rows a provider may not send."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import orjson

from adapters.files.importer import Importer
from gateway.calaim.resources import find
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from tests.calaim.support import assert_emitted_valid
from tests.files.conftest import POLICY
from tests.files.support import add_members, cin, decided_referral, write_file

ALTAMED_NPI, PLAN_NPI = "1999999026", "1999999018"
MONTH_START = date(2025, 3, 1)


def rtf(key: int, **values: Any) -> dict[str, Any]:
    """An RTF record of AltaMed for member ``key``."""
    row: dict[str, Any] = {
        "MCP_ID": PLAN_NPI,
        "MCP_NAME": "CalOptima Health",
        "MEMBER_CIN": cin(key),
        "ECM_STATUS": "ENROLLED",
        "ECM_START_DATE": MONTH_START,
        "RTF_PRODUCTION_DATE": date(2025, 4, 5),
        "PROVIDER_NAME": "AltaMed Health Services",
        "PROVIDER_NPI": ALTAMED_NPI,
    }
    row.update(values)
    return row


def otf(key: int, day: int, minutes: int, **values: Any) -> dict[str, Any]:
    """An OTF record of AltaMed for member ``key``."""
    row: dict[str, Any] = {
        "MCP_ID": PLAN_NPI,
        "PROVIDER_NPI": ALTAMED_NPI,
        "MEMBER_CIN": cin(key),
        "OUTREACH_DATE": MONTH_START.replace(day=day),
        "OUTREACH_METHOD": "PHONE",
        "OUTREACH_SUCCESSFUL": True,
        "OUTREACH_MINUTES": minutes,
    }
    row.update(values)
    return row


def _ecm_member(ctx: Context, key: int) -> str:
    """A member of AltaMed with an ECM referral routed to AltaMed and certified from 2025-03-01."""
    add_members(ctx, [key])
    return decided_referral(ctx, POLICY, f"fm-{key}", authored_on="2025-02-20", period_start=MONTH_START)


def _task(ctx: Context, referral_id: str) -> dict[str, Any]:
    with ctx.repo.connect() as conn:
        (task,) = find(ctx, conn, "Task", [("focus", f"ServiceRequest/{referral_id}")], limit=2)
    return task


def _report(path: Path | None) -> list[list[str]]:
    assert path is not None
    return [line.split("|") for line in path.read_text(encoding="utf-8").splitlines()][1:-1]


def test_rtf_updates_enrollment_and_the_closed_loop(importer: Importer, plan_ctx: Context, tmp_path: Path) -> None:
    ctx = plan_ctx
    referrals = {key: _ecm_member(ctx, key) for key in (1, 2, 3)}
    add_members(ctx, [4])  # no referral with AltaMed
    rows = [
        rtf(1, REFERRAL_STATUS="OUTREACH_INITIATED", REFERRAL_STATUS_DATE=date(2025, 3, 3)),
        rtf(2, ECM_STATUS="DISCONTINUED", DISCONTINUATION_DATE=date(2025, 3, 20), REFERRAL_STATUS="LOOP_CLOSED"),
        rtf(3, REFERRAL_STATUS="LOOP_CLOSED", LOOP_CLOSURE_REASON="services-received"),
        rtf(4),
        rtf(1, PROVIDER_NPI="1999999034"),
    ]
    path = write_file(tmp_path / "rtf.txt", "return-transmission", rows, sender="hn-altamed")
    result = importer.run(path, sender="hn-altamed", report_dir=tmp_path)
    assert (result.counts.applied, result.counts.rejected) == (2, 3)
    problems = [(r[2], r[3], r[4]) for r in _report(result.report)]
    assert problems == [
        ("3", "LOOP_CLOSURE_REASON", "required"),
        ("5", "MEMBER_CIN", "not-owned"),
        ("6", "PROVIDER_NPI", "not-owned"),
    ]
    first = _task(ctx, referrals[1])
    assert first["status"] == "in-progress" and first["businessStatus"]["coding"][0]["code"] == "outreach-initiated"
    closed = _task(ctx, referrals[3])
    assert closed["status"] == "completed" and closed["businessStatus"]["coding"][0]["code"] == "loop-closed"
    with ctx.repo.connect() as conn:
        episodes = find(ctx, conn, "EpisodeOfCare", [("patient", "Patient/fm-1")], limit=5)
    (episode,) = episodes
    assert episode["status"] == "active" and episode["period"] == {"start": "2025-03-01"}
    assert episode["managingOrganization"]["reference"] == "Organization/hn-altamed"
    for resource in (first, closed):
        assert_emitted_valid(resource)
    again = importer.run(write_file(tmp_path / "rtf2.txt", "return-transmission", rows[:1], sequence=2))
    assert (again.counts.applied, again.counts.unchanged) == (0, 1)


def test_otf_records_outreach_that_counts_toward_the_threshold(
    importer: Importer, plan_ctx: Context, tmp_path: Path
) -> None:
    ctx = plan_ctx
    _ecm_member(ctx, 1)
    rows = [otf(1, 3, 30), otf(1, 10, 45, OUTREACH_METHOD="IN_PERSON"), otf(1, 17, 10, OUTREACH_SUCCESSFUL=False)]
    path = write_file(tmp_path / "otf.txt", "outreach-tracker", rows, sender="hn-altamed")
    result = importer.run(path, report_dir=tmp_path)
    assert (result.status, result.counts.applied, result.errors) == ("done", 3, 0)
    answer = dispatch(ctx, FhirRequest("GET", "$ecm-activity", query=[("month", "2025-03")]))
    parts = {p["name"]: p for p in orjson.loads(answer.body or b"{}")["parameter"][0]["part"]}
    assert parts["units"]["valueInteger"] == 2 + 3 + 1 and parts["thresholdMet"]["valueBoolean"] is True
    with ctx.repo.connect() as conn:
        procedures = find(ctx, conn, "Procedure", [("subject", "Patient/fm-1")], limit=10)
    assert len(procedures) == 3 and all(
        p["performer"][0]["actor"]["reference"] == "Organization/hn-altamed" for p in procedures
    )
    for procedure in procedures:
        assert_emitted_valid(procedure)
    resent = importer.run(write_file(tmp_path / "otf2.txt", "outreach-tracker", rows, sender="hn-altamed", sequence=2))
    assert (resent.counts.applied, resent.counts.unchanged) == (0, 3)


def test_only_ecm_providers_send_provider_files(importer: Importer, plan_ctx: Context, tmp_path: Path) -> None:
    path = write_file(tmp_path / "otf.txt", "outreach-tracker", [otf(1, 3, 30)], sender="cs-mercy-house")
    result = importer.run(path, report_dir=tmp_path)
    assert result.status == "rejected" and "not an ECM provider" in (result.reason or "")
