"""The grouped commit of REF^I12 messages (adapters/hl7v2/batch.py) leaves the store exactly as the
per-message path through the FHIR core does: the same resources and versions, uniqueness keys, outbox
events in the same order per topic, message-log rows and ACK codes, for a group mixing messages it writes
as a group (new members; re-referrals of stored members: the MRN linked, a Coverage and Conditions
matched or created, a duplicate open referral answering) with every kind it leaves to the per-message
path (two messages of one member, a resent MSH-10, a resent referral id, a routing refusal, an ADT), on
SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import event, select

from adapters.hl7v2 import batch
from adapters.hl7v2.config import mapping_config
from adapters.hl7v2.processor import InboundProcessor
from gateway.calaim.policy import Policy
from gateway.calaim.referrals import open_key
from gateway.fhir.conditional import condition_key
from gateway.fhir.context import Context
from gateway.settings import Settings
from gateway.store.schema import conditional_key, hl7v2_message, outbox, resource, resource_version
from tests.hl7v2.support import adt, count, msa, processor_for, ref_i12

DG1_OTHER = "DG1|2||F41.1^Generalized anxiety disorder^I10||20241201|W"
DG1_SAME = "DG1|3||F20.9^Schizophrenia, unspecified^I10||20241202|W"
DG1_ADT = "DG1|2||F31.9^Bipolar disorder, unspecified^I10||20241201|W"
MEMBERS = 14
"""Members 0-13 of a set (their CIN and MRN are normalized in the compared state)."""


def _messages(tag: str, base: int) -> list[str]:
    """One group of every kind; ``tag`` and ``base`` make the control ids and members of a set distinct."""

    def cin(k: int) -> str:
        return f"9{base + k:07d}A"

    return [
        ref_i12(f"{tag}-1", cin=cin(1), mrn=f"M{base + 1}"),  # new member: grouped
        ref_i12(f"{tag}-2", cin=cin(2), pof="", service="ecm"),  # routing refuses (AE): per message
        ref_i12(f"{tag}-3", cin=cin(3)).replace("\rNTE|", f"\r{DG1_OTHER}\r{DG1_SAME}\rNTE|"),  # 3 DG1: grouped
        ref_i12(f"{tag}-4", cin=cin(1), service="medically-tailored-meals"),  # member of message 1: per message
        ref_i12(f"{tag}-1", cin=cin(1), mrn=f"M{base + 1}"),  # MSH-10 of message 1 again: its stored ACK
        ref_i12(f"{tag}-5", cin=cin(5)),  # stored member (by its CIN), open ECM referral: grouped, it answers
        adt(f"{tag}-6", cin=cin(6), mrn=f"M{base + 6}", visit=f"V-{base}"),  # ADT: per message
        ref_i12(f"{tag}-7", cin=cin(7), service="recuperative-care"),  # new member, after the others: grouped
        ref_i12(f"{tag}-8", cin=cin(8), referral_id=f"CR-{tag}-0"),  # referral id stored before: per message
        ref_i12(f"{tag}-9", cin=cin(9), pof="1"),  # no ECM provider for this POF (AE): per message
        ref_i12(
            f"{tag}-10", cin=cin(10), pid=f"PID|1||{cin(10)}^^^MEDI-CAL^MA||Testmember^Alex||19900401|F"
        ),  # grouped
        # stored member (CIN), MRN linked, Coverage and one Condition matched, one created: grouped
        ref_i12(f"{tag}-11", cin=cin(11), mrn=f"M{base + 11}").replace("\rNTE|", f"\r{DG1_OTHER}\r{DG1_SAME}\rNTE|"),
        # stored member of an ADT: Coverage and a Condition created, the ADT's Condition matched: grouped
        ref_i12(f"{tag}-12", cin=cin(12), mrn=f"M{base + 12}").replace("\rNTE|", f"\r{DG1_ADT}\rNTE|"),
        # member 5 again, by its MRN only (no identifier shared with message 5): one re-referral per stored
        # member and group, so per message
        ref_i12(
            f"{tag}-13",
            service="medically-tailored-meals",
            pid=f"PID|1||M{base + 5}^^^OCHCA^MR||Testmember^Alex||19900401|F",
        ),
    ]


def _setup(processor: InboundProcessor, tag: str, base: int) -> None:
    """Stored before the group: member 5 and the referral ``CR-<tag>-0``, member 11 (CIN only) with an
    MTM referral, member 12 of an ADT (CIN, MRN, a Condition, no Coverage)."""
    processor.grouped = False
    for text in (
        ref_i12(f"{tag}-0", cin=f"9{base + 5:07d}A", mrn=f"M{base + 5}"),
        ref_i12(f"{tag}-0b", cin=f"9{base + 11:07d}A", service="medically-tailored-meals"),
        adt(f"{tag}-0c", cin=f"9{base + 12:07d}A", mrn=f"M{base + 12}", visit=f"W-{base}"),
    ):
        assert msa(processor.process(text.encode())[0])[0] == "AA"


WHOLE = [0, 2, 5, 7, 10, 11, 12]
"""The messages of ``_messages`` the group writes together (new members and re-referrals): as a group of
their own, one run, written without savepoints (``InboundProcessor._whole``)."""


def _run(
    ctx: Context, settings: Settings, tag: str, base: int, *, grouped: bool, only: list[int] | None = None
) -> tuple[list[str], str]:
    processor = processor_for(ctx, settings)
    _setup(processor, tag, base)
    with ctx.repo.connect() as conn:
        since = int(conn.execute(select(resource.c.rid).order_by(resource.c.rid.desc()).limit(1)).scalar_one())
        versions_since = int(
            conn.execute(select(resource_version.c.hseq).order_by(resource_version.c.hseq.desc()).limit(1)).scalar_one()
        )
        events_since = int(conn.execute(select(outbox.c.id).order_by(outbox.c.id.desc()).limit(1)).scalar_one())
    processor.grouped = grouped
    texts = _messages(tag, base)
    group = [processor.prepare(texts[n].encode()) for n in (range(len(texts)) if only is None else only)]
    outcomes = processor.commit(group)
    codes = [outcome.code for outcome in outcomes]
    return codes, _state(ctx, (since, versions_since, events_since), tag, base)


def _state(ctx: Context, marks: tuple[int, int, int], tag: str, base: int) -> str:
    """What the group wrote (resources and versions, keys, events after ``marks``), as normalized text: ids
    by their place in the message log, instants and the set's own numbers replaced."""
    since, versions_since, events_since = marks
    with ctx.repo.connect() as conn:
        v = resource_version.c
        query = select(v.res_type, v.res_id, v.version_id, v.method, v.body).where(v.hseq > versions_since)
        versions = conn.execute(query).all()
        m = hl7v2_message.c
        log = conn.execute(
            select(m.control_id, m.status, m.attempts, m.error, m.resources)
            .where(m.control_id.like(f"{tag}-%"))
            .order_by(m.control_id)
        ).all()
        events = conn.execute(
            select(outbox.c.topic, outbox.c.dedupe_key, outbox.c.payload)
            .where(outbox.c.id > events_since)
            .order_by(outbox.c.id)
        ).all()
        keys = conn.execute(
            select(conditional_key.c.res_type, conditional_key.c.key_hash, resource.c.res_id)
            .join(resource, resource.c.rid == conditional_key.c.rid)
            .where(conditional_key.c.rid > since)
        ).all()
    labels: dict[str, str] = {}
    for row in log:  # the resources of each message, in entry order
        for n, reference in enumerate(orjson.loads(row.resources or "[]")):
            labels.setdefault(reference.split("/")[1], f"{row.control_id}.{n}")
    bodies = {str(r.res_id): orjson.loads(r.body) for r in versions if r.body is not None}
    for res_id, body in bodies.items():  # Tasks by their referral, Encounters by their message's order
        focus = (body.get("focus") or {}).get("reference", "")
        if body["resourceType"] == "Task" and focus.split("/")[-1] in labels:
            labels.setdefault(res_id, "task-of-" + labels[focus.split("/")[-1]])
    unlabeled = sorted(res_id for res_id in bodies if res_id not in labels)
    assert len(unlabeled) <= 1, unlabeled  # the ADT's Encounter
    for res_id in unlabeled:
        labels[res_id] = "encounter"
    history = sorted(
        (r.res_type, labels[str(r.res_id)], r.version_id, r.method, orjson.loads(r.body) if r.body else None)
        for r in versions
    )
    # A key hash of a condition naming a new resource differs per run: the key is named by its holder then.
    held = sorted((t, labels[str(res_id)], key if str(res_id) not in key else "") for t, key, res_id in keys)
    by_topic: dict[str, list[Any]] = {}
    for topic, dedupe, payload in events:
        by_topic.setdefault(topic, []).append((dedupe, orjson.loads(payload)))
    state = {
        "history": history,
        "log": [tuple(row) for row in log],
        "events": by_topic,
        "keys": [(t, holder) for t, holder, _ in held],
    }
    text = orjson.dumps(state, option=orjson.OPT_SORT_KEYS).decode()
    for real, label in sorted(labels.items(), key=lambda item: -len(item[0])):
        text = text.replace(real, label)
    text = text.replace(f"{tag}-", "T-")
    for k in reversed(range(MEMBERS)):
        text = text.replace(f"9{base + k:07d}A", f"CIN{k}").replace(f"M{base + k}", f"MRN{k}")
    text = text.replace(f"V-{base}", "V-x").replace(f"W-{base}", "W-x")
    return re.sub(r'"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)"', '"<instant>"', text)


def test_grouped_commit_leaves_the_store_as_the_per_message_path(
    ctx: Context, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    one_by_one = _run(ctx, settings, "P", 100, grouped=False)
    with caplog.at_level(logging.INFO, logger="adapters.hl7v2"):
        grouped = _run(ctx, settings, "G", 200, grouped=True)
    assert "message by message" not in caplog.text  # every run was written as a group
    assert (
        grouped[0]
        == one_by_one[0]
        == ["AA", "AE", "AA", "AA", "AA", "AA", "AA", "AA", "AA", "AE", "AA", "AA", "AA", "AA"]
    )
    assert grouped[1] == one_by_one[1]


def test_a_group_of_one_run_is_written_without_savepoints_as_the_per_message_path(
    ctx: Context, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """New members and re-referrals only: the group is one run, written without a savepoint, and leaves
    what the per-message path leaves."""
    one_by_one = _run(ctx, settings, "P", 100, grouped=False, only=WHOLE)
    with caplog.at_level(logging.INFO, logger="adapters.hl7v2"):
        grouped = _run(ctx, settings, "G", 200, grouped=True, only=WHOLE)
    assert "written again" not in caplog.text and "message by message" not in caplog.text
    assert grouped[0] == one_by_one[0] == ["AA"] * len(WHOLE)
    assert grouped[1] == one_by_one[1]


def test_a_group_that_cannot_be_written_whole_is_written_again_with_savepoints(
    ctx: Context, settings: Settings, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The plans were decided under a plan configuration that routed every referral; the committing one has
    no ECM provider for POF 3 (a configuration change between step 1 and the commit), so the intake refuses
    the ECM referrals the group would write: the whole write's transaction is rolled back, the group is
    written again a savepoint per run, and that run, refused again, message by message. Every message is
    answered once and stored once, nothing of the first attempt is left."""
    plan_dir = tmp_path / "plan"
    shutil.copytree(Path(__file__).parents[2] / "profiles" / "orange-county", plan_dir)
    plan = orjson.loads((plan_dir / "plan.json").read_bytes())
    for contract in plan["ecmProviders"]:
        contract["pofs"] = [pof for pof in contract["pofs"] if pof != "3"]
    (plan_dir / "plan.json").write_bytes(orjson.dumps(plan))
    planned_by = processor_for(ctx, settings)
    group = [
        planned_by.prepare(ref_i12("W-1", cin="96000001A").encode()),
        planned_by.prepare(ref_i12("W-2", cin="96000002A", service="recuperative-care").encode()),
        planned_by.prepare(ref_i12("W-3", cin="96000003A").encode()),
    ]
    assert all(prepared.plan is not None for prepared in group)
    policy = Policy.load(plan_dir)
    committer = InboundProcessor(ctx, settings, policy, mapping_config(settings, policy))
    with caplog.at_level(logging.INFO, logger="adapters.hl7v2"):
        outcomes = committer.commit(group)
    assert "written again" in caplog.text and "message by message" in caplog.text
    # The per-message path routes through the store's own hooks (the default plan): every message applies.
    assert [o.code for o in outcomes] == ["AA", "AA", "AA"]
    assert (count(ctx, "Patient"), count(ctx, "ServiceRequest"), count(ctx, "Task")) == (3, 3, 3)
    with ctx.repo.connect() as conn:
        m = hl7v2_message.c
        logged = conn.execute(select(m.control_id, m.status, m.attempts).where(m.control_id.like("W-%"))).all()
    assert sorted(tuple(row) for row in logged) == [("W-1", "AA", 1), ("W-2", "AA", 1), ("W-3", "AA", 1)]


def test_the_group_plans_new_members_and_re_referrals(ctx: Context, settings: Settings) -> None:
    processor = processor_for(ctx, settings)
    _setup(processor, "Q", 300)
    group = [processor.prepare(text.encode()) for text in _messages("Q", 300)]
    with ctx.repo.write() as tx:
        plans = batch.plans_for(group, processor.policy, tx)
    grouped = [n for n, found in enumerate(plans, start=1) if found is not None]
    assert grouped == [1, 3, 6, 8, 11, 12, 13]  # by place: messages 1, 3, 5, 7, 10, 11, 12
    stored = [n for n, found in enumerate(plans, start=1) if found is not None and found.stored is not None]
    assert stored == [6, 12, 13]
    assert batch.enabled(ctx)


def test_a_run_that_cannot_be_written_as_a_group_is_applied_per_message(ctx: Context, settings: Settings) -> None:
    """A uniqueness key taken between the plan and the write (here by a message applied in between, in the
    same transaction: the race a concurrent writer would win) rolls the run's savepoint back, and the
    per-message path answers every message of the run, as if there had been no group."""
    processor = processor_for(ctx, settings)
    group = [processor.prepare(ref_i12(f"R-{n}", cin=f"9{400 + n:07d}A").encode()) for n in range(3)]
    between = processor.prepare(ref_i12("R-x", cin="91234567A", referral_id="CR-R-2").encode())
    with ctx.repo.write() as tx:
        plans = batch.plans_for(group, processor.policy, tx)
        assert all(plans)
        first = processor._one(tx, between)  # the referral id of message 2, stored after the plan
        outcomes = processor._run(tx, [p for p in plans if p is not None])
    assert first.code == "AA"
    assert [o.code for o in outcomes] == ["AA", "AA", "AA"]
    assert outcomes[2].resources[-1] == first.resources[-1]  # the per-message path matched it
    assert outcomes[1].resources[-1] != first.resources[-1]
    with ctx.repo.connect() as conn:
        m = hl7v2_message.c
        logged = conn.execute(select(m.control_id, m.status).where(m.control_id.like("R-%"))).all()
    assert sorted(tuple(row) for row in logged) == [("R-0", "AA"), ("R-1", "AA"), ("R-2", "AA"), ("R-x", "AA")]


def test_a_re_referral_matching_two_members_takes_the_per_message_path(ctx: Context, settings: Settings) -> None:
    """A CIN of one stored Patient and an MRN of another: the Patient's ``If-None-Exist`` matches two, which
    the per-message path refuses (412: AE 205); the group does not plan it, and answers it the same way."""
    processor = processor_for(ctx, settings)
    processor.grouped = False
    for text in (ref_i12("M-0", cin="95000001A"), adt("M-0b", cin=None, mrn="M5000002", visit="V-M")):
        assert msa(processor.process(text.encode())[0])[0] == "AA"
    processor.grouped = True
    group = [
        processor.prepare(ref_i12("M-1", cin="95000001A", mrn="M5000002").encode()),
        processor.prepare(ref_i12("M-2", cin="95000003A").encode()),
    ]
    with ctx.repo.write() as tx:
        plans = batch.plans_for(group, processor.policy, tx)
    assert plans[0] is None and plans[1] is not None
    outcomes = processor.commit(group)
    assert [o.code for o in outcomes] == ["AE", "AA"]
    assert "205" in outcomes[0].ack.decode()


def test_a_member_changed_after_the_screen_sends_the_run_per_message(ctx: Context, settings: Settings) -> None:
    """A stored member whose Patient an earlier message of the transaction changed after the screen (the
    race a concurrent writer would win): the version check (PostgreSQL) or the version's unique key
    (SQLite) refuses the run's update, its savepoint is rolled back and the per-message path answers."""
    processor = processor_for(ctx, settings)
    processor.grouped = False
    assert msa(processor.process(ref_i12("U-0", cin="95200001A").encode())[0])[0] == "AA"
    group = [processor.prepare(ref_i12("U-1", cin="95200001A", mrn="M5200001", service="recuperative-care").encode())]
    between = processor.prepare(
        ref_i12("U-x", cin="95200001A", mrn="M5200009", service="medically-tailored-meals").encode()
    )
    with ctx.repo.write() as tx:
        plans = batch.plans_for(group, processor.policy, tx)
        assert plans[0] is not None and plans[0].update is not None
        first = processor._one(tx, between)  # links another MRN: the Patient's version 2
        outcomes = processor._run(tx, [p for p in plans if p is not None])
    assert first.code == "AA" and [o.code for o in outcomes] == ["AA"]
    with ctx.repo.connect() as conn:
        v = resource_version.c
        patient = outcomes[0].resources[0].split("/")[1]
        versions = conn.execute(select(v.version_id).where(v.res_type == "Patient", v.res_id == patient)).all()
    assert sorted(row[0] for row in versions) == [1, 2]  # the per-message path linked nothing more


def test_the_bench_re_referrals_are_planned_as_such(ctx: Context, settings: Settings) -> None:
    """``bench.hl7v2 --commit-ab --re-referrals`` measures what it says: after ``stored_member``, the bench's
    message of the same member is planned as a re-referral that links the MRN."""
    from bench.hl7v2 import ref_i12 as bench_message
    from bench.hl7v2 import stored_member

    processor = processor_for(ctx, settings)
    first = processor.commit([processor.prepare(stored_member(bench_message(n, "BR"))) for n in range(3)])
    assert [o.code for o in first] == ["AA"] * 3
    group = [processor.prepare(bench_message(n, "BR")) for n in range(3)]
    with ctx.repo.write() as tx:
        plans = batch.plans_for(group, processor.policy, tx)
    assert all(p is not None and p.stored is not None and p.update is not None for p in plans)
    assert [o.code for o in processor.commit(group)] == ["AA"] * 3


def test_new_members_referrals_are_taken_in_without_looking_up_what_nothing_stored_can_have(
    ctx: Context, settings: Settings
) -> None:
    """The Patient of a new member is created in the group's transaction with the id its plan assigned, so
    the referral intake does not look up that member's open referrals nor its member-service keys (two
    queries per group that could find nothing); a stored member's still are (its open ECM referral answers
    its re-referral). Every SELECT the commit runs is traced (SQLite's own statement trace)."""
    if not ctx.repo.sqlite:
        pytest.skip("SQLite's statement trace")
    processor = processor_for(ctx, settings)
    (stored,) = processor.commit([processor.prepare(ref_i12("N-0", cin="97000005A", mrn="M-N5").encode())])
    assert stored.code == "AA"
    group = [processor.prepare(ref_i12(f"N-{n}", cin=f"9700000{n}A").encode()) for n in (1, 2, 3)]
    group.append(processor.prepare(ref_i12("N-5", cin="97000005A", mrn="M-N5").encode()))  # a re-referral
    new = [prepared.plan.member[0] for prepared in group[:3] if prepared.plan is not None]
    assert len(new) == 3
    keys = [condition_key(open_key(patient, "ecm")) for patient in new]
    statements: list[str] = []

    def trace(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    def untrace(dbapi_connection: Any, _record: Any) -> None:  # a pooled connection keeps no callback
        dbapi_connection.set_trace_callback(None)

    event.listen(ctx.repo.engine, "checkout", trace)
    event.listen(ctx.repo.engine, "checkin", untrace)
    try:
        outcomes = processor.commit(group)
    finally:  # the commit's connections are back in the pool, untraced
        event.remove(ctx.repo.engine, "checkout", trace)
        event.remove(ctx.repo.engine, "checkin", untrace)
    assert [outcome.code for outcome in outcomes] == ["AA"] * 4
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert selects  # the trace saw the group's look-ups (the screen, the re-referral's member)
    assert not [s for s in selects if any(value in s for value in [*new, *keys])]
    # The stored member's open ECM referral was looked up and answers its re-referral, as before.
    assert outcomes[3].resources[-1] == stored.resources[-1]
