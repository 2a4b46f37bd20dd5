"""Index rows written once (``gateway/search/sources.py``, migration 0016).

The store keeps only the rows no other row of the resource repeats; every reader answers a parameter from
its ``sources``. Checked here: the rules the registry gives; for every parameter of every example and of
randomly altered copies, the rows the sources give equal the full extraction's (``skip_absent=False``,
every expression evaluated); searches by each derived parameter (modifiers, ``:missing``, ``_sort``,
chains, ``_has``, ``_include``/``_revinclude``, ``_type``) find what a full extraction's rows say and the
same on a store holding every row (as the old writes made them: the migration's downgrade writes them
back), each resource once and counted once; the upgrade deletes exactly the rows the new writes do not
make; a bench family writes 15 rows fewer.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import orjson
from alembic import command
from sqlalchemy import Connection, text

from bench.data import Generator
from bench.limits import prepare_families
from gateway.search.extract import COLUMNS, extract_values
from gateway.search.registry import default_registry
from gateway.search.sources import Source, rules_for, sources, stored_values
from gateway.store.migrate import _config
from tests.search.test_extract_fast import _mutated, _resources
from tests.search.test_search_engine import Store, registry, store

__all__ = ["registry", "store"]

Rows = dict[str, list[tuple[Any, ...]]]


def test_the_registry_gives_the_three_kinds_of_rule() -> None:
    assert sources("Patient", "phonetic") == sources("Patient", "name")  # alias
    assert sources("Coverage", "patient") == (Source("beneficiary"),)
    assert sources("ServiceRequest", "service") == (Source("code"),)
    assert sources("CoverageEligibilityRequest", "service") == (Source("service"),)  # per type
    for res_type in ("ServiceRequest", "Encounter", "Condition", "CarePlan"):  # narrowed
        assert sources(res_type, "patient") == (Source("subject", "Patient"), Source("patient"))
    assert sources("Task", "patient") == (Source("subject", "Patient"), Source("patient"))
    assert sources("Patient", "name") == (Source("name"), Source("family"), Source("given"))  # parent
    assert {s.param for s in sources("Patient", "address")} == {
        "address",
        "address-city",
        "address-country",
        "address-postalcode",
        "address-state",
    }
    assert sources("Patient", "family") == (Source("family"),)
    assert rules_for("Observation").writes_all


def _derived(res_type: str, code: str, stored: Rows, kind: str) -> set[tuple[Any, ...]]:
    """The rows of ``code`` a reader finds among ``stored`` through its sources (without ``param``)."""
    out: set[tuple[Any, ...]] = set()
    for source in sources(res_type, code):
        for row in stored.get(kind, ()):
            if row[0] == source.param and (source.target_type is None or row[1] == source.target_type):
                out.add(tuple(row[1:]))
    return out


def _check_rows(resource: dict[str, Any]) -> int:
    """Every parameter's rows, as the sources give them from the stored rows, are the full extraction's;
    the number of rows not stored."""
    res_type = str(resource["resourceType"])
    try:
        full = extract_values(resource, skip_absent=False)
    except Exception:  # malformed input fails alike either way (test_extract_fast)
        return 0
    try:
        hash(tuple(tuple(row) for rows in full.values() for row in rows))
    except TypeError:  # a list where a string belongs: such rows are all kept (never stored: not bindable)
        return 0
    stored = {kind: [tuple(r) for r in rows] for kind, rows in stored_values(res_type, full).items()}
    for kind, rows in full.items():
        for code in {row[0] for row in rows} | set(rules_for(res_type).sources):
            expected = {tuple(r[1:]) for r in rows if r[0] == code}
            param = default_registry().get(res_type, code)
            if param is None or param.type != kind:
                continue
            assert _derived(res_type, code, stored, kind) == expected, (res_type, code)
    return sum(len(r) for r in full.values()) - sum(len(r) for r in stored.values())


def test_the_sources_give_every_parameter_its_full_rows() -> None:
    rng = random.Random(20261125)
    dropped = 0
    for resource in _resources():
        for variant in (resource, *(_mutated(resource, rng) for _ in range(4))):
            dropped += _check_rows(variant)
    assert dropped > 100


def test_edge_references_keep_their_own_rows() -> None:
    """A ``urn:`` reference typed Patient has no ``target_type`` (the narrowed row is kept); an untyped
    identifier-only reference is not a Patient's."""
    for subject in (
        {"reference": "urn:uuid:5f1c", "type": "Patient"},
        {"identifier": {"system": "s", "value": "v"}},
        {"identifier": {"system": "s", "value": "v"}, "type": "Patient"},
        {"reference": "https://elsewhere/fhir/Patient/9"},
        {"reference": "Group/g"},
    ):
        for res_type, element in (("ServiceRequest", "subject"), ("Task", "for"), ("Encounter", "subject")):
            _check_rows({"resourceType": res_type, element: subject})
    kept = stored_values(
        "Task", extract_values({"resourceType": "Task", "for": {"reference": "urn:uuid:5f1c", "type": "Patient"}})
    )
    assert sorted(r[0] for r in kept["reference"]) == ["patient", "subject"]


def test_a_bench_family_writes_15_rows_fewer() -> None:
    prepared = prepare_families(Generator(seed=1).families(20))  # what bench.limits inserts
    full = sum(len(r) for p in prepared for r in extract_values(orjson.loads(p.body)).values())
    stored = sum(p.row_count for p in prepared)
    assert full / 20 == 66 and stored / 20 == 51


def test_rows_that_travelled_as_json_are_kept_alike() -> None:
    """The model-check workers send rows back as JSON arrays (lists): the same rows are kept."""
    for p in prepare_families(Generator(seed=2).families(5)):
        full = extract_values(orjson.loads(p.body))
        as_lists = orjson.loads(orjson.dumps(full))
        kept = stored_values(p.res_type, as_lists)
        assert {k: [tuple(r) for r in rows] for k, rows in kept.items() if rows} == p.rows


# -- searches -------------------------------------------------------------------------------------------


def _patient(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": f"Fam{n % 3}", "given": [f"Giv{n}", "Shared"], "prefix": ["Dr"], "text": f"Dr Giv{n}"}],
        "address": [{"line": [f"{n} Main St"], "city": ["Oakland", "Fresno"][n % 2], "state": "CA"}],
    }


def _load(s: Store) -> dict[str, list[str]]:
    patients = [s.create(_patient(n)).res_id for n in range(4)]
    group = s.create({"resourceType": "Group", "type": "person", "actual": True}).res_id
    org = s.create({"resourceType": "Organization", "name": "Org", "address": [{"city": "Oakland"}]}).res_id
    subjects: list[dict[str, Any]] = [
        {"reference": f"Patient/{patients[0]}"},
        {"reference": f"Patient/{patients[1]}"},
        {"reference": f"Group/{group}"},
        {"reference": "urn:uuid:0c1d", "type": "Patient"},
        {"identifier": {"system": "urn:cin", "value": "C1"}},
    ]
    code = {"coding": [{"system": "http://cpt", "code": "T1016"}]}
    requests = [
        s.create(
            {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": sub, "code": code}
        ).res_id
        for sub in subjects
    ]
    tasks = [
        s.create({"resourceType": "Task", "status": "ready", "intent": "order", "for": sub}).res_id
        for sub in subjects[:3]
    ]
    coverages = [
        s.create(
            {"resourceType": "Coverage", "status": "active", "beneficiary": {"reference": f"Patient/{p}"},
             "payor": [{"reference": f"Organization/{org}"}]}
        ).res_id
        for p in patients[:2]
    ]  # fmt: skip
    return {"Patient": patients, "ServiceRequest": requests, "Task": tasks, "Coverage": coverages, "Org": [org]}


def _queries(ids: dict[str, list[str]]) -> list[tuple[str | None, str]]:
    p0, p1 = ids["Patient"][:2]
    return [
        ("Patient", "name=giv1"),
        ("Patient", "name=shared"),
        ("Patient", "name=dr"),
        ("Patient", "name:exact=Shared"),
        ("Patient", "name:exact=shared"),
        ("Patient", "name:contains=iv2"),
        ("Patient", "name:contains=iv&_total=accurate&_count=3"),
        ("Patient", "name:missing=false"),
        ("Patient", "name:missing=true"),
        ("Patient", "phonetic=fam0"),
        ("Patient", "phonetic:exact=Fam1"),
        ("Patient", "address=oakland"),
        ("Patient", "address=ca"),
        ("Patient", "address=main"),
        ("Patient", "address:contains=resn"),
        ("Patient", "_sort=name"),
        ("Patient", "_sort=-name"),
        ("Patient", "_sort=address"),
        ("Patient", "_sort=-phonetic,_id"),
        ("Patient", "name=shared&_summary=count"),
        ("Patient", "name=shared&_total=accurate&_count=2"),
        ("Patient", "_has:ServiceRequest:patient:status=active"),
        ("Patient", "_has:Task:patient:status=ready"),
        ("Patient", "_has:Coverage:patient:status=active"),
        ("ServiceRequest", f"patient={p0}"),
        ("ServiceRequest", f"patient=Patient/{p1}"),
        ("ServiceRequest", f"patient:Patient={p0}"),
        ("ServiceRequest", "patient=urn:uuid:0c1d"),
        ("ServiceRequest", "patient:identifier=urn:cin|C1"),
        ("ServiceRequest", "patient:missing=true"),
        ("ServiceRequest", "patient:missing=false"),
        ("ServiceRequest", "patient.name=giv0"),
        ("ServiceRequest", "patient.address-city=fresno"),
        ("ServiceRequest", "service=http://cpt|T1016"),
        ("ServiceRequest", "service:missing=false"),
        ("ServiceRequest", "service:not=T9999"),
        ("ServiceRequest", "service:text=x"),
        ("ServiceRequest", "status=active&_include=ServiceRequest:patient"),
        ("ServiceRequest", "status=active&_include=ServiceRequest:patient:Patient"),
        ("Patient", "_revinclude=ServiceRequest:patient"),
        ("Patient", "_revinclude=Task:patient&_revinclude=Coverage:patient"),
        ("Patient", "name=giv0&_revinclude=ServiceRequest:patient&_include:iterate=ServiceRequest:subject"),
        ("Task", f"patient={p0}"),
        ("Task", "patient:missing=true"),
        ("Task", "patient.name=shared"),
        ("Coverage", f"patient={p1}"),
        ("Coverage", "patient:missing=false&_include=Coverage:patient"),
        (None, "_type=ServiceRequest,Task&patient:missing=false"),
        (None, f"_type=ServiceRequest,Task,Coverage&patient={p0}"),
        (None, "_type=Patient,Organization&address=oakland"),
        (None, "_type=Patient,Practitioner&name=shared"),
    ]


def _answers(s: Store, queries: Iterable[tuple[str | None, str]]) -> list[Any]:
    out: list[Any] = []
    for res_type, query in queries:
        bundle = s.search(res_type, query)
        entries = [
            (e["resource"]["resourceType"], e["resource"]["id"], e["search"]["mode"])
            for e in bundle.get("entry", [])
            if e["search"]["mode"] != "outcome"
        ]
        assert len(entries) == len(set(entries)), query  # each resource once
        out.append(((res_type, query), bundle.get("total"), entries))
    return out


def _index_rows(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {kind: sorted(tuple(r) for r in conn.execute(text(f"SELECT * FROM idx_{kind}"))) for kind in COLUMNS}


def _full_rows(conn: Connection) -> list[tuple[str, tuple[Any, ...]]]:
    """The rows the old writes made and the new ones do not (every current resource extracted in full)."""
    missing: list[tuple[str, tuple[Any, ...]]] = []
    bodies = conn.execute(text("SELECT rid, res_type, body FROM resource WHERE deleted = :no"), {"no": False})
    for rid, res_type, body in bodies.all():
        full = extract_values(orjson.loads(bytes(body)))
        stored = stored_values(res_type, full)
        for kind, rows in full.items():
            kept = {tuple(r) for r in stored.get(kind, ())}
            missing.extend((kind, (rid, res_type, *row)) for row in rows if tuple(row) not in kept)
    return missing


def test_searches_by_derived_parameters_answer_as_with_every_row(store: Store) -> None:
    s = store
    ids = _load(s)
    queries = _queries(ids)
    new = _answers(s, queries)
    found = {key: (total, entries) for key, total, entries in new}

    def matches(res_type: str | None, query: str) -> list[str]:
        return sorted(i for _, i, mode in found[(res_type, query)][1] if mode == "match")

    def included(res_type: str, query: str) -> list[str]:
        return sorted(i for _, i, mode in found[(res_type, query)][1] if mode == "include")

    # What the full extraction's rows say (the rows the old writes stored), for the derived parameters.
    patients, sr, tasks = ids["Patient"], ids["ServiceRequest"], ids["Task"]
    p0, p1 = patients[:2]
    assert matches("Patient", "name=shared") == sorted(patients)
    assert matches("Patient", "name:exact=Shared") == sorted(patients)
    assert matches("Patient", "name:exact=shared") == []
    assert matches("Patient", "name=dr") == sorted(patients)  # the prefix and text: name's own rows
    assert matches("Patient", "address=ca") == sorted(patients)
    assert matches("Patient", "name:missing=true") == []
    assert matches("ServiceRequest", f"patient={p0}") == [sr[0]]
    assert matches("ServiceRequest", f"patient=Patient/{p1}") == [sr[1]]
    assert matches("ServiceRequest", "patient=urn:uuid:0c1d") == [sr[3]]
    assert matches("ServiceRequest", "patient:missing=true") == sorted([sr[2], sr[4]])
    assert matches("ServiceRequest", "patient:missing=false") == sorted([sr[0], sr[1], sr[3]])
    assert matches("ServiceRequest", "service=http://cpt|T1016") == sorted(sr)
    assert matches("Task", f"patient={p0}") == [tasks[0]]
    assert matches("Coverage", f"patient={p1}") == [ids["Coverage"][1]]
    assert found[("Patient", "name=shared&_summary=count")][0] == 4
    # through two sources at once (``given`` and ``name``'s own ``text`` row): one entry, one count each
    assert found[("Patient", "name:contains=iv&_total=accurate&_count=3")][0] == 4
    assert len(matches("Patient", "name:contains=iv&_total=accurate&_count=3")) == 3
    assert found[("Patient", "name=shared&_total=accurate&_count=2")][0] == 4
    assert included("ServiceRequest", "status=active&_include=ServiceRequest:patient") == sorted([p0, p1])
    assert included("Patient", "_revinclude=ServiceRequest:patient") == sorted([sr[0], sr[1]])
    assert matches("Patient", "_has:Task:patient:status=ready") == sorted([p0, p1])
    # ``_type``: the sources differ per type (Practitioner ``name`` is ``phonetic``'s; Coverage ``patient``
    # is ``beneficiary``'s)
    assert matches(None, "_type=Patient,Practitioner&name=shared") == sorted(patients)
    both = sorted([sr[0], tasks[0], ids["Coverage"][0]])
    assert matches(None, f"_type=ServiceRequest,Task,Coverage&patient={p0}") == both
    assert matches(None, "_type=Patient,Organization&address=oakland") == sorted(
        [patients[0], patients[2], *ids["Org"]]
    )

    rules = rules_for("Patient")
    assert rules.aliases and rules.parents
    with s.repo.engine.begin() as conn:
        written = _index_rows(conn)
        params = {(r[1], r[2]) for rows in written.values() for r in rows}
        assert not {("Patient", "phonetic"), ("ServiceRequest", "service"), ("Coverage", "patient")} & params
        assert ("ServiceRequest", "patient") in params  # the urn: reference typed Patient: its own row
        assert ("Task", "patient") not in params
        old = _full_rows(conn)
        assert {kind for kind, _ in old} == {"string", "token", "reference"}
        command.downgrade(_config(conn), "0015")  # writes the rows back from those they repeat
        full = {kind: sorted(rows + [row for k, row in old if k == kind]) for kind, rows in written.items()}
        assert _index_rows(conn) == full  # the store as the old code wrote it
    assert _answers(s, queries) == new  # the same with every row (a resource through two sources: once)
    with s.repo.engine.begin() as conn:
        command.upgrade(_config(conn), "0016")
        assert _index_rows(conn) == written  # exactly the rows the new writes do not make are gone
    assert _answers(s, queries) == new
