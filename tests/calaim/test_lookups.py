"""The bulk look-ups of the workflow (gateway/calaim/lookups.py, driver SQL compiled once per dialect and
IN-list size) find what the FHIR searches ``identifier=``, ``beneficiary=`` and reads find: current
resources only, oldest first, any number of values (padded IN lists, several slices), inside the caller's
transaction or on a connection that has not begun one; on SQLite and PostgreSQL."""

from __future__ import annotations

import orjson
from sqlalchemy import insert

from gateway.calaim.lookups import IN_LIMIT, by_id, by_reference, by_token, held_keys
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from gateway.store.schema import conditional_key

CIN = "https://fhir.example.org/sid/test-cin"


def _patient(cin: str) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": CIN, "value": cin}],
        "name": [{"family": "Testmember"}],
    }


def _coverage(patient_id: str, status: str) -> dict[str, object]:
    return {
        "resourceType": "Coverage",
        "status": status,
        "beneficiary": {"reference": f"Patient/{patient_id}"},
        "payor": [{"reference": "Organization/calop"}],
    }


def test_the_look_ups_find_what_the_searches_find(ctx: Context) -> None:
    with ctx.repo.write() as tx:
        first = tx.create(_patient("95100001A"))
        second = tx.create(_patient("95100002A"))
        gone = tx.create(_patient("95100003A"))
        tx.delete(gone)
        old = tx.create(_coverage(first.res_id, "cancelled"))
        new = tx.create(_coverage(first.res_id, "active"))
        tx.flush()
        tx.conn.execute(insert(conditional_key).values(res_type="ServiceRequest", key_hash="k1", rid=first.rid))
    wanted = ["95100001A", "95100002A", "95100003A", "95199999A"]
    with ctx.repo.write() as tx:
        found = by_token(tx.conn, "Patient", "identifier", CIN, wanted)
        coverages = by_reference(tx.conn, "Coverage", "beneficiary", "Patient", [first.res_id, second.res_id])
        patients = by_id(tx.conn, "Patient", [first.res_id, gone.res_id, "nope"])
        keys = held_keys(tx.conn, "ServiceRequest", ["k1", "k2"])
    assert {code: [f.stored.res_id for f in items] for code, items in found.items()} == {
        "95100001A": [first.res_id],
        "95100002A": [second.res_id],
    }
    for code in wanted:
        response = dispatch(ctx, FhirRequest("GET", "Patient", query=[("identifier", f"{CIN}|{code}")]))
        bundle = orjson.loads(response.body or b"{}")
        ids = [entry["resource"]["id"] for entry in bundle.get("entry") or ()]
        assert ids == [f.stored.res_id for f in found.get(code, [])]
    assert [f.stored.res_id for f in coverages[first.res_id]] == [old.res_id, new.res_id]  # oldest first
    assert second.res_id not in coverages
    assert coverages[first.res_id][1].body["status"] == "active"
    assert set(patients) == {first.res_id}
    assert patients[first.res_id].stored.version_id == 1
    assert keys == {"k1"}


def test_any_number_of_values_and_a_connection_without_a_transaction(ctx: Context) -> None:
    with ctx.repo.write() as tx:
        made = [tx.create(_patient(f"9520{n:04d}A")).res_id for n in range(5)]
    ids = [*made, *(f"missing-{n}" for n in range(IN_LIMIT + 100))]  # two slices: 900 values, then 105
    with ctx.repo.engine.connect() as conn:
        assert not conn.in_transaction()
        found = by_id(conn, "Patient", ids)
        assert conn.in_transaction()  # begun as SQLAlchemy's autobegin would
        again = by_id(conn, "Patient", made[:3])  # a smaller IN list (padded to 8)
    assert set(found) == set(made)
    assert set(again) == set(made[:3])
