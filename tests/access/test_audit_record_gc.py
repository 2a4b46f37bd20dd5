"""The guard queues each audit record as a plain tuple of strings, numbers and ``None`` (the caller as
``Grant.audit_caller``, an empty query as ``None``), which the garbage collector stops following at its
first collection (gateway/fhir/guard.py ``_audit``; docs/performance.md "After (session 9)"); the log and
the AuditEvents are the same as from ``AuditRecord`` tuples holding the grant."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest

from gateway.auth.grant import Grant
from gateway.fhir.audit import AuditRecord, RecordFields, log_batch, log_rows
from gateway.fhir.context import Context
from gateway.fhir.core import build_context, dispatch
from gateway.fhir.request import FhirRequest
from gateway.settings import Settings

BASE = "https://testserver/fhir"
NURSE = Grant(
    subject="nurse",
    client_id="app",
    scope="user/*.rs",
    token_id="jti-1",
    expires_at=0,
    organization="calop",
    fhir_user="Practitioner/p-1",
    patient="m-1",
)


@pytest.fixture
def store(database_url: str) -> Iterator[Context]:
    context = build_context(Settings(database_url=database_url, sqlite_synchronous="NORMAL", calaim_enabled=False))
    yield context
    if context.audit is not None:
        context.audit.close()
    context.repo.engine.dispose()


def test_the_caller_is_built_once_per_grant() -> None:
    assert NURSE.audit_caller == ("app", "nurse", "jti-1", "Practitioner/p-1", "calop", "m-1")
    assert NURSE.audit_caller is NURSE.audit_caller
    assert NURSE.audit_caller == (
        NURSE.client_id,
        NURSE.subject,
        NURSE.token_id,
        NURSE.fhir_user,
        NURSE.organization,
        NURSE.patient,
    ), "the columns of audit_events.Caller, in order"


def test_a_guarded_read_queues_a_record_the_collector_untracks(store: Context) -> None:
    headers = {"content-type": "application/fhir+json"}
    body = b'{"resourceType": "Patient", "id": "m-1"}'
    assert dispatch(store, FhirRequest("PUT", "Patient/m-1", headers=headers, body=body, base_url=BASE)).status in (
        200,
        201,
    )
    assert store.audit is not None
    for query in ([], [("_summary", "count")]):
        path = "Patient/m-1" if not query else "Patient"
        answer = dispatch(store, FhirRequest("GET", path, query=query, base_url=BASE, grant=NURSE))
        assert answer.status == 200
    read, search = store.audit.queued()[-2:]
    assert read[0] is NURSE.audit_caller and read[1:6] == ("read", "Patient", "m-1", None, None)
    assert search[1] == "search-type" and search[5] == [("_summary", "count")]
    assert type(read) is tuple  # an exact tuple: a namedtuple is never untracked
    gc.collect()
    assert not gc.is_tracked(read), "every item is atomic: the collector no longer follows the record"


def test_plain_records_log_like_audit_records() -> None:
    start = time.time()
    named = [
        AuditRecord(NURSE, "read", "Condition", "c-1", None, [], 200, start, "10.0.0.1"),
        AuditRecord(NURSE, "search-type", "Condition", None, None, [("subject", "Patient/m-1")], 200, start + 1),
    ]
    plain: list[RecordFields] = [
        (NURSE.audit_caller, "read", "Condition", "c-1", None, None, 200, start, "10.0.0.1"),
        (
            NURSE.audit_caller,
            "search-type",
            "Condition",
            None,
            None,
            [("subject", "Patient/m-1")],
            200,
            start + 1,
            None,
        ),
    ]
    assert log_batch(plain) == log_batch(named)
    assert log_rows(plain) == log_rows(named)
