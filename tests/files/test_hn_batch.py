"""The HN file's ADD rows through the batched referral intake (adapters/files/hn_authorizations.py with
gateway/calaim/referral_batch.py) leave the store exactly as the one-referral-at-a-time path through the
hooks does: the same referrals, Task histories, authorization pairs, outbox events in the same order per
queue, counts and error report, for rows of every kind mixed in one chunk (rows that read what a waiting
row writes, terminal Task moves, an open referral already there, a routing refusal, referrals routed to the
county, whose events alone also go to the county's RRI queues)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from adapters.files.handlers import INBOUND
from adapters.files.hn_authorizations import HnAuthorizationHandler
from adapters.files.importer import Importer, RowHandler
from gateway.calaim.policy import Policy
from gateway.fhir.context import Context
from gateway.store.schema import outbox, resource, resource_version
from tests.calaim.support import assert_emitted_valid
from tests.files.conftest import POLICY
from tests.files.support import add_members, auth_row, ecm_referral, write_file

AUTHORIZATION_QUEUES = ("calaim.authorization>hl7v2",)
"""The queues an HN file's authorizations write: the county's RRI for county referrals only, and no
``calaim.authorization>files`` (the reconciliation file does not send an HN's own authorizations back)."""


def _rows(base: int) -> list[dict[str, Any]]:
    """One chunk of rows of every kind, for the members ``base + 1`` .. ``base + 16``."""

    def row(key: int, number: str | None = None, **changes: Any) -> dict[str, Any]:
        return auth_row(base + key, number, **changes).values()

    return [
        row(1),  # A1: a new referral, its Task accepted
        row(2, decision="A4", start=None, end=None),  # pended: the Task stays requested
        row(3, decision="A3", start=None, end=None, reason="Not eligible"),  # rejected: the referral ends
        row(4),
        row(4, f"HN-{base + 4:07d}-B"),  # the same member and service: the referral just created
        row(5),  # a member without a Population of Focus: routing refuses the referral
        row(6, decision="C", start=None, end=None, reason="Member request"),  # cancelled
        row(1, action="CHG", decision="A6", units=24, reason="Units reduced", decided_on=date(2022, 12, 20)),
        row(7),  # the member's open referral is already there
        row(8, decision="A2", units=24, reason="Partial", provider_npi="1999999026"),  # a named provider
        row(9, reason="Approved"),
        row(10, action="CHG", decision="A6", units=24, reason="Units reduced", decided_on=date(2022, 12, 20)),
        row(11, action="TRM", end=date(2023, 2, 28), reason="Services received", decided_on=date(2023, 2, 28)),
        row(12),  # unchanged
        row(13, action="CHG", decision="A6", units=12, reason="Fewer units", decided_on=date(2022, 12, 21)),
        row(10, action="CHG", decision="A6", units=20, reason="Units reduced again", decided_on=date(2022, 12, 22)),
        row(13, decision="A4", start=None, end=None),  # an ADD of a stored number: a change
        row(14),  # POF 3: the referral is routed to the county (a county referral)
        row(15, action="CHG", decision="A6", units=24, reason="Units reduced", decided_on=date(2022, 12, 20)),
        row(16, action="TRM", end=date(2023, 2, 28), reason="Services received", decided_on=date(2023, 2, 28)),
    ]


def _setup(ctx: Context, importer: Importer, tmp_path: Path, base: int) -> None:
    """The members (one without a Population of Focus, three of POF 3: the county's), an open referral of
    member 7, and the authorizations of members 10 to 13, 15 and 16 imported the day before."""
    add_members(ctx, [base + k for k in (1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13)])
    add_members(ctx, [base + k for k in (14, 15, 16)], pofs=("3",))
    day1 = [auth_row(base + k).values() for k in (10, 11, 12, 13, 15, 16)]
    assert importer.run(write_file(tmp_path / f"day1-{base}.txt", "hn-authorization", day1)).counts.applied == 6
    add_members(ctx, [base + 5], pofs=())
    ecm_referral(ctx, f"fm-{base + 7}", authored_on="2022-10-01")


def _state(ctx: Context, since: int, base: int) -> str:
    """Everything written after resource row ``since`` and every outbox row, as normalized text."""
    with ctx.repo.connect() as conn:
        v = resource_version.c
        versions = conn.execute(
            select(v.res_type, v.res_id, v.version_id, v.method, v.body)
            .where(v.rid > since, v.res_type.not_in(("Patient", "Coverage")))
            .order_by(v.res_type, v.rid, v.version_id)
        ).all()
        queues = conn.execute(select(outbox.c.topic, outbox.c.dedupe_key, outbox.c.payload).order_by(outbox.c.id)).all()
    ids: dict[str, str] = {}
    for row in versions:
        ids.setdefault(str(row.res_id), f"{row.res_type}-{len(ids)}")
    history = [(r.res_type, ids[str(r.res_id)], r.version_id, r.method, orjson.loads(r.body)) for r in versions]
    events: dict[str, list[Any]] = {}
    for topic, key, payload in queues:
        events.setdefault(topic, []).append((key, orjson.loads(payload)))
    text = orjson.dumps({"history": history, "events": events}, option=orjson.OPT_SORT_KEYS).decode()
    for real, label in sorted(ids.items(), key=lambda item: -len(item[0])):
        text = text.replace(real, label)
    for key in range(1, 17):  # the members, numbers and CINs of the second set read as the first's
        text = text.replace(f"fm-{base + key}", f"fm-{key}").replace(f"fcov-{base + key}", f"fcov-{key}")
        text = text.replace(f"HN-{base + key:07d}", f"HN-{key:07d}").replace(f"9{base + key:07d}A", f"9{key:07d}A")
    return re.sub(r'"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)"', '"<instant>"', text)


def _import(ctx: Context, tmp_path: Path, base: int, *, batched: bool) -> tuple[Any, str]:
    """Set up members ``base + k`` and import the rows: the summary and the state it leaves."""
    with ctx.repo.connect() as conn:
        since = int(conn.execute(select(resource.c.rid).order_by(resource.c.rid.desc()).limit(1)).scalar_one())

    def hn_handler(policy: Policy, sender: str) -> RowHandler:
        return HnAuthorizationHandler(policy, sender, batched=batched)

    importer = Importer(ctx, POLICY, {**INBOUND, "hn-authorization": hn_handler}, chunk_rows=50)
    _setup(ctx, importer, tmp_path, base)
    with ctx.repo.write() as tx:  # the events of this import only
        tx.conn.execute(outbox.delete())
    path = write_file(tmp_path / f"rows-{base}.txt", "hn-authorization", _rows(base))
    result = importer.run(path, sender="hn-altamed", report_dir=tmp_path / f"reports-{base}")
    report = result.report.read_text().splitlines()[1:] if result.report else []
    summary = orjson.dumps([result.counts, [re.sub(r"rows-\d+", "rows", line) for line in report]]).decode()
    return summary, _state(ctx, since, base)


def test_the_batched_intake_leaves_the_store_as_the_hooks_do(plan_ctx: Context, tmp_path: Path) -> None:
    ctx = plan_ctx
    one_by_one = _import(ctx, tmp_path, 0, batched=False)
    batched = _import(ctx, tmp_path, 50, batched=True)
    assert batched[0] == one_by_one[0]
    assert batched[1] == one_by_one[1]
    with ctx.repo.connect() as conn:  # every queue the file's rows wrote has a reader (events.CONSUMERS)
        rows = conn.execute(select(outbox.c.topic, outbox.c.payload).order_by(outbox.c.id)).all()
    assert {row.topic for row in rows} == {"calaim.referral-status>hl7v2", *AUTHORIZATION_QUEUES}
    # The county's RRI queues hold the events of the county's referrals (members 64-66) only: the new
    # referral's Task (Pending, then accepted) and the three authorizations (ADD, CHG, TRM).
    county = [(row.topic, orjson.loads(row.payload)) for row in rows if row.topic.endswith(">hl7v2")]
    assert {payload["patient"] for _, payload in county} == {"Patient/fm-64", "Patient/fm-65", "Patient/fm-66"}
    kinds = [(topic, payload.get("kind") or payload.get("taskStatus")) for topic, payload in county]
    assert sorted(kinds) == sorted(
        [("calaim.authorization>hl7v2", kind) for kind in ("initial", "modification", "termination")]
        + [("calaim.referral-status>hl7v2", status) for status in ("requested", "accepted", "completed")]
    )
    counts = orjson.loads(batched[0])[0]
    assert (counts["applied"], counts["unchanged"], counts["rejected"]) == (18, 1, 1)
    with ctx.repo.connect() as conn:
        bodies = conn.execute(select(resource_version.c.body).where(resource_version.c.res_type == "Task")).all()
    for body in bodies:
        assert_emitted_valid(orjson.loads(body.body))
