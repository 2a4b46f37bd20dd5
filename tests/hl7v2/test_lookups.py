"""The group commit's screen in one query (adapters/hl7v2/lookups.py ``screened``) answers what its four
look-ups answer one by one, on a real store (SQLite file and PostgreSQL): stored and unknown message keys
of several senders, member identifiers, referral ids and uniqueness keys, and lists too long for one
query."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection

from adapters.hl7v2 import lookups, messagelog
from adapters.hl7v2.processor import InboundProcessor
from gateway.fhir.context import Context
from gateway.settings import Settings
from gateway.store.schema import conditional_key
from tests.hl7v2.support import processor_for, ref_i12


def _one_by_one(conn: Connection, asked: tuple[list[tuple[str, str]], ...]) -> tuple[set[tuple[str, str]], ...]:
    messages, members, referrals, keys = asked
    return (
        lookups.logged(conn, messagelog.IN, messages),
        lookups.identifiers(conn, "Patient", members),
        lookups.identifiers(conn, "ServiceRequest", referrals),
        lookups.held_keys(conn, keys),
    )


@pytest.mark.parametrize("many", [False, True])
def test_screened_answers_as_the_four_look_ups(ctx: Context, settings: Settings, many: bool) -> None:
    processor = processor_for(ctx, settings)
    texts = [ref_i12(f"Q{n}", cin=f"9100010{n}A", mrn=f"MRN-Q{n}") for n in range(3)]
    outcomes = processor.commit([processor.prepare(text.encode()) for text in texts])
    assert [o.code for o in outcomes] == ["AA", "AA", "AA"]
    config = processor.config
    with ctx.repo.connect() as conn:
        stored_keys = [(str(r.res_type), str(r.key_hash)) for r in conn.execute(conditional_key.select())]
    assert len(stored_keys) >= 6
    sender = "HCA-BHS|OCHCA"
    extra = 600 if many else 2
    asked = (
        [(sender, "Q0"), (sender, "Q2"), (sender, "NEW"), ("OTHER|APP", "Q1")],
        [("https://calaim.example/cin", "x")]
        + [(i["system"], i["value"]) for i in _patient_identifiers(texts[1], processor)]
        + [(config.mrn_system, f"UNKNOWN-{n}") for n in range(extra)],
        [(config.referral_id_system, "CR-Q0"), (config.referral_id_system, "CR-NONE")],
        [*stored_keys[:4], ("Patient", "0" * 64), ("ServiceRequest", "f" * 64)],
    )
    with ctx.repo.connect() as conn:
        found = lookups.screened(conn, messagelog.IN, *asked)
        expected = _one_by_one(conn, asked)
    assert (found.logged, found.members, found.referrals, found.held) == expected
    assert found.logged == {(sender, "Q0"), (sender, "Q2")}
    assert len(found.members) == 2 and found.referrals == {(config.referral_id_system, "CR-Q0")}
    assert found.held == set(stored_keys[:4])
    with ctx.repo.connect() as conn:
        empty = lookups.screened(conn, messagelog.IN, [], [], [], [])
    assert (empty.logged, empty.members, empty.referrals, empty.held) == (set(), set(), set(), set())


def _patient_identifiers(text: str, processor: InboundProcessor) -> list[dict[str, str]]:
    prepared = processor.prepare(text.encode())
    assert prepared.mapped is not None
    patient = prepared.mapped.bundle["entry"][0]["resource"]
    return list(patient["identifier"])
