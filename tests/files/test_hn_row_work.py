"""The per-row work the HN file's handler saves (issue 6, session 5; docs/files.md "Choices"): what it
remembers between calls gives what computing it again gives. ``file_record`` upserts on both dialects
(one statement from arrays on PostgreSQL)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from adapters.files import ledger
from adapters.files.hn_authorizations import LAYOUT, HnAuthorizationHandler, record_digest, same_content
from adapters.files.importer import Row
from gateway.fhir.context import Context
from gateway.store.schema import file_record
from mappings.files.layout import format_detail, layout
from tests.files.conftest import POLICY
from tests.files.support import auth_row


def _stripped_equal(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """The comparison ``same_content`` implements, written the plain way (stripped copies)."""

    def strip(resource: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        return {**{k: v for k, v in resource.items() if k != "id"}, "meta": meta}

    return strip(stored) == strip(wanted)


def test_same_content_ignores_the_id_and_the_version_stamps_only() -> None:
    base: dict[str, Any] = {
        "resourceType": "CoverageEligibilityResponse",
        "id": "a",
        "meta": {"versionId": "2", "lastUpdated": "2026-11-24T08:00:00.000Z", "profile": ["p"]},
        "status": "active",
        "insurance": [{"item": [{"units": 4}]}],
        "disposition": None,
    }
    edits: list[Callable[[dict[str, Any]], object]] = [
        lambda r: None,
        lambda r: r.update(id="b"),
        lambda r: r.pop("id"),
        lambda r: r["meta"].update(versionId="3", lastUpdated="later"),
        lambda r: r["meta"].pop("profile"),
        lambda r: r.update(meta={"profile": ["p"]}),
        lambda r: r.pop("meta"),
        lambda r: r.update(meta=None),
        lambda r: r.update(status="cancelled"),
        lambda r: r["insurance"][0]["item"][0].update(units=5),
        lambda r: r.pop("disposition"),
        lambda r: r.update(disposition=""),
        lambda r: r.update(extra=None),
        lambda r: (r.pop("disposition"), r.update(extra=None)),
    ]
    variants = []
    for edit in edits:
        variant = copy.deepcopy(base)
        edit(variant)
        variants.append(variant)
    for stored in variants:
        for wanted in variants:
            assert same_content(stored, wanted) == _stripped_equal(stored, wanted), (stored, wanted)


def _fields(key: int) -> tuple[str, ...]:
    """The fields of an ADD record of member ``key`` as read (after the record type)."""
    return tuple(format_detail(layout(LAYOUT), auth_row(key).values())[1:])


def test_digests_are_remembered_for_the_same_records_only() -> None:
    handler = HnAuthorizationHandler(POLICY, "hn-altamed")
    first = [Row(k, {}, (), _fields(k), parsed=False) for k in (2, 3)]
    assert handler._digests_of(first) == [record_digest(row) for row in first]
    again = [Row(row.line, {"parsed": True}, (), row.fields) for row in first]  # parsed: the same fields
    assert handler._digests_of(again) == [record_digest(row) for row in first]
    other = [Row(2, {}, (), _fields(9), parsed=False)]  # line 2 of another file
    assert handler._digests_of(other) == [record_digest(other[0])] != [record_digest(first[0])]


def test_rows_sharing_a_decision_get_equal_references_of_their_own() -> None:
    handler = HnAuthorizationHandler(POLICY, "hn-altamed")
    coverage = {"id": "c1", "extension": []}
    row = auth_row(1, decision="A2", reason="Fewer units")
    one = handler._refs(row, "p1", coverage, "r1", "prov-ecm-1")
    two = handler._refs(auth_row(2, decision="A2", reason="Fewer units"), "p2", coverage, "r2", "prov-ecm-1")
    assert (one.patient_id, two.patient_id, one.referral_id, two.referral_id) == ("p1", "p2", "r1", "r2")
    assert one.plan == two.plan and one.plan is not two.plan
    assert one.provider == two.provider and one.provider is not two.provider
    fresh = HnAuthorizationHandler(POLICY, "hn-altamed")._refs(row, "p1", coverage, "r1", "prov-ecm-1")
    assert fresh == one


def test_remember_upserts_the_records_of_a_chunk(ctx: Context) -> None:
    def recorded() -> dict[str, tuple[str, str, str, int]]:
        with ctx.repo.connect() as conn:
            c = file_record.c
            query = select(c.record_key, c.digest, c.res_type, c.res_id, c.version_id)
            query = query.where(c.layout == LAYOUT, c.sender == "hn-altamed")
            return {row[0]: (row[1], row[2], row[3], row[4]) for row in conn.execute(query)}

    kind = "CoverageEligibilityResponse"
    with ctx.repo.write() as tx:
        ledger.remember(
            tx.conn, LAYOUT, "hn-altamed", {f"N{i}": ledger.Recorded(f"d{i}", kind, f"r{i}", 1) for i in range(5)}
        )
        ledger.remember(tx.conn, LAYOUT, "hn-other", {"N0": ledger.Recorded("x", kind, "other", 1)})
    with ctx.repo.write() as tx:
        changed = {"N1": ledger.Recorded("e1", kind, "r1", 2), "N9": ledger.Recorded("d9", kind, "r9", 1)}
        ledger.remember(tx.conn, LAYOUT, "hn-altamed", changed)
        ledger.remember(tx.conn, LAYOUT, "hn-altamed", {})
    mine = recorded()
    assert mine["N1"] == ("e1", kind, "r1", 2) and mine["N9"] == ("d9", kind, "r9", 1)
    assert mine["N4"] == ("d4", kind, "r4", 1) and len(mine) == 6
    with ctx.repo.connect() as conn:
        assert len(conn.execute(select(file_record.c.record_key)).all()) == 7
