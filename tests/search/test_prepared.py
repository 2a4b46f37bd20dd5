"""The prepared search path (driver SQL, ``gateway/search/prepared.py``) against the SQLAlchemy Core path.

Random queries of every served parameter type, modifier, prefix, chain, ``_has``, sort, paging cursor,
``_include``/``_revinclude``, ``_total`` and ``_summary``, under several access narrowings (none, a
patient-compartment grant, an organization's view with a granular scope), must give byte-for-byte the
same Bundles (apart from the Bundle's own id and timestamp) on SQLite and PostgreSQL, and the same
conditional matches. The narrowing cache is bounded.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from sqlalchemy import ColumnElement, Engine, FromClause, text
from sqlalchemy.dialects import sqlite

from gateway.auth.access import Access
from gateway.auth.grant import Grant
from gateway.errors import BadRequest
from gateway.search.engine import Match, Narrowing, SearchEngine
from gateway.search.extract import extract_values
from gateway.search.registry import R4_SEARCH_PARAMETERS, load_bundles
from gateway.search.sqltext import NarrowingCache
from gateway.store.database import EngineOptions, make_engine
from gateway.store.repository import Repository, StoredResource, current_version
from gateway.types import JSONObject, QueryParams

BASE = "http://test.local/fhir"
FAMILIES = ["Garcia", "García", "O'Brien", "Nguyen", "Ng", "100%", "Lee_Ann", "back\\slash", "Smith", "Smythe"]
GIVEN = ["Ann", "Bo", "Carla", "Dee"]
SYSTEMS = ["urn:cin", "urn:mrn", "urn:x|y"]
STATUSES = ["active", "completed", "revoked", "draft"]
ORGS = ["org-hn", "org-ecm", "org-plan"]
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


@dataclass
class Data:
    """What the random store holds, for drawing query values from it."""

    patients: list[StoredResource] = field(default_factory=list)
    encounters: list[StoredResource] = field(default_factory=list)
    requests: list[StoredResource] = field(default_factory=list)
    tasks: list[StoredResource] = field(default_factory=list)
    identifiers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Store:
    repo: Repository
    prepared: SearchEngine
    core: SearchEngine
    data: Data


@pytest.fixture(scope="module")
def store(module_database_url: str) -> Iterator[Store]:
    registry = load_bundles([R4_SEARCH_PARAMETERS])
    engine = make_engine(module_database_url, EngineOptions(sqlite_synchronous="OFF"))
    repo = Repository(engine, indexer=lambda resource: extract_values(resource, registry))
    data = _populate(repo, random.Random(7))
    _analyze(engine)
    options: dict[str, Any] = {"default_count": 5, "max_count": 50, "max_includes": 6}
    yield Store(repo, SearchEngine(registry, **options), SearchEngine(registry, **options, prepared=False), data)
    engine.dispose()


def _analyze(engine: Engine) -> None:
    """Give PostgreSQL the statistics autovacuum would gather within a minute of these writes. Without
    them the planner takes the tables for as empty as when their indexes were built (estimates of one row)
    and nests loops over every subquery: a ``_has`` + ``name:text`` count under a health network's
    narrowing ran past the 30 s statement timeout on this store of 139 resources (0.02 s once analyzed),
    so whether a random query passed depended on whether autovacuum had run yet. SQLite plans without
    statistics (``gateway/search/sql.py``)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))


def _date(rng: random.Random) -> str:
    year, month, day = rng.choice([2023, 2024]), rng.randint(1, 12), rng.randint(1, 28)
    precision = rng.random()
    if precision < 0.15:
        return f"{year}"
    if precision < 0.3:
        return f"{year}-{month:02d}"
    if precision < 0.8:
        return f"{year}-{month:02d}-{day:02d}"
    return f"{year}-{month:02d}-{day:02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"


def _populate(repo: Repository, rng: random.Random) -> Data:
    data = Data()
    with repo.write() as tx:
        for org in ORGS:
            tx.create({"resourceType": "Organization", "id": org, "name": org})
        for n in range(36):
            identifiers = []
            for system in rng.sample(SYSTEMS, rng.randint(0, 2)):
                value = f"V{rng.randint(0, 20)}"
                identifiers.append({"system": system, "value": value, "type": {"text": "Medi-Cal CIN"}})
                data.identifiers.append((system, value))
            if rng.random() < 0.2:
                identifiers.append({"value": f"V{rng.randint(0, 20)}"})
            patient: JSONObject = {
                "resourceType": "Patient",
                "name": [{"family": rng.choice(FAMILIES), "given": [rng.choice(GIVEN)]}],
                "identifier": identifiers,
            }
            if rng.random() < 0.8:
                patient["gender"] = rng.choice(["female", "male", "other"])
            if rng.random() < 0.8:
                patient["birthDate"] = _date(rng)[:10]
            if rng.random() < 0.5:
                patient["managingOrganization"] = {"reference": f"Organization/{rng.choice(ORGS)}"}
            if n % 9 == 0:
                patient["generalPractitioner"] = [{"reference": f"{BASE}/Organization/{rng.choice(ORGS)}"}]
            data.patients.append(tx.create(patient))
        for _ in range(50):
            subject = rng.choice(data.patients)
            visit: JSONObject = {"resourceType": "Encounter", "status": rng.choice(["finished", "planned"])}
            visit["class"] = {"code": "AMB"}
            if rng.random() < 0.9:
                visit["subject"] = {"reference": f"Patient/{subject.res_id}"}
            if rng.random() < 0.8:
                start = _date(rng)
                visit["period"] = {"start": start} if rng.random() < 0.3 else {"start": start, "end": start}
            if rng.random() < 0.5:
                visit["length"] = {"value": rng.choice([5, 10, 10.5, 30]), "unit": "min"}
            data.encounters.append(tx.create(visit))
        for _ in range(30):
            subject = rng.choice(data.patients)
            request: JSONObject = {
                "resourceType": "ServiceRequest",
                "status": rng.choice(STATUSES),
                "intent": "order",
                "subject": {"reference": f"Patient/{subject.res_id}"},
                "performer": [{"reference": f"Organization/{rng.choice(ORGS)}"}],
                "requester": {"reference": f"Organization/{rng.choice(ORGS)}"},
                "authoredOn": _date(rng),
                "code": {"coding": [{"system": "urn:code", "code": rng.choice(["ecm", "cs", "x"])}]},
            }
            data.requests.append(tx.create(request))
        for focus in rng.sample(data.requests, 20):
            task: JSONObject = {
                "resourceType": "Task",
                "status": rng.choice(["requested", "accepted", "completed"]),
                "intent": "order",
                "focus": {"reference": f"ServiceRequest/{focus.res_id}"},
                "for": {"reference": f"Patient/{rng.choice(data.patients).res_id}"},
                "owner": {"reference": f"Organization/{rng.choice(ORGS)}"},
            }
            data.tasks.append(tx.create(task))
    for gone in (data.patients[3], data.encounters[5], data.requests[2]):
        with repo.write() as tx:
            current = current_version(tx.conn, gone.res_type, gone.res_id)
            assert current is not None
            tx.delete(current)
    return data


# -- random queries -------------------------------------------------------------------------------------


def _token(rng: random.Random, data: Data) -> str:
    system, value = rng.choice(data.identifiers)
    form = rng.randrange(4)
    return [f"{system}|{value}", f"|{value}", f"{system}|", value][form].replace("x|y", "x\\|y")


def _reference(rng: random.Random, target: StoredResource) -> str:
    form = rng.randrange(4)
    return [f"{target.res_type}/{target.res_id}", target.res_id, f"{BASE}/{target.res_type}/{target.res_id}",
            f"http://elsewhere.org/{target.res_type}/{target.res_id}"][form]  # fmt: skip


def _string(rng: random.Random) -> str:
    family = rng.choice(FAMILIES)
    return family[: rng.randint(1, len(family))].replace("\\", "\\\\").lower() if rng.random() < 0.7 else family


def _criterion(rng: random.Random, data: Data, res_type: str) -> tuple[str, str]:
    def dates() -> str:
        return ",".join(rng.choice(PREFIXES) + _date(rng) for _ in range(rng.choice([1, 1, 2])))

    patient = rng.choice(data.patients)
    if res_type == "Patient":
        choices: list[tuple[str, str]] = [
            ("identifier", _token(rng, data)),
            ("identifier", ",".join(_token(rng, data) for _ in range(3))),
            ("identifier:not", _token(rng, data)),
            ("identifier:missing", rng.choice(["true", "false"])),
            ("identifier:text", rng.choice(["medi", "cin", "cal", "zz"])),
            ("family", _string(rng)),
            ("family:exact", rng.choice(FAMILIES)),
            ("family:contains", rng.choice(["a", "%", "_", "'", "arc", "\\\\"])),
            ("name:text", rng.choice(["ann", "gar", "o'b", "lee"])),
            ("given", rng.choice(GIVEN).lower()),
            ("birthdate", dates()),
            ("gender", rng.choice(["female", "male", "other,male"])),
            ("gender:missing", rng.choice(["true", "false"])),
            ("_id", ",".join(p.res_id for p in rng.sample(data.patients, rng.randint(1, 3)))),
            ("_id:not", patient.res_id),
            ("_lastUpdated", rng.choice(["gt2020-01-01", "lt2020-01-01", "ge2020", "le2100"])),
            ("organization", f"Organization/{rng.choice(ORGS)}"),
            ("general-practitioner", f"{BASE}/Organization/{rng.choice(ORGS)}"),
            ("general-practitioner:missing", rng.choice(["true", "false"])),
            ("_has:Encounter:subject:status", rng.choice(["finished", "planned"])),
            ("_has:ServiceRequest:subject:code", f"urn:code|{rng.choice(['ecm', 'cs'])}"),
        ]
    elif res_type == "Encounter":
        choices = [
            ("subject", _reference(rng, patient)),
            ("subject:Patient", patient.res_id),
            ("subject:missing", rng.choice(["true", "false"])),
            ("date", dates()),
            ("date", rng.choice(["ge", "gt"]) + _date(rng)),
            ("date", rng.choice(["lt", "le"]) + _date(rng)),
            ("status", rng.choice(["finished", "planned", "finished,planned"])),
            ("status:not", "finished"),
            (
                "length",
                rng.choice(["10", "gt9", "le10.5", "ne10", "ap30", "10||min", "10|http://unitsofmeasure.org|min"]),
            ),
            ("subject.family", _string(rng)),
            ("subject:Patient.identifier", _token(rng, data)),
            ("subject.birthdate", dates()),
            ("subject.gender:missing", rng.choice(["true", "false"])),
        ]
    elif res_type == "ServiceRequest":
        choices = [
            ("subject", _reference(rng, patient)),
            ("status", ",".join(rng.sample(STATUSES, rng.randint(1, 2)))),
            ("authored", dates()),
            ("code", f"urn:code|{rng.choice(['ecm', 'cs', 'x'])}"),
            ("performer", f"Organization/{rng.choice(ORGS)}"),
            ("requester:Organization", rng.choice(ORGS)),
            ("subject.identifier", _token(rng, data)),
            ("_has:Task:focus:status", rng.choice(["requested", "accepted"])),
        ]
    else:
        choices = [
            ("patient", _reference(rng, patient)),
            ("focus", f"ServiceRequest/{rng.choice(data.requests).res_id}"),
            ("status", rng.choice(["requested", "accepted", "completed"])),
            ("owner", f"Organization/{rng.choice(ORGS)}"),
            ("focus:ServiceRequest.status", rng.choice(STATUSES)),
        ]
    return rng.choice(choices)


SORTS = {
    "Patient": ["family", "-birthdate", "_id", "-_lastUpdated", "given,-_id", "gender,family", "-family,birthdate"],
    "Encounter": ["date", "-date", "status,-date", "_lastUpdated", "-length"],
    "ServiceRequest": ["-authored", "status", "code,_id"],
    "Task": ["status", "-_id"],
}
INCLUDES = {
    "Patient": [("_revinclude", "Encounter:subject"), ("_revinclude:iterate", "Task:focus"),
                ("_revinclude", "ServiceRequest:subject"), ("_include", "Patient:organization"), ("_revinclude", "*")],
    "Encounter": [("_include", "Encounter:subject"), ("_include", "Encounter:subject:Patient"), ("_include", "*")],
    "ServiceRequest": [("_include", "ServiceRequest:subject"), ("_revinclude", "Task:focus"),
                       ("_include:iterate", "Patient:organization"), ("_include", "ServiceRequest:performer")],
    "Task": [("_include", "Task:focus"), ("_include:iterate", "ServiceRequest:subject"), ("_include", "Task:owner")],
}  # fmt: skip


def random_query(rng: random.Random, data: Data) -> tuple[str, QueryParams]:
    """A resource type and a random query of it."""
    res_type = rng.choice(["Patient", "Patient", "Encounter", "ServiceRequest", "Task"])
    params: QueryParams = [_criterion(rng, data, res_type) for _ in range(rng.choice([0, 1, 1, 2, 2, 3]))]
    if rng.random() < 0.4:
        params.append(("_sort", rng.choice(SORTS[res_type])))
    if rng.random() < 0.6:
        params.append(("_count", str(rng.choice([0, 1, 2, 3, 7]))))
    for _ in range(rng.choice([0, 0, 1, 2])):
        params.append(rng.choice(INCLUDES[res_type]))
    if rng.random() < 0.2:
        params.append(("_total", rng.choice(["accurate", "estimate", "none"])))
    if rng.random() < 0.15:
        params.append(("_summary", rng.choice(["count", "true", "data"])))
    elif rng.random() < 0.1:
        params.append(("_elements", "identifier,status"))
    if rng.random() < 0.1:
        params.append(("unknown-param", "x"))
    rng.shuffle(params)
    return res_type, params


# -- narrowings -----------------------------------------------------------------------------------------


def _grant(scope: str, **extra: Any) -> Grant:
    return Grant(subject="u", client_id="c", scope=scope, token_id="t", expires_at=2**31, **extra)


def _roles(org: str) -> frozenset[str]:
    return frozenset({"plan"} if org == "org-plan" else {"health-network"} if org == "org-hn" else {"ecm-provider"})


def narrowings(store: Store) -> dict[str, Narrowing | None]:
    """The narrowings every query runs under (a few real access grants, and a plain condition)."""
    registry = store.core.registry
    hidden = store.data.patients[0].res_id

    def not_hidden(table: FromClause, _types: Sequence[str] | None) -> ColumnElement[bool]:
        return table.c.res_id != hidden

    patient = store.data.patients[1].res_id
    grants = {
        "patient": Access(_grant("patient/*.rs", patient=patient), registry, None),
        "ecm-org": Access(_grant("user/*.rs", organization="org-ecm"), registry, _roles),
        "hn-granular": Access(
            _grant("user/Patient.rs?gender=female user/Encounter.rs user/ServiceRequest.rs?status=active user/Task.rs",
                   organization="org-hn"), registry, _roles),
    }  # fmt: skip
    out: dict[str, Narrowing | None] = {"none": None, "not-hidden": not_hidden}
    for name, access in grants.items():
        dialect = store.repo.engine.dialect.name
        out[name] = access.narrowing(("Patient", "Encounter", "ServiceRequest", "Task", "Organization"), "rs",
                                     dialect=dialect)  # fmt: skip
    return out


# -- comparison -----------------------------------------------------------------------------------------


def _run(engine: SearchEngine, store: Store, res_type: str, params: QueryParams, narrowing: Narrowing | None) -> Any:
    try:
        with store.repo.connect() as conn:
            body = engine.search(conn, resource_type=res_type, params=params, base_url=BASE, narrowing=narrowing)
    except BadRequest as exc:
        return ("400", str(exc))
    bundle = orjson.loads(body)
    del bundle["id"], bundle["meta"]
    for entry in bundle.get("entry", []):
        if entry["search"]["mode"] == "outcome":
            del entry["fullUrl"]
    return bundle


def _next(bundle: Any) -> QueryParams | None:
    if not isinstance(bundle, dict):
        return None
    url = next((item["url"] for item in bundle["link"] if item["relation"] == "next"), None)
    return parse_qsl(urlsplit(url).query, keep_blank_values=True) if url else None


def test_random_queries_give_the_same_bundles_on_both_paths(store: Store) -> None:
    rng = random.Random(2024)
    compared = matched = 0
    for name, narrowing in narrowings(store).items():
        for _ in range(100):
            res_type, params = random_query(rng, store.data)
            for _page in range(3):  # the first pages, through the next links (keyset cursors)
                expected = _run(store.core, store, res_type, params, narrowing)
                actual = _run(store.prepared, store, res_type, params, narrowing)
                assert actual == expected, (name, res_type, params)
                compared += 1
                matched += bool(isinstance(expected, dict) and expected.get("entry"))
                following = _next(expected)
                if following is None:
                    break
                params = following
    assert compared > 500 and matched > 150  # the queries do find things


def test_random_conditional_matches_are_the_same_on_both_paths(store: Store) -> None:
    rng = random.Random(99)
    for _ in range(200):
        res_type, params = random_query(rng, store.data)
        criteria = [(k, v) for k, v in params if not k.startswith("_") or k.startswith(("_id", "_has", "_last"))]
        results: list[list[Match] | str] = []
        for engine in (store.core, store.prepared):
            try:
                with store.repo.connect() as conn:
                    results.append(engine.find(conn, resource_type=res_type, params=criteria, limit=3))
            except BadRequest as exc:
                results.append(str(exc))
        assert results[0] == results[1], (res_type, criteria)


def test_values_are_bound_never_inlined(store: Store) -> None:
    """Quotes, LIKE wildcards and backslashes in values are data on the prepared path."""
    for family in FAMILIES:
        for param in ("family", "family:exact", "family:contains", "name:text"):
            params = [(param, family.replace("\\", "\\\\"))]
            assert _run(store.prepared, store, "Patient", params, None) == _run(
                store.core, store, "Patient", params, None
            )
    injected = [("family", "x' OR '1'='1"), ("_id", "x') OR ('1'='1")]
    for query in injected:
        assert "entry" not in _run(store.prepared, store, "Patient", [query], None)


def test_the_narrowing_cache_is_bounded_and_reused() -> None:
    cache = NarrowingCache(size=3)
    dialect = sqlite.dialect()

    def narrowing_of(res_id: str) -> Narrowing:
        def narrowing(table: FromClause, _types: Sequence[str] | None) -> ColumnElement[bool]:
            return table.c.res_id != res_id

        return narrowing

    made = [narrowing_of(f"p{i}") for i in range(5)]
    texts = [cache.get(n, "resource", ("Patient",), dialect) for n in made]
    assert len(cache) == 3
    assert texts[4] == "resource.res_id != 'p4'"
    assert cache.get(made[4], "resource", ("Patient",), dialect) is texts[4]
    assert cache.get(made[0], "chain_patient", None, dialect) == "chain_patient.res_id != 'p0'"
    assert len(cache) == 3
