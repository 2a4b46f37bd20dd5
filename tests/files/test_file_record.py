"""The re-import fast path's check (``ledger.current_digests``, docs/files.md step 7): a record is known
unchanged only while its resource's current version is the one the record left: not after another
channel's update, not after a delete, never for a resource that does not exist. The check runs on a read
snapshot as well as in a write transaction. Both dialects."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert

from adapters.files import ledger
from adapters.files.hn_authorizations import LAYOUT, HnAuthorizationHandler
from adapters.files.importer import Importer, Row
from adapters.files.reader import records
from gateway.calaim.resources import find
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from gateway.store.schema import file_record
from gateway.types import JSONObject
from mappings.files.vocabulary import AUTHORIZATION_NUMBER_SYSTEM
from tests.files.conftest import POLICY
from tests.files.support import add_members, auth_row, write_file

KEYS = ["HN-0000001", "HN-0000002", "HN-0000003", "HN-0000009"]


def _known(ctx: Context, path: Path) -> int:
    """How many detail records of ``path`` the handler's fast path names unchanged, on a read snapshot."""
    rows = [Row(line, {}, (), tuple(fields[1:]), parsed=False) for line, fields in records(path) if fields[0] == "DTL"]
    handler = HnAuthorizationHandler(POLICY, "hn-altamed")
    with ctx.repo.connect() as conn:
        return len(handler.known(conn, rows))


def _current(ctx: Context) -> set[str]:
    with ctx.repo.write() as tx:  # in a write transaction, as a chunk that writes reads it
        return set(ledger.current_digests(tx.conn, LAYOUT, "hn-altamed", KEYS))


def _auth(ctx: Context, number: str) -> JSONObject:
    with ctx.repo.connect() as conn:
        params = [("identifier", f"{AUTHORIZATION_NUMBER_SYSTEM}|{number}")]
        found = find(ctx, conn, "CoverageEligibilityResponse", params, limit=2)
    assert len(found) == 1
    return found[0]


def test_a_record_is_trusted_only_while_its_resource_is_at_the_recorded_version(
    importer: Importer, plan_ctx: Context, tmp_path: Path
) -> None:
    ctx = plan_ctx
    add_members(ctx, [1, 2, 3])
    rows = [auth_row(k).values() for k in (1, 2, 3)]
    assert importer.run(write_file(tmp_path / "a.txt", LAYOUT, rows)).counts.applied == 3
    resent = write_file(tmp_path / "b.txt", LAYOUT, rows, sequence=2)
    assert _known(ctx, resent) == 3 and _current(ctx) == set(KEYS[:3])
    # another channel writes a new version of the first authorization: its record is no longer trusted
    auth = _auth(ctx, KEYS[0])
    auth["disposition"] = "edited elsewhere"
    dispatch(ctx, FhirRequest("PUT", f"CoverageEligibilityResponse/{auth['id']}", resource=auth))
    # the second is deleted: a delete is a version too
    dispatch(ctx, FhirRequest("DELETE", f"CoverageEligibilityResponse/{_auth(ctx, KEYS[1])['id']}"))
    assert _known(ctx, resent) == 1 and _current(ctx) == {KEYS[2]}
    # a record naming a resource that was never stored (a store restored without it) is not trusted either
    with ctx.repo.engine.begin() as conn:
        values = {"layout": LAYOUT, "sender": "hn-altamed", "record_key": KEYS[3], "digest": "d"}
        stored = {"res_type": "CoverageEligibilityResponse", "res_id": "gone", "version_id": 1}
        conn.execute(insert(file_record).values(**values, **stored))
    assert _current(ctx) == {KEYS[2]}
