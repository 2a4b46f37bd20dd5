"""Search over HTTP: GET and POST _search, paging links, strict handling, bounds
(https://hl7.org/fhir/R4/search.html). The parameter semantics are covered in tests/search/."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import patient, post


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def _seed(client: TestClient) -> list[str]:
    ids = []
    for i, family in enumerate(["Alvarez", "Alvarado", "Brown", "Nguyen", "Álvarez"]):
        ids.append(
            post(client, "Patient", patient(family=family, cin=f"S{i}", birthDate=f"19{60 + i}-01-01")).json()["id"]
        )
    return ids


def test_get_and_post_search_agree(client: TestClient) -> None:
    _seed(client)
    got = client.get("/fhir/Patient", params={"name": "alva", "_sort": "birthdate"}).json()
    posted = client.post(
        "/fhir/Patient/_search",
        content=b"name=alva&_sort=birthdate",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ).json()
    assert got["type"] == "searchset"
    assert len(_ids(got)) == 3  # Alvarez, Alvarado, Álvarez (accent-insensitive)
    assert _ids(got) == _ids(posted)
    wrong = client.post("/fhir/Patient/_search", json={"name": "x"}, headers={"Content-Type": "application/json"})
    assert wrong.status_code == 415


def test_paging_links_walk_all_results(client: TestClient) -> None:
    ids = _seed(client)
    page = client.get("/fhir/Patient?_count=2").json()
    seen: list[str] = []
    while True:
        seen += _ids(page)
        links = {link["relation"]: link["url"] for link in page["link"]}
        assert links["self"].startswith("http://testserver/fhir/Patient")
        if "next" not in links:
            break
        page = client.get(links["next"].removeprefix("http://testserver")).json()
    assert sorted(seen) == sorted(ids)


def test_system_search_and_total(client: TestClient) -> None:
    _seed(client)
    post(client, "Organization", {"resourceType": "Organization", "name": "Orange County plan"})
    both = client.get("/fhir?_type=Patient,Organization&_total=accurate").json()
    assert both["total"] == 6
    count = client.get("/fhir/Patient?_summary=count").json()
    assert count["total"] == 5 and "entry" not in count


def test_unknown_parameter_lenient_and_strict(client: TestClient) -> None:
    _seed(client)
    lenient = client.get("/fhir/Patient?bogus=1")
    assert lenient.status_code == 200
    assert len(_ids(lenient.json())) == 5
    strict = client.get("/fhir/Patient?bogus=1", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert "bogus" in strict.json()["issue"][0]["diagnostics"]


def test_bad_modifier_and_bounds_are_400(client: TestClient) -> None:
    assert client.get("/fhir/Patient?name:frobnicate=x").status_code == 400
    assert client.get("/fhir/Patient?birthdate=notadate").status_code == 400
    too_many = "&".join(f"name={i}" for i in range(101))
    assert client.get(f"/fhir/Patient?{too_many}").status_code == 400
    assert client.get("/fhir/Patient", params={"name": "x" * 5000}).status_code == 400


def test_include_over_http(client: TestClient) -> None:
    pid = post(client, "Patient", patient(cin="INC")).json()["id"]
    request = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
    }
    post(client, "ServiceRequest", request)
    bundle = client.get("/fhir/ServiceRequest?subject:Patient.identifier=INC&_include=ServiceRequest:subject").json()
    modes = sorted((e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"])
    assert modes == [("Patient", "include"), ("ServiceRequest", "match")]
