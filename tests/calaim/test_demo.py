"""The demo (gateway/calaim/demo.py, ``calaim-gateway demo``): loaded through the workflow, idempotent,
and everything it stores validates against the R4 JSON schema and its CalAIM profiles."""

from __future__ import annotations

from datetime import date

import orjson
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway.calaim.demo import load_demo
from gateway.calaim.policy import Policy
from gateway.cli import main
from gateway.fhir.context import Context
from gateway.store.schema import outbox, resource, resource_version
from gateway.types import JSONObject
from tests.calaim.support import assert_emitted_valid


def _counts(ctx: Context) -> tuple[int, int, int]:
    with ctx.repo.connect() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (resource, resource_version, outbox)
        )


def test_the_demo_loads_once_and_validates(client: TestClient, ctx: Context, database_url: str) -> None:
    summary = load_demo(ctx, policy=Policy.load(), on=date(2025, 3, 14))
    assert summary.month == "2025-02" and summary.members == 7 and summary.organizations == 22
    before = _counts(ctx)
    load_demo(ctx, policy=Policy.load(), on=date(2025, 3, 14))
    assert _counts(ctx) == before  # nothing new: no version, no event
    with ctx.repo.connect() as conn:
        bodies = [row.body for row in conn.execute(select(resource.c.body).where(resource.c.deleted.is_(False)))]
    stored: list[JSONObject] = [orjson.loads(body) for body in bodies]
    for item in stored:
        assert_emitted_valid(item)
    report = client.get("/fhir/$ecm-activity", params={"month": "2025-02"}).json()
    rows = {p["part"][0]["valueReference"]["reference"]: {q["name"]: q for q in p["part"]} for p in report["parameter"]}
    assert rows["Patient/demo-member-1"]["thresholdMet"]["valueBoolean"] is True
    assert rows["Patient/demo-member-2"]["thresholdMet"]["valueBoolean"] is False
    assert rows["Patient/demo-member-3"]["organization"]["valueReference"]["reference"] == "Organization/county-hca-bhs"
    historic = client.get("/fhir/CoverageEligibilityResponse", params={"responsible-party": "hn"}).json()["entry"]
    assert [e["resource"]["patient"]["reference"] for e in historic] == ["Patient/demo-member-6"]
    # The command loads the same, dated from today (its services land in the previous month).
    result = CliRunner().invoke(main, ["demo", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert "22 Organizations, 7 synthetic members" in result.output and "$ecm-activity?month=" in result.output
