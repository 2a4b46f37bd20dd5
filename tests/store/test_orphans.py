"""No resource row's own rows without it (gateway/store/schema.py; migration 0014): versions, index rows,
membership rows and conditional keys carry a ``rid`` without a foreign key, so this test is the check the
constraint was. Every write path of the core runs (create, conditional create, update, update-as-create,
patch, delete, batch, a transaction, a failing transaction, the repository's batched updates), then:

- every such row names a ``resource`` row;
- a deleted resource keeps its versions and nothing else (no index row, no key);
- every current resource has exactly the index rows its body gives (the extractor's, nothing stale).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from gateway.errors import FhirError
from gateway.fhir.context import Context
from gateway.fhir.core import build_context, dispatch
from gateway.fhir.request import FhirRequest
from gateway.search.extract import COLUMNS
from gateway.search.sources import Rows, stored_values
from gateway.settings import Settings
from gateway.store.schema import INDEX_TABLES, REWRITTEN_TABLES, resource, resource_version

BASE = "http://test.invalid/fhir"
JSON = {"content-type": "application/fhir+json"}


@pytest.fixture
def ctx(database_url: str) -> Iterator[Context]:
    context = build_context(Settings(database_url=database_url, auth_enabled=False, calaim_enabled=False))
    yield context
    context.repo.engine.dispose()


def _call(ctx: Context, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
    raw = None if body is None else orjson.dumps(body)
    path, _, query = path.partition("?")
    params = [(name, value) for name, _, value in (pair.partition("=") for pair in query.split("&") if pair)]
    request = FhirRequest(method, path, query=params, headers={**JSON, **headers}, body=raw, base_url=BASE)
    answer = dispatch(ctx, request)
    return answer.status, orjson.loads(answer.body) if answer.body else None


def _patient(family: str, mrn: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": family}],
        "identifier": [{"system": "urn:mrn", "value": mrn}],
        "birthDate": "1980-01-02",
    }


def _referral(patient_id: str, org: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "performer": [{"reference": f"Organization/{org}"}],
        "authoredOn": "2026-11-01",
    }


def _exercise(ctx: Context) -> None:
    status, first = _call(ctx, "POST", "Patient", _patient("Alpha", "1"))
    assert status == 201
    assert _call(ctx, "POST", "Patient", _patient("Alpha", "1"), **{"if-none-exist": "identifier=urn:mrn|1"})[0] == 200
    assert _call(ctx, "POST", "Patient", _patient("Beta", "2"), **{"if-none-exist": "identifier=urn:mrn|2"})[0] == 201
    assert _call(ctx, "PUT", f"Patient/{first['id']}", {**_patient("Gamma", "3"), "id": first["id"]})[0] == 200
    assert _call(ctx, "PUT", "Patient/client-id", {**_patient("Delta", "4"), "id": "client-id"})[0] == 201
    patch = [{"op": "replace", "path": "/name/0/family", "value": "Epsilon"}]
    answer = dispatch(
        ctx,
        FhirRequest(
            "PATCH", "Patient/client-id", headers={"content-type": "application/json-patch+json"},
            body=orjson.dumps(patch), base_url=BASE,
        ),
    )  # fmt: skip
    assert answer.status == 200
    status, referral = _call(ctx, "POST", "ServiceRequest", _referral(first["id"], "org-1"))
    assert status == 201
    moved = {**_referral(first["id"], "org-2"), "id": referral["id"]}
    assert _call(ctx, "PUT", f"ServiceRequest/{referral['id']}", moved)[0] == 200
    assert _call(ctx, "DELETE", f"ServiceRequest/{referral['id']}")[0] in (200, 204)
    assert _call(ctx, "DELETE", "Patient?identifier=urn:mrn|2")[0] in (200, 204)
    member = "urn:uuid:11111111-1111-4111-8111-111111111111"
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": member, "resource": _patient("Zeta", "5"), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": _referral("x", "org-3") | {"subject": {"reference": member}},
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
        ],
    }
    assert _call(ctx, "POST", "", transaction)[0] == 200
    invalid = {"resourceType": "Patient", "gender": "not-a-code"}
    failing = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": _patient("Eta", "6"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": invalid, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    with pytest.raises(FhirError):  # dispatch raises what the web layer turns into an OperationOutcome
        _call(ctx, "POST", "", failing)
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": _patient("Theta", "7"), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "DELETE", "url": "Patient/client-id"}},
        ],
    }
    assert _call(ctx, "POST", "", batch)[0] == 200
    with ctx.repo.write() as tx:
        made = [tx.create(_patient(f"Iota{n}", f"8{n}")) for n in range(3)]
    with ctx.repo.write() as tx:
        tx.update_many([(_patient(f"Kappa{n}", f"9{n}"), made[n]) for n in range(3)])


def test_no_row_outlives_or_precedes_its_resource(ctx: Context) -> None:
    _exercise(ctx)
    with ctx.repo.connect() as conn:
        rids = select(resource.c.rid)
        for table in (resource_version, *REWRITTEN_TABLES):
            orphans = conn.execute(select(func.count()).where(table.c.rid.not_in(rids))).scalar_one()
            assert orphans == 0, f"{table.name} has rows of no resource"
        deleted = select(resource.c.rid).where(resource.c.deleted.is_(True))
        assert conn.execute(select(func.count()).select_from(resource).where(resource.c.deleted.is_(True))).scalar()
        for table in REWRITTEN_TABLES:
            left = conn.execute(select(func.count()).where(table.c.rid.in_(deleted))).scalar_one()
            assert left == 0, f"{table.name} keeps rows of a deleted resource"
        versions = conn.execute(select(func.count()).where(resource_version.c.rid.in_(deleted))).scalar_one()
        assert versions >= 2, "a deleted resource keeps its history"
        current = conn.execute(select(resource.c.rid, resource.c.body).where(resource.c.deleted.is_(False))).all()
    for rid, body in current:
        expected = {
            kind: sorted(_row_text(dict(zip(("param", *COLUMNS[kind]), row, strict=True))) for row in rows)
            # the rows the store keeps of the indexer's (gateway/search/sources.py)
            for kind, rows in _kept(ctx, orjson.loads(body)).items()
            if rows
        }
        with ctx.repo.connect() as conn:
            stored = {
                kind: sorted(_row_text(dict(r._mapping)) for r in conn.execute(select(table).where(table.c.rid == rid)))
                for kind, table in INDEX_TABLES.items()
            }
        assert {k: v for k, v in stored.items() if v} == expected, f"index rows of rid {rid} are its body's"


def _row_text(row: dict[str, Any]) -> str:
    """An index row as comparable text: its parameter and value columns (not the rid, type or computed)."""
    return repr(sorted((k, repr(v)) for k, v in row.items() if k not in ("rid", "res_type", "span_class")))


def _kept(ctx: Context, resource: dict[str, Any]) -> Mapping[str, Rows]:
    """The index rows the store keeps of ``resource``: the indexer's, less those other rows repeat."""
    return stored_values(str(resource["resourceType"]), ctx.repo.indexer(resource))
