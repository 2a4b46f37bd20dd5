"""The HN daily authorization file imported into the store (adapters/files/hn_authorizations.py through
adapters/files/importer.py): adds, changes, terminations, ownership, unchanged rows, duplicate files,
bad rows reported with row, column and reason while the good rows apply, files rejected whole."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from adapters.files.hn_authorizations import HnAuthorizationHandler
from adapters.files.importer import Importer
from gateway.calaim.authorizations import Line
from gateway.calaim.decide import decide
from gateway.calaim.decision_rules import DecisionInput
from gateway.calaim.resources import body_of, find
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from gateway.store.schema import file_inbound, outbox, resource_version
from mappings.files.layout import format_detail, layout
from mappings.files.vocabulary import EXT_KIND
from tests.calaim.support import assert_emitted_valid
from tests.files.conftest import POLICY
from tests.files.support import add_members, auth_row, write_file

SPEC = layout("hn-authorization")


def _auth(ctx: Context, number: str) -> dict[str, Any] | None:
    with ctx.repo.connect() as conn:
        params = [("identifier", f"https://fhir.calaim-gateway.org/sid/authorization-number|{number}")]
        found = find(ctx, conn, "CoverageEligibilityResponse", params, limit=2)
    assert len(found) <= 1
    return found[0] if found else None


def _versions(ctx: Context, res_type: str) -> int:
    with ctx.repo.connect() as conn:
        query = select(func.count()).select_from(resource_version).where(resource_version.c.res_type == res_type)
        return int(conn.execute(query).scalar_one())


def _events(ctx: Context) -> list[dict[str, Any]]:
    """Every outbox row (any queue), as its payload: an HN's own authorizations write none (the reconciliation
    file does not send them back, and these members' referrals are not the county's)."""
    with ctx.repo.connect() as conn:
        rows = conn.execute(select(outbox.c.payload)).all()
    return [orjson.loads(r.payload) for r in rows]


def _kinds(ctx: Context, numbers: tuple[str, ...]) -> list[str]:
    """The authorization kind of every stored version of the authorizations ``numbers``."""
    with ctx.repo.connect() as conn:
        query = select(resource_version.c.body).where(resource_version.c.res_type == "CoverageEligibilityResponse")
        bodies = [orjson.loads(r.body) for r in conn.execute(query)]
    return [
        e["valueCoding"]["code"]
        for b in bodies
        if b["preAuthRef"] in numbers
        for e in b["extension"]
        if e["url"] == EXT_KIND
    ]


def _read(ctx: Context, path: str) -> dict[str, Any]:
    response = dispatch(ctx, FhirRequest("GET", path))
    body: dict[str, Any] = orjson.loads(response.body or b"{}")
    return body


def _report(path: Path | None) -> list[list[str]]:
    assert path is not None
    return [line.split("|") for line in path.read_text(encoding="utf-8").splitlines()]


def test_adds_create_the_pair_through_the_workflow(importer: Importer, plan_ctx: Context, tmp_path: Path) -> None:
    ctx = plan_ctx
    add_members(ctx, range(1, 7))
    rows = [auth_row(k).values() for k in range(1, 7)]
    result = importer.run(write_file(tmp_path / "day1.txt", "hn-authorization", rows), sender="hn-altamed")
    assert (result.status, result.counts.read, result.counts.applied, result.errors) == ("done", 6, 6, 0)
    auth = _auth(ctx, "HN-0000003")
    assert auth is not None
    assert auth["created"] == "2022-11-15" and auth["insurance"][0]["benefitPeriod"]["end"] == "2023-05-31"
    party = [e for e in auth["extension"] if e["url"].endswith("ext-responsible-party")]
    assert party[0]["valueCoding"]["code"] == "hn"
    request = _read(ctx, auth["request"]["reference"])
    referral_id = auth["extension"][3]["valueReference"]["reference"]
    referral = _read(ctx, referral_id)
    assert (
        referral["subject"] == {"reference": "Patient/fm-3"}
        and referral["identifier"][0]["value"] == "hn-altamed-HN-0000003"
    )
    with ctx.repo.connect() as conn:
        (task,) = find(ctx, conn, "Task", [("focus", referral_id)], limit=2)
    assert task["status"] == "accepted"  # A1 on the first decision, as $decide moves it
    for resource in (auth, request, referral, task):
        assert_emitted_valid(resource)
    # The HN owns these authorizations: the reconciliation file does not carry them back (so no
    # calaim.authorization>files row), and no referral is the county's (no >hl7v2 row): no outbox row at all.
    assert _events(ctx) == []


def test_unchanged_rows_and_the_same_file_twice_change_nothing(
    importer: Importer, plan_ctx: Context, tmp_path: Path
) -> None:
    ctx = plan_ctx
    add_members(ctx, range(1, 6))
    rows = [auth_row(k).values() for k in range(1, 6)]
    first = write_file(tmp_path / "day1.txt", "hn-authorization", rows)
    assert importer.run(first, sender="hn-altamed").counts.applied == 5
    before = (_versions(ctx, "CoverageEligibilityResponse"), _versions(ctx, "Task"), len(_events(ctx)))
    again = importer.run(first, sender="hn-altamed")
    assert again.status == "duplicate" and again.counts.applied == 0
    resent = importer.run(write_file(tmp_path / "day2.txt", "hn-authorization", rows, sequence=2), sender="hn-altamed")
    assert (resent.status, resent.counts.applied, resent.counts.unchanged) == ("done", 0, 5)
    after = (_versions(ctx, "CoverageEligibilityResponse"), _versions(ctx, "Task"), len(_events(ctx)))
    assert after == before


def test_a_resent_file_is_looked_up_in_blocks_and_a_changed_row_still_applies(
    importer: Importer, plan_ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records read as they are are looked up ``KNOWN_BLOCK_CHUNKS`` chunks at a time (here chunks of 4: blocks
    of 16): a re-sent file of 40 rows takes 3 look-ups and no write; one changed row in the second block
    sends that block through the chunks, where it is applied and the others stay unchanged."""
    ctx = plan_ctx
    add_members(ctx, range(1, 41))
    rows = [auth_row(k).values() for k in range(1, 41)]
    assert importer.run(write_file(tmp_path / "d1.txt", "hn-authorization", rows)).counts.applied == 40
    looked_up: list[int] = []
    known = HnAuthorizationHandler.known

    def counted(self: HnAuthorizationHandler, conn: Any, chunk: list[Any]) -> set[int]:
        looked_up.append(len(chunk))
        return known(self, conn, chunk)

    monkeypatch.setattr(HnAuthorizationHandler, "known", counted)
    before = (_versions(ctx, "CoverageEligibilityResponse"), len(_events(ctx)))
    resent = importer.run(write_file(tmp_path / "d2.txt", "hn-authorization", rows, sequence=2))
    assert (resent.status, resent.counts.applied, resent.counts.unchanged, resent.errors) == ("done", 0, 40, 0)
    assert looked_up == [16, 16, 8]
    assert (_versions(ctx, "CoverageEligibilityResponse"), len(_events(ctx))) == before
    changed = [*rows[:20], auth_row(21, action="CHG", decision="A6", units=24, reason="Units reduced").values()]
    changed += rows[21:]
    looked_up.clear()
    result = importer.run(write_file(tmp_path / "d3.txt", "hn-authorization", changed, sequence=3))
    assert (result.counts.applied, result.counts.unchanged, result.errors) == (1, 39, 0)
    assert looked_up[:2] == [16, 16] and 8 in looked_up[2:]  # the second block went through its chunks
    versions = {k: (_auth(ctx, f"HN-{k:07d}") or {}).get("meta", {}).get("versionId") for k in (1, 20, 21, 22, 40)}
    assert versions == {1: "1", 20: "1", 21: "2", 22: "1", 40: "1"}


def test_changes_and_terminations_write_new_versions(importer: Importer, plan_ctx: Context, tmp_path: Path) -> None:
    ctx = plan_ctx
    add_members(ctx, range(1, 4))
    importer.run(write_file(tmp_path / "d1.txt", "hn-authorization", [auth_row(k).values() for k in (1, 2, 3)]))
    changes = [
        auth_row(1, action="CHG", decision="A6", units=24, reason="Units reduced", decided_on=date(2022, 12, 20)),
        auth_row(2, action="TRM", end=date(2023, 2, 28), reason="Services received", decided_on=date(2023, 2, 28)),
        auth_row(3),  # unchanged
    ]
    result = importer.run(
        write_file(tmp_path / "d2.txt", "hn-authorization", [c.values() for c in changes], sequence=2)
    )
    assert (result.counts.applied, result.counts.unchanged, result.errors) == (2, 1, 0)
    changed = _auth(ctx, "HN-0000001")
    assert changed is not None and changed["meta"]["versionId"] == "2" and changed["created"] == "2022-11-15"
    assert changed["insurance"][0]["item"][0]["extension"][0]["valueUnsignedInt"] == 24
    assert changed["disposition"] == "Units reduced"
    request = _read(ctx, changed["request"]["reference"])
    assert request["meta"]["versionId"] == "2" and request["created"] == "2022-12-20"
    ended = _auth(ctx, "HN-0000002")
    assert ended is not None and ended["insurance"][0]["benefitPeriod"]["end"] == "2023-02-28"
    referral_id = ended["extension"][3]["valueReference"]["reference"]
    with ctx.repo.connect() as conn:
        (task,) = find(ctx, conn, "Task", [("focus", referral_id)], limit=2)
    assert task["status"] == "completed"
    assert _read(ctx, referral_id)["status"] == "completed"  # the closed loop closes the referral with its Task
    kinds = _kinds(ctx, ("HN-0000001", "HN-0000002"))
    assert sorted(kinds) == ["initial", "initial", "modification", "termination"] and _events(ctx) == []
    for resource in (changed, ended, task):
        assert_emitted_valid(resource)


def test_bad_rows_are_reported_and_never_stop_the_good_rows(
    importer: Importer, plan_ctx: Context, tmp_path: Path
) -> None:
    ctx = plan_ctx
    add_members(ctx, range(1, 12))
    add_members(ctx, [50], network="hn-ccn")
    bad_date = format_detail(SPEC, auth_row(2).values())[1:]
    bad_date[SPEC.names.index("START_DATE")] = "20221301"
    rows: list[Any] = [
        auth_row(1).values(),  # line 2: good
        bad_date,  # line 3: bad date
        auth_row(3, cin="99999999Z").values(),  # line 4: unknown CIN
        auth_row(4, service="not-a-service").values(),  # line 5: unknown code
        format_detail(SPEC, auth_row(5).values())[1:-2],  # line 6: wrong column count
        auth_row(6).values(),  # line 7: good
        auth_row(7, hcpcs="T2033", modifier="U6").values(),  # line 8: not a DHCS code of ECM
        auth_row(50).values(),  # line 9: another HN's member
        auth_row(9, decided_on=date(2023, 1, 2), start=date(2023, 1, 2), end=date(2023, 6, 30)).values(),  # line 10
        auth_row(10, action="CHG", number="HN-NOPE").values(),  # line 11: unknown authorization
        auth_row(11, decision="A3", start=None, end=None).values(),  # line 12: A3 needs a reason
        auth_row(8).values(),  # line 13: good
    ]
    path = write_file(tmp_path / "mixed.txt", "hn-authorization", rows, trailer=(13, 1))
    result = importer.run(path, sender="hn-altamed", report_dir=tmp_path / "reports")
    assert (result.status, result.counts.read, result.counts.applied, result.counts.rejected) == ("done", 12, 3, 9)
    assert all(_auth(ctx, f"HN-{k:07d}") is not None for k in (1, 6, 8))
    assert all(_auth(ctx, f"HN-{k:07d}") is None for k in (2, 3, 4, 5, 7, 9, 10, 11, 50))
    report = _report(result.report)
    assert report[0][:5] == ["HDR", "error-report", "1.0", "calop", "hn-altamed"]
    assert report[-1] == ["TRL", str(len(report) - 2)]
    problems = [(int(r[2]), r[3], r[4]) for r in report[1:-1]]
    assert problems == [
        (3, "START_DATE", "format"),
        (4, "MEMBER_CIN", "unknown"),
        (5, "SERVICE", "value"),
        (6, "", "columns"),
        (8, "HCPCS", "business-rule"),
        (9, "MEMBER_CIN", "not-owned"),
        (10, "DECISION_DATE", "not-owned"),
        (11, "AUTH_NUMBER", "unknown"),
        (12, "REASON", "business-rule"),
        (14, "", "trailer"),
        (14, "UNITS", "trailer"),
    ]
    assert all(r[1] == "mixed.txt" for r in report[1:-1])
    text = result.report.read_text() if result.report else ""
    assert "99999999Z" not in text and "Filemember" not in text  # reasons never quote member data


def test_a_workflow_refusal_while_writing_is_reported_alone(
    importer: Importer, plan_ctx: Context, tmp_path: Path
) -> None:
    """A member without a Population of Focus: routing the new ECM referral is refused (a hook's 422)
    inside the chunk; the chunk is redone row by row and only that row is rejected."""
    ctx = plan_ctx
    add_members(ctx, [1, 3])
    add_members(ctx, [2], pofs=())
    rows = [auth_row(k).values() for k in (1, 2, 3)]
    result = importer.run(write_file(tmp_path / "f.txt", "hn-authorization", rows), report_dir=tmp_path)
    assert (result.counts.applied, result.counts.rejected) == (2, 1)
    (problem,) = _report(result.report)[1:-1]
    assert problem[2:5] == ["3", "", "business-rule"] and "Population of Focus" in problem[5]


def test_authorizations_the_hn_does_not_own_are_refused(importer: Importer, plan_ctx: Context, tmp_path: Path) -> None:
    ctx = plan_ctx
    add_members(ctx, [1, 2])
    referral = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": "https://fhir.calaim-gateway.org/CodeSystem/calaim-service", "code": "ecm"}]},
        "subject": {"reference": "Patient/fm-2"},
        "authoredOn": "2024-05-01",
    }
    stored = dispatch(ctx, FhirRequest("POST", "ServiceRequest", resource=referral)).stored
    assert stored is not None
    inp = DecisionInput.of("A1", lines=(Line("G9012", ("U1",), 48),), period_start=date(2024, 6, 1))
    plan_auth = body_of(ctx.run_write(lambda: decide(ctx, policy=POLICY, referral_id=stored.res_id, inp=inp)))
    number = plan_auth["preAuthRef"]
    rows = [
        auth_row(2, action="CHG", number=number, units=10, decided_on=date(2022, 12, 1)).values(),
        auth_row(1).values(),
    ]
    result = importer.run(write_file(tmp_path / "f.txt", "hn-authorization", rows), report_dir=tmp_path)
    assert (result.counts.applied, result.counts.rejected) == (1, 1)
    (problem,) = _report(result.report)[1:-1]
    assert problem[2:5] == ["2", "AUTH_NUMBER", "not-owned"] and "belongs to the plan" in problem[5]
    after = _auth(ctx, number)
    assert after is not None and after["meta"]["versionId"] == "1"


def test_a_bad_header_or_encoding_rejects_the_file_whole(importer: Importer, plan_ctx: Context, tmp_path: Path) -> None:
    ctx = plan_ctx
    add_members(ctx, [1, 2])
    rows = [auth_row(1).values(), auth_row(2).values()]
    cases = {
        "unknown layout": (
            write_file(tmp_path / "a.txt", "hn-authorization", rows),
            "HDR|hn-authorization|",
            "HDR|hn-authz|",
        ),
        "old version": (write_file(tmp_path / "b.txt", "hn-authorization", rows, version="0.9"), None, None),
        "wrong receiver": (write_file(tmp_path / "c.txt", "hn-authorization", rows, receiver="hn-ccn"), None, None),
        "wrong sender": (write_file(tmp_path / "d.txt", "hn-authorization", rows, sender="hn-ccn"), None, None),
        "not an HN": (write_file(tmp_path / "e.txt", "hn-authorization", rows, sender="cs-mercy-house"), None, None),
    }
    for case, (path, old, new) in cases.items():
        if old is not None and new is not None:
            path.write_text(path.read_text().replace(old, new))
        sender = "hn-altamed" if case == "wrong sender" else None
        result = importer.run(path, sender=sender, report_dir=tmp_path / "r")
        assert (result.status, result.counts.applied) == ("rejected", 0), case
        (problem,) = _report(result.report)[1:-1]
        assert problem[2:5] == ["1", "", "header"] and "rejected whole" in problem[5], case
    latin = tmp_path / "latin.txt"
    good = write_file(tmp_path / "g.txt", "hn-authorization", rows).read_bytes()
    latin.write_bytes(good.replace(b"||\n", "||Se\u00f1or\n".encode("latin-1"), 1))
    result = importer.run(latin, report_dir=tmp_path / "r")
    assert result.status == "rejected"
    (problem,) = _report(result.report)[1:-1]
    assert problem[2:5] == ["2", "", "encoding"]
    assert _auth(ctx, "HN-0000001") is None and _versions(ctx, "CoverageEligibilityResponse") == 0
    assert importer.run(latin).status == "rejected"  # the same bytes again: refused the same way


def test_two_importers_of_one_file_never_apply_a_row_twice(plan_ctx: Context, tmp_path: Path) -> None:
    """While this import applies its first chunk, another process commits that chunk first (simulated by
    moving the ledger position from another connection): this import's chunk rolls back, it stops (busy)."""
    from adapters.files import ledger
    from adapters.files.handlers import INBOUND
    from adapters.files.hn_authorizations import HnAuthorizationHandler
    from adapters.files.importer import Outcome, Row
    from gateway.store.database import write_transaction

    ctx = plan_ctx
    add_members(ctx, range(1, 5))
    path = write_file(tmp_path / "f.txt", "hn-authorization", [auth_row(k).values() for k in range(1, 5)])

    class Raced(HnAuthorizationHandler):
        def apply(self, ctx: Context, rows: list[Row]) -> list[Outcome]:
            with write_transaction(plan_ctx.repo.engine) as conn:
                entry = conn.execute(select(file_inbound.c.id, file_inbound.c.position)).one()
                ledger.advance(conn, entry.id, expected=entry.position, position=rows[-1].line, counts=ledger.Counts())
            return super().apply(ctx, rows)

    if plan_ctx.repo.sqlite:
        pytest.skip("SQLite has one writer: another connection waits for this transaction, no race to lose")
    importer = Importer(ctx, POLICY, {**INBOUND, "hn-authorization": Raced}, chunk_rows=2)
    result = importer.run(path)
    assert result.status == "busy" and result.counts.applied == 0
    assert _versions(ctx, "CoverageEligibilityResponse") == 0


def test_a_row_is_unchanged_only_while_its_authorization_is(
    importer: Importer, plan_ctx: Context, tmp_path: Path
) -> None:
    """The re-import fast path (file_record) trusts a row's digest only while the authorization is still at
    the version that row left: changed through another channel, the resent row is compared and applied."""
    ctx = plan_ctx
    add_members(ctx, [1, 2])
    rows = [auth_row(1).values(), auth_row(2).values()]
    importer.run(write_file(tmp_path / "a.txt", "hn-authorization", rows))
    auth = _auth(ctx, "HN-0000001")
    assert auth is not None
    auth["disposition"] = "edited elsewhere"
    dispatch(ctx, FhirRequest("PUT", f"CoverageEligibilityResponse/{auth['id']}", resource=auth))
    resent = importer.run(write_file(tmp_path / "b.txt", "hn-authorization", rows, sequence=2))
    assert (resent.counts.applied, resent.counts.unchanged) == (1, 1)
    restored = _auth(ctx, "HN-0000001")
    assert (
        restored is not None and restored["meta"]["versionId"] == "3" and restored["disposition"] != "edited elsewhere"
    )
    again = importer.run(write_file(tmp_path / "c.txt", "hn-authorization", rows, sequence=3))
    assert (again.counts.applied, again.counts.unchanged) == (0, 2)


def _ledger(ctx: Context, file_id: int | None) -> tuple[str, int, int, int, int, int]:
    with ctx.repo.connect() as conn:
        f = file_inbound.c
        query = select(f.status, f.position, f.rows_read, f.rows_applied, f.rows_unchanged, f.rows_rejected)
        row = conn.execute(query.where(f.id == file_id)).one()
    return (str(row[0]), *(int(v) for v in row[1:]))  # type: ignore[return-value]


def test_the_reimport_fast_path_skips_known_rows_and_still_checks_the_file(
    importer: Importer, plan_ctx: Context, tmp_path: Path
) -> None:
    """Known unchanged rows are neither parsed nor written (chunks of them do not even move the ledger
    until a later chunk writes or the file ends), yet they are counted, their control totals checked,
    and a changed or bad row among them is applied or reported as before."""
    ctx = plan_ctx
    add_members(ctx, range(1, 11))
    book = [auth_row(k).values() for k in range(1, 11)]
    assert importer.run(write_file(tmp_path / "d1.txt", "hn-authorization", book)).counts.applied == 10
    responses, tasks, events = _versions(ctx, "CoverageEligibilityResponse"), _versions(ctx, "Task"), len(_events(ctx))
    mixed = list(book)
    mixed[4] = auth_row(5, action="CHG", decision="A6", units=24, reason="Units reduced").values()  # line 6
    mixed[8] = auth_row(9, cin="BAD").values()  # line 10: a bad CIN (its units still count)
    result = importer.run(write_file(tmp_path / "d2.txt", "hn-authorization", mixed, sequence=2))
    counts = (result.counts.read, result.counts.applied, result.counts.unchanged, result.counts.rejected)
    assert (result.status, counts, result.errors) == ("done", (10, 1, 8, 1), 1)
    assert _ledger(ctx, result.file_id) == ("done", 11, 10, 1, 8, 1)
    assert _versions(ctx, "CoverageEligibilityResponse") == responses + 1 and len(_events(ctx)) == events
    assert _versions(ctx, "Task") == tasks  # a modification moves no Task
    # every chunk known: nothing written until the end, then the whole file at once
    again = importer.run(write_file(tmp_path / "d3.txt", "hn-authorization", book[:4], sequence=3))
    assert _ledger(ctx, again.file_id) == ("done", 5, 4, 0, 4, 0) and again.errors == 0
    # the control totals of known rows are still added: a wrong trailer is reported
    wrong = importer.run(write_file(tmp_path / "d4.txt", "hn-authorization", book[:4], sequence=4, trailer=(4, 191)))
    assert (wrong.counts.unchanged, wrong.errors) == (4, 1)
    assert _versions(ctx, "CoverageEligibilityResponse") == responses + 1 and len(_events(ctx)) == events
