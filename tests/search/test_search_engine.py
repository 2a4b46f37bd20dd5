"""Search end to end: resources written through the Repository to a SQLite file, then searched.

Covers https://hl7.org/fhir/R4/search.html: every parameter type and modifier, prefixes, OR/AND,
escaping, chaining, _has, _sort with keyset paging, _include/_revinclude(:iterate), _summary,
_total, _elements, lenient/strict handling of unknown parameters and the 400s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from sqlalchemy import ColumnElement, FromClause

from gateway.errors import BadRequest
from gateway.search.dates import instant_now
from gateway.search.engine import Match, Narrowing, SearchEngine
from gateway.search.extract import extract_values
from gateway.search.registry import R4_SEARCH_PARAMETERS, Registry, load_bundles
from gateway.store.database import EngineOptions, make_engine
from gateway.store.repository import Repository, StoredResource, current_version
from gateway.types import JSONObject, QueryParams

BASE = "http://test.local/fhir"

LENGTH_VALUE: dict[str, object] = {
    "resourceType": "SearchParameter",
    "url": "http://example.org/fhir/SearchParameter/Encounter-length-value",
    "code": "length-value",
    "type": "number",
    "base": ["Encounter"],
    "expression": "Encounter.length.value",
}
"""A number parameter for the tests: no served R4 resource type has one."""


@pytest.fixture(scope="module")
def registry() -> Registry:
    registry = load_bundles([R4_SEARCH_PARAMETERS])
    registry.add(LENGTH_VALUE)
    return registry


@dataclass
class Store:
    repo: Repository
    engine: SearchEngine

    def create(self, resource: JSONObject) -> StoredResource:
        with self.repo.write() as tx:
            return tx.create(dict(resource))

    def update(self, stored: StoredResource, resource: JSONObject) -> StoredResource:
        with self.repo.write() as tx:
            return tx.update({**resource, "id": stored.res_id}, stored)

    def delete(self, stored: StoredResource) -> None:
        with self.repo.write() as tx:
            current = current_version(tx.conn, stored.res_type, stored.res_id)
            assert current is not None
            tx.delete(current)

    def search(
        self,
        resource_type: str | None,
        query: str | QueryParams = "",
        *,
        strict: bool = False,
        narrowing: Narrowing | None = None,
    ) -> JSONObject:
        params = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else query
        with self.repo.connect() as conn:
            body = self.engine.search(
                conn, resource_type=resource_type, params=params, base_url=BASE, strict=strict, narrowing=narrowing
            )
        bundle: JSONObject = orjson.loads(body)
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        return bundle

    def ids(self, resource_type: str | None, query: str = "", **kwargs: Any) -> list[str]:
        """Ids of the match entries, in order."""
        return match_ids(self.search(resource_type, query, **kwargs))

    def follow(self, resource_type: str | None, bundle: JSONObject, relation: str = "next") -> JSONObject | None:
        """The page a link of ``bundle`` points to (the link parsed as a client would)."""
        url = link(bundle, relation)
        if url is None:
            return None
        return self.search(resource_type, parse_qsl(urlsplit(url).query, keep_blank_values=True))

    def find(self, resource_type: str, query: str, limit: int = 10) -> list[Match]:
        with self.repo.connect() as conn:
            return self.engine.find(
                conn, resource_type=resource_type, params=parse_qsl(query, keep_blank_values=True), limit=limit
            )


@pytest.fixture
def store(database_url: str, registry: Registry) -> Iterator[Store]:
    """A Repository on the shared per-test database (SQLite and PostgreSQL, see tests/conftest.py)."""
    engine = make_engine(database_url, EngineOptions(sqlite_synchronous="OFF"))
    repo = Repository(engine, indexer=lambda resource: extract_values(resource, registry))
    yield Store(repo, SearchEngine(registry, default_count=20, max_count=50, max_includes=10))
    engine.dispose()


def match_ids(bundle: JSONObject) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def included(bundle: JSONObject) -> list[tuple[str, str]]:
    entries = bundle.get("entry", [])
    return sorted(
        (e["resource"]["resourceType"], e["resource"]["id"]) for e in entries if e["search"]["mode"] == "include"
    )


def link(bundle: JSONObject, relation: str) -> str | None:
    return next((item["url"] for item in bundle["link"] if item["relation"] == relation), None)


def patient(
    family: str, given: str = "Ann", *, gender: str | None = "female", birth: str | None = None, **extra: Any
) -> JSONObject:
    resource: JSONObject = {"resourceType": "Patient", "name": [{"family": family, "given": [given]}], **extra}
    if gender is not None:
        resource["gender"] = gender
    if birth is not None:
        resource["birthDate"] = birth
    return resource


def encounter(
    subject: StoredResource | str | JSONObject | None, *, status: str = "finished", **extra: Any
) -> JSONObject:
    resource: JSONObject = {"resourceType": "Encounter", "status": status, "class": {"code": "AMB"}, **extra}
    if isinstance(subject, dict):
        resource["subject"] = subject
    elif isinstance(subject, str):
        resource["subject"] = {"reference": subject}
    elif subject is not None:
        resource["subject"] = ref(subject)
    return resource


def ref(stored: StoredResource) -> JSONObject:
    return {"reference": f"{stored.res_type}/{stored.res_id}"}


# -- token (https://hl7.org/fhir/R4/search.html#token) ------------------------------------------------


def test_token_forms_and_modifiers(store: Store) -> None:
    sys_a, sys_b = "urn:oid:1.2.3", "urn:oid:9.9.9"
    a = store.create(patient("A", identifier=[{"system": sys_a, "value": "X1", "type": {"text": "Medi-Cal CIN"}}]))
    b = store.create(patient("B", gender="male", identifier=[{"system": sys_b, "value": "X1"}]))
    c = store.create(patient("C", gender=None, identifier=[{"value": "X1"}]))
    assert store.ids("Patient", "identifier=X1") == [a.res_id, b.res_id, c.res_id]
    assert store.ids("Patient", f"identifier={sys_a}|X1") == [a.res_id]
    assert store.ids("Patient", "identifier=|X1") == [c.res_id]
    assert store.ids("Patient", f"identifier={sys_b}|") == [b.res_id]
    assert store.ids("Patient", "gender=male") == [b.res_id]
    assert store.ids("Patient", "gender:not=male") == [a.res_id, c.res_id]  # :not includes "no value"
    assert store.ids("Patient", "gender:missing=true") == [c.res_id]
    assert store.ids("Patient", "gender:missing=false") == [a.res_id, b.res_id]
    assert store.ids("Patient", "identifier:text=medi") == [a.res_id]
    assert store.ids("Patient", "identifier:text=cin") == [a.res_id]  # any word of the text


def test_tag_and_security(store: Store) -> None:
    tagged = store.create(patient("A", meta={"tag": [{"system": "urn:calaim", "code": "ecm"}]}))
    store.create(patient("B"))
    assert store.ids("Patient", "_tag=urn:calaim|ecm") == [tagged.res_id]
    assert store.ids("Patient", "_tag:missing=false") == [tagged.res_id]


def test_missing_on_every_parameter_type(store: Store) -> None:
    full = store.create(
        encounter(
            "Patient/p1",
            period={"start": "2024-05-01"},
            length={"value": 5, "unit": "min"},
            identifier=[{"value": "E1"}],
            meta={"profile": ["http://acme.org/p"]},
        )
    )
    empty = store.create(encounter(None))
    for param in ("subject", "date", "length", "length-value", "identifier", "_profile"):
        assert store.ids("Encounter", f"{param}:missing=true") == [empty.res_id], param
        assert store.ids("Encounter", f"{param}:missing=false") == [full.res_id], param
    assert store.ids("Encounter", "reason-code:missing=true") == [full.res_id, empty.res_id]


def test_id_and_last_updated(store: Store) -> None:
    first = store.create(patient("A"))
    while instant_now()[1] == first.last_updated:  # lastUpdated has millisecond precision
        time.sleep(0.001)
    second = store.create(patient("B"))
    assert store.ids("Patient", f"_id={second.res_id}") == [second.res_id]
    assert store.ids("Patient", f"_id={first.res_id},{second.res_id}") == [first.res_id, second.res_id]
    stamp = orjson.loads(second.body or b"{}")["meta"]["lastUpdated"]
    assert store.ids("Patient", f"_lastUpdated=ge{stamp}") == [second.res_id]
    assert store.ids("Patient", f"_lastUpdated=lt{stamp}") == (
        [first.res_id] if first.last_updated < second.last_updated else []
    )
    assert store.ids("Patient", "_lastUpdated=gt2000-01-01") == [first.res_id, second.res_id]
    assert store.ids("Patient", "_lastUpdated=lt2000-01-01") == []


# -- string (https://hl7.org/fhir/R4/search.html#string) ----------------------------------------------


def test_string_default_exact_contains_text(store: Store) -> None:
    muller = store.create(patient("Müller", "Hans Peter"))
    miller = store.create(patient("Miller", "Eve"))
    assert store.ids("Patient", "name=MUL") == [muller.res_id]  # starts-with, case and accent folded
    assert store.ids("Patient", "name=mi") == [miller.res_id]
    assert store.ids("Patient", "family=ller") == []
    assert store.ids("Patient", "family:contains=LLER") == [muller.res_id, miller.res_id]
    assert store.ids("Patient", "family:exact=Müller") == [muller.res_id]
    assert store.ids("Patient", "family:exact=muller") == []
    assert store.ids("Patient", "given:text=peter") == [muller.res_id]  # a word of the value
    assert store.ids("Patient", "given=peter") == []
    assert store.ids("Patient", "name:missing=true") == []


def test_or_and_and(store: Store) -> None:
    a = store.create(patient("Alpha", gender="female"))
    b = store.create(patient("Beta", gender="male"))
    store.create(patient("Gamma", gender="male"))
    assert store.ids("Patient", "name=alpha,beta") == [a.res_id, b.res_id]
    assert store.ids("Patient", "name=alpha,beta&gender=male") == [b.res_id]
    assert store.ids("Patient", "family=a&family=b") == []  # AND over repetitions of one parameter


def test_escaping(store: Store) -> None:
    comma = store.create(patient("Smith, Jr"))
    pipe = store.create(patient("X", identifier=[{"system": "urn:s", "value": "a|b"}]))
    assert store.ids("Patient", r"family:exact=Smith\, Jr") == [comma.res_id]
    assert store.ids("Patient", r"family=smith\,") == [comma.res_id]
    assert store.ids("Patient", r"identifier=urn:s|a\|b") == [pipe.res_id]


# -- uri (https://hl7.org/fhir/R4/search.html#uri) ----------------------------------------------------


def test_uri_exact_above_below_contains(store: Store) -> None:
    profile = "http://acme.org/fhir/StructureDefinition/member"
    member = store.create(patient("A", meta={"profile": [profile]}))
    store.create(patient("B", meta={"profile": ["http://other.org/fhir/StructureDefinition/x"]}))
    assert store.ids("Patient", f"_profile={profile}") == [member.res_id]
    assert store.ids("Patient", "_profile=http://acme.org/fhir") == []
    assert store.ids("Patient", "_profile:below=http://acme.org/fhir/") == [member.res_id]
    assert store.ids("Patient", f"_profile:above={profile}/extra/path") == [member.res_id]
    assert store.ids("Patient", "_profile:contains=StructureDefinition/mem") == [member.res_id]
    assert store.ids("Patient", "_profile:missing=true") == []


# -- date (https://hl7.org/fhir/R4/search.html#date, #prefix) -----------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # Encounters: may = May 2024 (whole month), d1 = 2024-05-01 10:00-11:00, open = from 2024-06-01 on
        ("date=2024-05", ["may", "d1"]),
        ("date=eq2024-05-01", ["d1"]),
        ("date=ne2024-05-01", ["may", "open"]),
        ("date=gt2024-05-01", ["may", "open"]),
        ("date=lt2024-05-01", []),  # May starts with the searched day: nothing of it lies below
        ("date=lt2024-05-02", ["may", "d1"]),
        ("date=ge2024-05-01", ["may", "d1", "open"]),
        ("date=le2024-05-01", ["d1"]),  # below it: nothing of May; contained in it: only d1
        ("date=le2024-05-31", ["may", "d1"]),
        ("date=sa2024-05-31", ["open"]),
        ("date=eb2024-05-01", []),
        ("date=eb2024-06-01", ["may", "d1"]),
        ("date=ge2024-05-01&date=lt2024-05-02", ["may", "d1"]),
        ("date=ge2024-05-01T10:30:00Z&date=le2024-05-01T10:30:00Z", ["may", "d1"]),  # both overlap 10:30
        ("date=ge2024-05-02&date=le2024-05-30", ["may"]),
        ("date=2024-05-01T10:00:00Z,2024", ["may", "d1"]),
        ("date=2024-05-01T10:00Z", []),  # minute precision: [10:00, 10:01) does not contain 10:00-11:00
        ("date=2024-05-01T10Z", "400"),
    ],
)
def test_date_prefixes(store: Store, query: str, expected: list[str] | str) -> None:
    names = {
        "may": {"start": "2024-05", "end": "2024-05"},
        "d1": {"start": "2024-05-01T10:00:00Z", "end": "2024-05-01T11:00:00Z"},
        "open": {"start": "2024-06-01"},
    }
    ids = {store.create(encounter(None, period=period)).res_id: name for name, period in names.items()}
    if expected == "400":
        with pytest.raises(BadRequest, match="date"):
            store.search("Encounter", query)
        return
    assert [ids[i] for i in store.ids("Encounter", query)] == expected


def test_approximate_date_is_within_a_day_near_now(store: Store) -> None:
    now = datetime.now(UTC)
    recent = store.create(encounter(None, period={"start": (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")}))
    store.create(
        encounter(
            None,
            period={"start": (now - timedelta(days=30)).isoformat(), "end": (now - timedelta(days=29)).isoformat()},
        )
    )
    day = (now - timedelta(days=3)).strftime("%Y-%m-%d")
    assert store.ids("Encounter", f"date=ap{day}") == [recent.res_id]


def test_birthdate_precision(store: Store) -> None:
    exact = store.create(patient("A", birth="1980-02-03"))
    year = store.create(patient("B", birth="1980"))
    assert store.ids("Patient", "birthdate=1980") == [exact.res_id, year.res_id]
    assert store.ids("Patient", "birthdate=1980-02") == [exact.res_id]  # a whole year is not inside February
    assert store.ids("Patient", "birthdate=ap1980-02-03") == [exact.res_id, year.res_id]


# -- number and quantity (https://hl7.org/fhir/R4/search.html#number, #quantity) ---------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("length-value=100", ["100", "99.6"]),  # 100 at 3 significant figures: [99.5, 100.5]
        ("length-value=100.0", ["100"]),
        ("length-value=1e2", ["100", "99.6"]),
        ("length-value=ne100", ["5.4", "0"]),
        ("length-value=gt99.6", ["100"]),
        ("length-value=ge99.6", ["100", "99.6"]),
        ("length-value=lt5.4", ["0"]),
        ("length-value=le5.4", ["5.4", "0"]),
        ("length-value=sa5.4", ["100", "99.6"]),
        ("length-value=eb5.4", ["0"]),
        ("length-value=ap95", ["100", "99.6"]),
        ("length-value=gt-1&length-value=lt1", ["0"]),
        ("length=5.4||min", ["5.4"]),
        ("length=5.4|http://unitsofmeasure.org|min", ["5.4"]),
        ("length=5.4|http://unitsofmeasure.org|h", []),
        ("length=gt50||minutes", ["100"]),  # ||code also matches the human-readable unit
        ("length=le5.4", ["5.4", "0"]),
        ("length-value=abc", "400"),
        ("length-value=xx5", "400"),
    ],
)
def test_number_and_quantity(store: Store, query: str, expected: list[str] | str) -> None:
    ids = {}
    for value, unit in (("100", "minutes"), ("99.6", "h"), ("5.4", "min"), ("0", "min")):
        quantity = {"value": float(value), "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
        if value == "100":
            quantity.pop("code")
            quantity["value"] = 100
        ids[store.create(encounter(None, length=quantity)).res_id] = value
    if expected == "400":
        with pytest.raises(BadRequest, match="length-value"):
            store.search("Encounter", query)
        return
    assert sorted(ids[i] for i in store.ids("Encounter", query)) == sorted(expected)


# -- reference (https://hl7.org/fhir/R4/search.html#reference) ----------------------------------------


def test_reference_forms(store: Store) -> None:
    ann = store.create(patient("Ann"))
    org = store.create({"resourceType": "Organization", "name": "Acme"})
    local = store.create(encounter(ann))
    absolute_here = store.create(encounter(f"{BASE}/Patient/{ann.res_id}"))
    elsewhere = store.create(encounter(f"http://elsewhere.org/fhir/Patient/{ann.res_id}"))
    by_identifier = store.create(
        encounter({"identifier": {"system": "urn:cin", "value": "91000001A"}, "type": "Patient"})
    )
    org_task = store.create({"resourceType": "Task", "status": "draft", "intent": "order", "owner": ref(org)})
    mine = [local.res_id, absolute_here.res_id]
    assert store.ids("Encounter", f"subject={ann.res_id}") == mine
    assert store.ids("Encounter", f"subject=Patient/{ann.res_id}") == mine
    assert store.ids("Encounter", f"subject:Patient={ann.res_id}") == mine
    assert store.ids("Encounter", f"subject={BASE}/Patient/{ann.res_id}") == mine
    assert store.ids("Encounter", f"subject=http://elsewhere.org/fhir/Patient/{ann.res_id}") == [elsewhere.res_id]
    assert store.ids("Encounter", "subject:identifier=urn:cin|91000001A") == [by_identifier.res_id]
    assert store.ids("Encounter", "subject:missing=true") == []
    assert store.ids("Task", f"owner={org.res_id}") == [org_task.res_id]
    assert store.ids("Task", f"owner:Practitioner={org.res_id}") == []
    assert store.ids("Task", f"owner:Organization={org.res_id}") == [org_task.res_id]


def test_canonical_reference(store: Store) -> None:
    canonical = "http://acme.org/fhir/ActivityDefinition/ecm-outreach"
    request = store.create(
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/x"},
            "instantiatesCanonical": [f"{canonical}|2.0"],
        }
    )
    assert store.ids("ServiceRequest", f"instantiates-canonical={canonical}") == [request.res_id]
    assert store.ids("ServiceRequest", f"instantiates-canonical={canonical}|2.0") == [request.res_id]
    assert store.ids("ServiceRequest", "instantiates-canonical=http://acme.org/other") == []


# -- chaining and _has (https://hl7.org/fhir/R4/search.html#chaining, #has) -----------------------------


def test_chained_parameters(store: Store) -> None:
    ann = store.create(patient("Smith", identifier=[{"system": "urn:cin", "value": "A1"}]))
    bob = store.create(patient("Jones", gender=None, identifier=[{"system": "urn:cin", "value": "B2"}]))
    ann_visit = store.create(encounter(ann))
    bob_visit = store.create(encounter(bob, status="planned"))
    assert store.ids("Encounter", "subject:Patient.identifier=urn:cin|A1") == [ann_visit.res_id]
    assert store.ids("Encounter", "subject.identifier=urn:cin|B2") == [bob_visit.res_id]
    assert store.ids("Encounter", "subject.name=smith") == [ann_visit.res_id]
    assert store.ids("Encounter", "subject.name=smith,jones") == [ann_visit.res_id, bob_visit.res_id]
    assert store.ids("Encounter", "subject.name=smith,jones&status=planned") == [bob_visit.res_id]
    assert store.ids("Encounter", "subject.name=smith&subject.gender=male") == []  # AND of two chains
    assert store.ids("Encounter", "subject.gender:missing=true") == [bob_visit.res_id]
    assert store.ids("Encounter", "subject.birthdate=lt2000") == []


def test_chain_over_several_target_types(store: Store) -> None:
    person = store.create({"resourceType": "Practitioner", "name": [{"family": "Acme"}]})
    org = store.create({"resourceType": "Organization", "name": "Acme Health"})
    other = store.create({"resourceType": "Organization", "name": "Other"})
    tasks = {
        name: store.create({"resourceType": "Task", "status": "draft", "intent": "order", "owner": ref(owner)}).res_id
        for name, owner in (("person", person), ("org", org), ("other", other))
    }
    assert store.ids("Task", "owner.name=acme") == [tasks["person"], tasks["org"]]
    assert store.ids("Task", "owner:Organization.name=acme") == [tasks["org"]]


def test_chain_ignores_deleted_targets(store: Store) -> None:
    ann = store.create(patient("Smith"))
    store.create(encounter(ann))
    store.delete(ann)
    assert store.ids("Encounter", "subject.name=smith") == []


def test_has(store: Store) -> None:
    ann = store.create(patient("Ann"))
    bob = store.create(patient("Bob"))
    store.create(encounter(ann, status="finished"))
    store.create(encounter(bob, status="planned"))
    assert store.ids("Patient", "_has:Encounter:subject:status=finished") == [ann.res_id]
    assert store.ids("Patient", "_has:Encounter:subject:status=finished,planned") == [ann.res_id, bob.res_id]
    assert store.ids("Patient", "_has:Encounter:patient:status=cancelled") == []


# -- _sort and keyset paging (https://hl7.org/fhir/R4/search.html#sort, #paging) -----------------------


def all_pages(store: Store, resource_type: str, query: str) -> list[list[str]]:
    pages = []
    bundle: JSONObject | None = store.search(resource_type, query)
    while bundle is not None:
        pages.append(match_ids(bundle))
        bundle = store.follow(resource_type, bundle)
    return pages


def test_sort_by_string_date_token_and_columns(store: Store) -> None:
    carol = store.create(patient("Carol", birth="1990-01-01", gender="female"))
    alice = store.create(patient("alice", birth="1970-06-01", gender="male"))
    bob = store.create(patient("Bob", birth=None, gender="other"))
    assert store.ids("Patient", "_sort=family") == [alice.res_id, bob.res_id, carol.res_id]  # case-folded
    assert store.ids("Patient", "_sort=-family") == [carol.res_id, bob.res_id, alice.res_id]
    assert store.ids("Patient", "_sort=birthdate") == [alice.res_id, carol.res_id, bob.res_id]  # no value: last
    assert store.ids("Patient", "_sort=-birthdate") == [carol.res_id, alice.res_id, bob.res_id]
    assert store.ids("Patient", "_sort=gender") == [carol.res_id, alice.res_id, bob.res_id]
    assert store.ids("Patient", "_sort=-_lastUpdated") == [bob.res_id, alice.res_id, carol.res_id]
    assert store.ids("Patient", "_sort=_id") == sorted([carol.res_id, alice.res_id, bob.res_id])
    assert store.ids("Patient", "_sort=gender,-family") == [carol.res_id, alice.res_id, bob.res_id]


def test_sort_by_number(store: Store) -> None:
    ids = [store.create(encounter(None, length={"value": v})).res_id for v in (3, 1, 2)]
    assert store.ids("Encounter", "_sort=length-value") == [ids[1], ids[2], ids[0]]
    assert store.ids("Encounter", "_sort=-length-value") == [ids[0], ids[2], ids[1]]


@pytest.mark.parametrize(
    "sort", ["", "_sort=family&", "_sort=-birthdate&", "_sort=-_lastUpdated&", "_sort=gender,-family&"]
)
def test_keyset_pages_cover_every_match_once(store: Store, sort: str) -> None:
    names = ["Kim", "Lee", "Ng", "Diaz", "Park", "Cho", "Abe", "Lee", "Ito", "Kim", "Zhu"]
    for i, name in enumerate(names):
        store.create(patient(name, gender=("female", "male")[i % 2], birth=None if i % 4 == 0 else f"19{50 + i}"))
    pages = all_pages(store, "Patient", f"{sort}_count=3")
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    flat = [i for page in pages for i in page]
    assert flat == store.ids("Patient", f"{sort}_count=50")
    assert len(set(flat)) == len(names)


def test_paging_is_stable_under_concurrent_inserts_and_updates(store: Store) -> None:
    stored = {name: store.create(patient(name)) for name in ("Baker", "Davis", "Evans", "Grant", "Hill", "Jones")}
    first = store.search("Patient", "_sort=family&_count=2")
    assert match_ids(first) == [stored["Baker"].res_id, stored["Davis"].res_id]
    # Between fetches: one insert before the position (must not appear), one after (must), an update.
    store.create(patient("Adams"))
    late = store.create(patient("Irwin"))
    store.update(stored["Evans"], patient("Evans", "Zed"))
    second = store.follow("Patient", first)
    assert second is not None
    assert match_ids(second) == [stored["Evans"].res_id, stored["Grant"].res_id]
    third = store.follow("Patient", second)
    assert third is not None
    assert match_ids(third) == [stored["Hill"].res_id, late.res_id]
    fourth = store.follow("Patient", third)
    assert fourth is not None and match_ids(fourth) == [stored["Jones"].res_id]
    assert link(fourth, "next") is None


def test_default_order_pages_pick_up_new_resources_at_the_end(store: Store) -> None:
    made = [store.create(patient(f"P{i}")).res_id for i in range(3)]
    first = store.search("Patient", "_count=2")
    assert match_ids(first) == made[:2] and "total" not in first
    made.append(store.create(patient("P3")).res_id)
    second = store.follow("Patient", first)
    assert second is not None and match_ids(second) == made[2:]


def test_deleted_resources_never_match(store: Store) -> None:
    gone = store.create(patient("Gone"))
    kept = store.create(patient("Kept"))
    store.delete(gone)
    assert store.ids("Patient") == [kept.res_id]
    assert store.ids("Patient", f"_id={gone.res_id}") == []
    assert store.search("Patient", "_summary=count")["total"] == 1


def test_links_and_full_urls(store: Store) -> None:
    for name in ("A", "B", "C"):
        store.create(patient(name))
    bundle = store.search("Patient", "name=a,b,c&_count=2&unknown=1&_format=json")
    assert link(bundle, "self") == f"{BASE}/Patient?name=a,b,c&_count=2&_format=json"
    assert link(bundle, "first") == link(bundle, "self")
    next_url = link(bundle, "next")
    assert next_url is not None and next_url.startswith(f"{BASE}/Patient?name=a,b,c&_count=2&_format=json&_cursor=")
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"{BASE}/Patient/{entry['resource']['id']}"
    second = store.follow("Patient", bundle)
    assert second is not None and link(second, "self") == next_url
    assert link(second, "first") == link(bundle, "first")


def test_garbled_and_foreign_cursors_are_rejected(store: Store) -> None:
    for name in ("A", "B", "C"):
        store.create(patient(name))
    next_url = link(store.search("Patient", "_sort=family&_count=1"), "next")
    assert next_url is not None
    cursor = dict(parse_qsl(urlsplit(next_url).query))["_cursor"]
    for bad in ("nonsense!", "bm90IGpzb24", cursor[:-3], "WzEsMiwzXQ"):
        with pytest.raises(BadRequest, match="_cursor"):
            store.search("Patient", [("_sort", "family"), ("_count", "1"), ("_cursor", bad)])
    with pytest.raises(BadRequest, match="_cursor"):
        store.search("Patient", [("_sort", "-family"), ("_count", "1"), ("_cursor", cursor)])


# -- _include / _revinclude (https://hl7.org/fhir/R4/search.html#include, #revinclude) ------------------


def test_include_and_revinclude(store: Store) -> None:
    org = store.create({"resourceType": "Organization", "name": "Acme"})
    ann = store.create(patient("Ann", managingOrganization=ref(org)))
    bob = store.create(patient("Bob"))
    visits = [store.create(encounter(person)) for person in (ann, ann, bob)]
    provenance = store.create(
        {
            "resourceType": "Provenance",
            "target": [ref(visits[0])],
            "recorded": "2024-05-01T00:00:00Z",
            "agent": [{"who": ref(org)}],
        }
    )

    bundle = store.search("Encounter", "_include=Encounter:subject")
    assert match_ids(bundle) == [v.res_id for v in visits]
    assert included(bundle) == sorted([("Patient", ann.res_id), ("Patient", bob.res_id)])  # Ann only once
    assert bundle["total"] == 3  # includes are not counted

    assert included(store.search("Encounter", "_include=Encounter:subject:Organization")) == []
    assert included(store.search("Encounter", "_include=Encounter:subject:Patient")) == included(bundle)
    assert ("Patient", ann.res_id) in included(store.search("Encounter", "_include=*"))

    iterate = store.search("Encounter", "_include=Encounter:subject&_include:iterate=Patient:organization")
    assert ("Organization", org.res_id) in included(iterate)
    # Without :iterate, Patient:organization applies to the matches only (Encounters): nothing.
    assert ("Organization", org.res_id) not in included(
        store.search("Encounter", "_include=Encounter:subject&_include=Patient:organization")
    )

    reverse = store.search("Patient", f"_id={ann.res_id}&_revinclude=Encounter:subject")
    assert included(reverse) == sorted(("Encounter", v.res_id) for v in visits[:2])
    chained = store.search(
        "Patient", f"_id={ann.res_id}&_revinclude=Encounter:subject&_revinclude:iterate=Provenance:target"
    )
    assert ("Provenance", provenance.res_id) in included(chained)


def test_revinclude_wildcard(store: Store) -> None:
    ann = store.create(patient("Ann"))
    visit = store.create(encounter(ann))
    task = store.create({"resourceType": "Task", "status": "draft", "intent": "order", "for": ref(ann)})
    bundle = store.search("Patient", "_revinclude=*")
    assert included(bundle) == sorted([("Encounter", visit.res_id), ("Task", task.res_id)])


def test_include_never_duplicates_a_match(store: Store) -> None:
    ann = store.create(patient("Ann"))
    bob = store.create(patient("Bob", link=[{"other": ref(ann), "type": "seealso"}]))
    bundle = store.search("Patient", "_include=Patient:link")
    assert match_ids(bundle) == [ann.res_id, bob.res_id]
    assert included(bundle) == []


def test_include_skips_deleted_and_stops_at_max_includes(store: Store) -> None:
    people = [store.create(patient(f"P{i}")) for i in range(12)]
    for person in people:
        store.create(encounter(person))
    store.delete(people[0])
    bundle = store.search("Encounter", "_include=Encounter:subject&_count=50")
    assert ("Patient", people[0].res_id) not in included(bundle)
    assert len(included(bundle)) == 10  # max_includes of the fixture
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and "10" in outcome[0]["resource"]["issue"][0]["diagnostics"]


# -- _summary, _total, _elements (https://hl7.org/fhir/R4/search.html#summary, #total, #elements) ------


def test_summary_count_and_count_zero(store: Store) -> None:
    for name in ("A", "B", "C"):
        store.create(patient(name))
    for query in ("_summary=count", "_count=0", "family=a,b&_summary=count&_include=Patient:organization&x=1"):
        bundle = store.search("Patient", query)
        assert "entry" not in bundle
        assert bundle["total"] == (2 if query.startswith("family") else 3)
        assert "x=1" not in (link(bundle, "self") or "")


def test_total_modes(store: Store) -> None:
    for name in ("A", "B", "C"):
        store.create(patient(name))
    assert store.search("Patient")["total"] == 3  # free: the first page holds everything
    assert "total" not in store.search("Patient", "_count=2")
    assert store.search("Patient", "_count=2&_total=accurate")["total"] == 3
    assert store.search("Patient", "_count=2&_total=estimate")["total"] == 3
    assert "total" not in store.search("Patient", "_total=none")


def test_summary_modes(store: Store) -> None:
    store.create(
        patient(
            "Ann",
            birth="1980-01-01",
            text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Ann</div>'},
            maritalStatus={"text": "married"},
            deceasedBoolean=False,
            _birthDate={"extension": [{"url": "http://x", "valueString": "y"}]},
        )
    )

    def only_resource(query: str) -> JSONObject:
        resource: JSONObject = store.search("Patient", query)["entry"][0]["resource"]
        return resource

    summary = only_resource("_summary=true")
    assert {"name", "gender", "birthDate", "_birthDate", "deceasedBoolean", "id", "meta"} <= set(summary)
    assert "maritalStatus" not in summary and "text" not in summary
    assert any(tag["code"] == "SUBSETTED" for tag in summary["meta"]["tag"])
    text = only_resource("_summary=text")
    assert set(text) == {"resourceType", "id", "meta", "text"}
    data = only_resource("_summary=data")
    assert "text" not in data and "maritalStatus" in data
    full = only_resource("_summary=false")
    assert "text" in full and "tag" not in full["meta"]


def test_elements(store: Store) -> None:
    org = store.create({"resourceType": "Organization", "name": "Acme", "active": True})
    store.create(patient("Ann", birth="1980-01-01", managingOrganization=ref(org)))
    bundle = store.search("Patient", "_elements=birthDate&_include=Patient:organization")
    match, include = bundle["entry"]
    assert set(match["resource"]) == {"resourceType", "id", "meta", "birthDate"}
    assert any(tag["code"] == "SUBSETTED" for tag in match["resource"]["meta"]["tag"])
    assert include["resource"]["name"] == "Acme"  # unprefixed names apply to matches only
    trimmed = store.search("Patient", "_elements=birthDate,Organization.name&_include=Patient:organization")
    assert set(trimmed["entry"][1]["resource"]) == {"resourceType", "id", "meta", "name"}
    # Encounter.status and class are mandatory (min 1): kept even when not listed
    store.create(encounter(None, status="planned"))
    kept = store.search("Encounter", "_elements=subject")["entry"][0]["resource"]
    assert {"status", "class"} <= set(kept)


# -- unknown parameters, strictness, 400s ---------------------------------------------------------------


def test_unknown_parameters_lenient_and_strict(store: Store) -> None:
    ann = store.create(patient("Ann"))
    bundle = store.search("Patient", "foo=1&name=ann&bar:exact=2")
    assert match_ids(bundle) == [ann.res_id]
    outcome = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcome) == 1 and outcome[0]["resourceType"] == "OperationOutcome"
    diagnostics = " ".join(issue["diagnostics"] for issue in outcome[0]["issue"])
    assert "'foo'" in diagnostics and "'bar:exact'" in diagnostics
    with pytest.raises(BadRequest, match="'foo'"):
        store.search("Patient", "foo=1&name=ann", strict=True)


@pytest.mark.parametrize(
    "query",
    [
        "name:foo=x",
        "gender:contains=x",
        "birthdate=zz2000",
        "birthdate=2000-02-30",
        "_count=abc",
        "_sort=bogus",
        "_include=Bogus:x",
        "_summary=sometimes",
        "organization.partof.name=x",
        "_lastUpdated=ge20x",
        "_cursor=%%%",
    ],
)
def test_bad_requests_name_the_parameter(store: Store, query: str) -> None:
    name = query.split("=")[0].split(":")[0].split(".")[0]
    with pytest.raises(BadRequest) as caught:
        store.search("Patient", query)
    assert name in caught.value.message


# -- system search, narrowing, find ---------------------------------------------------------------------


def test_system_search(store: Store) -> None:
    ann = store.create(patient("Ann"))
    visit = store.create(encounter(ann))
    org = store.create({"resourceType": "Organization", "name": "Acme"})
    assert store.ids(None, "_type=Patient,Encounter") == [ann.res_id, visit.res_id]
    assert store.ids(None, f"_id={org.res_id}") == [org.res_id]
    assert store.ids(None, "_type=Organization&name=acme") == [org.res_id]
    assert store.ids(None, "_lastUpdated=gt2000&_sort=-_lastUpdated") == [org.res_id, visit.res_id, ann.res_id]
    assert link(store.search(None, "_type=Patient"), "self") == f"{BASE}?_type=Patient"
    with pytest.raises(BadRequest):
        store.search(None, "name=acme", strict=True)  # not a parameter of every type


def test_narrowing_applies_to_matches_includes_totals_and_chains(store: Store) -> None:
    hidden = store.create(patient("Hidden"))
    shown = store.create(patient("Shown"))
    visits = [store.create(encounter(p)) for p in (hidden, shown)]

    def not_hidden(table: FromClause, _types: Sequence[str] | None) -> ColumnElement[bool]:
        return table.c.res_id != hidden.res_id

    assert store.ids("Patient", narrowing=not_hidden) == [shown.res_id]
    assert store.search("Patient", "_summary=count", narrowing=not_hidden)["total"] == 1
    bundle = store.search("Encounter", "_include=Encounter:subject", narrowing=not_hidden)
    assert included(bundle) == [("Patient", shown.res_id)]
    assert store.ids("Encounter", "subject.name=hidden", narrowing=not_hidden) == []
    assert store.ids("Patient", "_revinclude=Encounter:subject", narrowing=not_hidden) == [shown.res_id]
    pages = store.search("Patient", "_count=1&_total=accurate", narrowing=not_hidden)
    assert pages["total"] == 1 and link(pages, "next") is None
    assert len(visits) == 2


def test_find_for_conditional_operations(store: Store) -> None:
    ann = store.create(patient("Ann", identifier=[{"system": "urn:cin", "value": "A1"}]))
    store.create(patient("Ann", identifier=[{"system": "urn:cin", "value": "B2"}]))
    matches = store.find("Patient", "identifier=urn:cin|A1")
    assert matches == [Match(ann.rid, ann.res_id, 1)]
    assert len(store.find("Patient", "name=ann", limit=2)) == 2
    assert len(store.find("Patient", "name=ann", limit=1)) == 1
    with pytest.raises(BadRequest, match="'nonsense'"):
        store.find("Patient", "nonsense=1")  # an ignored criterion would widen the match
