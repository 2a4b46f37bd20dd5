"""history: instance, type, system (https://hl7.org/fhir/R4/http.html#history)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import patient, post, put


def test_instance_history_newest_first_with_delete(client: TestClient) -> None:
    pid = post(client, "Patient", patient()).json()["id"]
    put(client, f"Patient/{pid}", {**patient(family="Roe"), "id": pid})
    client.delete(f"/fhir/Patient/{pid}")
    bundle = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert bundle["type"] == "history"
    assert bundle["total"] == 3
    methods = [e["request"]["method"] for e in bundle["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert "resource" not in bundle["entry"][0]
    assert bundle["entry"][1]["resource"]["meta"]["versionId"] == "2"
    assert bundle["entry"][2]["response"]["etag"] == 'W/"1"'


def test_type_and_system_history_paging(client: TestClient) -> None:
    for i in range(5):
        post(client, "Patient", patient(cin=f"H{i}"))
    post(client, "Organization", {"resourceType": "Organization", "name": "Plan"})
    page = client.get("/fhir/Patient/_history?_count=2").json()
    seen = []
    while True:
        seen += [e["resource"]["id"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        post(client, "Patient", patient(cin="late"))  # new versions do not disturb the pages
        page = client.get(nxt[0].replace("http://testserver", "")).json()
    assert len(seen) == 5 and len(set(seen)) == 5
    system = client.get("/fhir/_history").json()
    types = {e["resource"]["resourceType"] for e in system["entry"]}
    assert types == {"Patient", "Organization"}


def test_history_since_and_bad_params(client: TestClient) -> None:
    pid = post(client, "Patient", patient()).json()["id"]
    assert client.get(f"/fhir/Patient/{pid}/_history?_since=2999-01-01").json().get("entry") is None
    assert len(client.get(f"/fhir/Patient/{pid}/_history?_since=2000-01-01").json()["entry"]) == 1
    assert client.get(f"/fhir/Patient/{pid}/_history?_since=notadate").status_code == 400
    assert client.get(f"/fhir/Patient/{pid}/_history?_cursor=%%%").status_code == 400
