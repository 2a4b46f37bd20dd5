"""The audit trail's own index rows for its AuditEvents equal the generic indexer's (so AuditEvent search
answers the same), for reads, searches, operations, patient launches and fhirUser callers."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest

from gateway.auth.grant import Grant
from gateway.fhir.audit import AuditRecord, audit_events, audit_index
from gateway.search.extract import extract_values
from gateway.search.registry import default_registry

REGISTRY = default_registry()


def _grant(**extra: Any) -> Grant:
    base: dict[str, Any] = {
        "subject": "nurse",
        "client_id": "app",
        "scope": "user/*.rs",
        "token_id": "jti-1",
        "expires_at": 0,
        "organization": "hn-ccn",
    }
    return Grant(**{**base, **extra})


def _record(grant: Grant, interaction: str, res_type: str | None, res_id: str | None, **extra: Any) -> AuditRecord:
    values: dict[str, Any] = {"operation": None, "query": [], "status": 200, "recorded": time.time()}
    values.update(extra)
    return AuditRecord(grant, interaction, res_type, res_id, **values)


CASES = {
    "reads of several types": [
        _record(_grant(), "read", t, f"{t.lower()}-{n}")
        for n in range(5)
        for t in ("Patient", "Condition", "ServiceRequest", "Patient")
    ],
    "searches": [
        _record(_grant(), "search-type", "Condition", None, query=[("subject", f"Patient/p{n}"), ("_count", "5")])
        for n in range(4)
    ],
    "operation and failures": [
        _record(_grant(), "operation-instance", "ServiceRequest", "sr-1", operation="$decide", status=403),
        _record(_grant(), "read", "Patient", "hidden", status=404),
    ],
    "patient launch": [
        _record(_grant(patient="p-7", scope="patient/*.rs"), "read", "Condition", f"c{n}") for n in range(3)
    ],
    "fhirUser and address": [
        _record(_grant(fhir_user="Practitioner/pr-1"), "read", "Patient", "p-1", address="10.0.0.8"),
        _record(_grant(fhir_user="Patient/p-2"), "read", "Patient", "p-2"),
    ],
}


def _sorted(rows: Mapping[str, Sequence[Sequence[Any]]]) -> dict[str, list[bytes]]:
    return {kind: sorted(orjson.dumps(list(r)) for r in found) for kind, found in rows.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_audit_index_equals_the_generic_indexer(case: str) -> None:
    events = audit_events(CASES[case])
    assert events
    for event in events:
        indexer = lambda resource: extract_values(resource, REGISTRY)  # noqa: E731 - the repository's indexer
        expected = {k: v for k, v in _sorted(extract_values(event, REGISTRY)).items() if v}
        actual = {k: v for k, v in _sorted(audit_index(event, indexer)).items() if v}
        assert actual == expected
