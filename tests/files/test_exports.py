"""Outbound files (adapters/files/exports.py): the reconciliation file from the outbox (every plan change
in exactly one file, crash between recording and writing, between writing and completing), the POF
eligibility list and the ECM activity log from the demo's workflow data."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from adapters.files import ledger
from adapters.files.exports import RECONCILIATION, Exporter, health_networks
from adapters.files.handlers import INBOUND
from adapters.files.importer import Importer
from gateway.calaim import events
from gateway.calaim.demo import load_demo
from gateway.calaim.resources import add_months
from gateway.fhir.context import Context
from gateway.store.outbox import pending_count, release
from gateway.store.repository import StoredResource
from tests.files.conftest import POLICY
from tests.files.support import add_members, auth_row, cin, decided_referral, write_file

DAY = date(2025, 1, 6)
QUEUE = "calaim.authorization>files"


def test_the_reconciliation_queue_gets_the_plans_authorizations_only() -> None:
    """An HN's own authorization (responsible party ``hn``) is not sent back to it, so its event has no
    ``calaim.authorization>files`` row; the county's RRI still gets it for a county referral."""
    stored = StoredResource(1, "CoverageEligibilityResponse", "a-1", 2, 0, False, b"{}", "PUT")
    hn, plan = {"responsibleParty": "hn"}, {"responsibleParty": "plan"}
    assert events.events_of(events.AUTHORIZATION, stored=stored, payload=hn, county=False) == []
    (county,) = events.events_of(events.AUTHORIZATION, stored=stored, payload=hn, county=True)
    assert county.topic == "calaim.authorization>hl7v2" and county.payload["version"] == 2
    assert [e.topic for e in events.events_of(events.AUTHORIZATION, stored=stored, payload=plan, county=False)] == [
        QUEUE
    ]
    assert events.consumers(events.AUTHORIZATION, county=False, hn_owned=True) == ()
    assert events.consumers(events.REFERRAL_STATUS, county=True, hn_owned=True) == (events.HL7V2,)


def _records(path: Path) -> list[list[str]]:
    return [line.split("|") for line in path.read_text(encoding="utf-8").splitlines()]


def _decide_plan(ctx: Context, patient: str, *, decision: str = "A1") -> str:
    return decided_referral(
        ctx, POLICY, patient, authored_on="2024-05-01", period_start=date(2024, 6, 1), decision=decision
    )


def test_reconciliation_carries_every_plan_change_once(plan_ctx: Context, tmp_path: Path) -> None:
    ctx = plan_ctx
    add_members(ctx, [1, 2])
    add_members(ctx, [3], network="hn-ccn")
    for patient in ("fm-1", "fm-2", "fm-3"):
        _decide_plan(ctx, patient)
    hn_file = write_file(tmp_path / "hn.txt", "hn-authorization", [auth_row(1).values()])
    assert Importer(ctx, POLICY, INBOUND).run(hn_file).counts.applied == 1  # HN-owned: not sent back to the HN
    exporter = Exporter(ctx, POLICY, lambda party: tmp_path / party)
    written = {w.recipient: w for w in exporter.reconciliation(DAY)}
    assert set(written) == set(health_networks(POLICY))
    altamed = _records(written["hn-altamed"].path)
    assert altamed[0][:5] == ["HDR", RECONCILIATION, "1.0", "calop", "hn-altamed"] and altamed[0][6] == "1"
    assert written["hn-altamed"].path.name == "authorization-reconciliation_hn-altamed_20250106_000001.txt"
    details = [r for r in altamed if r[0] == "DTL"]
    assert sorted(r[5] for r in details) == [cin(1), cin(2)] and altamed[-1] == ["TRL", "2", "96"]
    assert all(r[15] == "plan" and r[4] == "initial" for r in details)
    assert [r[5] for r in _records(written["hn-ccn"].path) if r[0] == "DTL"] == [cin(3)]
    assert _records(written["hn-noble"].path)[1:] == [["TRL", "0", "0"]]
    assert pending_count(ctx.repo.engine, QUEUE) == 0
    again = {w.recipient: w for w in exporter.reconciliation(DAY)}
    assert again["hn-altamed"].sequence == 2 and again["hn-altamed"].rows == 0
    referral = _decide_plan(ctx, "fm-1")
    third = Exporter(ctx, POLICY, lambda party: tmp_path / party).reconciliation(DAY, networks=["hn-altamed"])
    (only,) = third
    rows = [r for r in _records(only.path) if r[0] == "DTL"]
    assert only.sequence == 3 and len(rows) == 1 and rows[0][17] == referral
    change_ids = [r[1] for w in (*written.values(), *again.values(), only) for r in _records(w.path) if r[0] == "DTL"]
    assert len(change_ids) == len(set(change_ids)) == 4


def test_a_crash_before_or_after_writing_never_loses_or_repeats_a_change(plan_ctx: Context, tmp_path: Path) -> None:
    ctx = plan_ctx
    add_members(ctx, [1, 2])
    _decide_plan(ctx, "fm-1")
    _decide_plan(ctx, "fm-2")
    crashed = Exporter(ctx, POLICY, lambda party: tmp_path / party)
    pending = crashed._claim({"hn-altamed"})
    ids = [e.id for e in pending["hn-altamed"]]
    entry = crashed._record(RECONCILIATION, "hn-altamed", DAY.isoformat(), ids)  # then the process dies
    assert not (tmp_path / "hn-altamed" / entry.name).exists()
    written = Exporter(ctx, POLICY, lambda party: tmp_path / party).reconciliation(DAY, networks=["hn-altamed"])
    assert [(w.sequence, w.rows) for w in written] == [(1, 2), (2, 0)]
    assert (tmp_path / "hn-altamed" / entry.name).exists()
    # A crash after writing, before the events were completed: they come back, are seen in a file, dropped.
    _decide_plan(ctx, "fm-2")
    crashed = Exporter(ctx, POLICY, lambda party: tmp_path / party)
    pending = crashed._claim({"hn-altamed"})
    entry = crashed._record(RECONCILIATION, "hn-altamed", DAY.isoformat(), [e.id for e in pending["hn-altamed"]])
    crashed._write(RECONCILIATION, "hn-altamed", entry, crashed._reconciliation_rows(pending["hn-altamed"]))
    for event in pending["hn-altamed"]:
        release(ctx.repo.engine, event, crashed.worker)  # its lease ran out
    after = Exporter(ctx, POLICY, lambda party: tmp_path / party).reconciliation(DAY, networks=["hn-altamed"])
    assert [(w.sequence, w.rows) for w in after] == [(4, 0)]
    assert pending_count(ctx.repo.engine, QUEUE) == 0
    assert ledger.unfinished(ctx.repo.engine, RECONCILIATION) == []


def test_eligibility_list_and_activity_log_from_the_workflow(plan_ctx: Context, tmp_path: Path) -> None:
    ctx = plan_ctx
    today = date.today()
    summary = load_demo(ctx, policy=POLICY, on=today)
    first = date.fromisoformat(f"{summary.month}-01")
    week_end = add_months(first, 1) - timedelta(days=1)
    exporter = Exporter(ctx, POLICY, lambda party: tmp_path / party)
    activity = _records(exporter.activity("hn-altamed", week_end).path)
    (member,) = [r for r in activity if r[0] == "DTL" and r[3] == "90000001A"]
    assert member[1:3] == [f"{week_end:%Y%m%d}", f"{first:%Y%m}"]
    assert member[6:] == ["8", "0", "6", "Y"]  # four documented services of 2 units: the 6-unit threshold is met
    assert activity[-1][0] == "TRL" and int(activity[-1][1]) == len(activity) - 2
    eligibility = _records(exporter.eligibility("hn-altamed", first).path)
    (row,) = [r for r in eligibility if r[0] == "DTL" and r[2] == "90000001A"]
    assert row[1] == f"{first:%Y%m}" and row[3:5] == ["Rivera", "Ana"] and row[6] == "1a"
    assert row[10] == f"{first:%Y%m%d}" and row[12].startswith("AUTH-")
    noble = [r for r in _records(exporter.eligibility("hn-noble", first).path) if r[0] == "DTL"]
    assert noble == []  # member 4 (Noble) has housing navigation, no ECM
    assert ledger.outbound_for(ctx.repo.engine, "pof-eligibility", "hn-altamed", summary.month) is not None
