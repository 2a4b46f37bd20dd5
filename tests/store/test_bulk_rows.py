"""Many rows in one write transaction (gateway/store/repository.py ``WriteTransaction.flush``): on
PostgreSQL they go by COPY from ``COPY_MIN_ROWS`` rows on, on SQLite by executemany; either way every
byte of every body and every index row is stored as given."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import event, func, select

from gateway.fhir.context import Context
from gateway.fhir.core import build_context
from gateway.search.extract import extract_values
from gateway.search.sources import stored_values
from gateway.settings import Settings
from gateway.store.repository import COPY_MIN_ROWS
from gateway.store.schema import INDEX_TABLES

TRICKY = ["tab\there", "new\nline", "back\\slash", "quote'\"", "null\\N", "ünïcødé 患者", "comma, semi; pipe|", "\\."]


@pytest.fixture
def ctx(database_url: str) -> Iterator[Context]:
    context = build_context(Settings(database_url=database_url, auth_enabled=False))
    yield context
    context.repo.engine.dispose()


def _patient(n: int) -> dict[str, Any]:
    text = TRICKY[n % len(TRICKY)]
    return {
        "resourceType": "Patient",
        "active": n % 2 == 0,
        "identifier": [{"system": "urn:test:bulk", "value": f"{text}-{n}"}],
        "name": [{"family": f"{text} {n}", "given": [text]}],
        "birthDate": f"19{50 + n % 50:02d}-0{1 + n % 9}-1{n % 10}",
    }


def test_a_large_transaction_stores_every_byte_and_row(ctx: Context) -> None:
    count = COPY_MIN_ROWS * 3
    with ctx.repo.write() as tx:
        stored = [tx.create(_patient(n), method="POST") for n in range(count)]
    for item in stored:
        again = ctx.repo.read("Patient", item.res_id)
        assert again is not None and again.body == item.body and not again.deleted
    expected: dict[str, int] = {}
    for item in stored:
        resource = ctx.repo.read("Patient", item.res_id)
        assert resource is not None and resource.body is not None
        # the rows the store keeps (gateway/search/sources.py: none another row of the resource repeats)
        for kind, rows in stored_values("Patient", extract_values(orjson.loads(resource.body))).items():
            expected[kind] = expected.get(kind, 0) + len(rows)
    with ctx.repo.connect() as conn:
        for kind, table in INDEX_TABLES.items():
            found = conn.execute(select(func.count()).select_from(table).where(table.c.res_type == "Patient")).scalar()
            assert found == expected.get(kind, 0), kind
    with ctx.repo.connect() as conn:
        for n in (0, 1, 3, 5, count - 3):  # values without the search syntax's separators and escapes
            value = f"{TRICKY[n % len(TRICKY)]}-{n}"
            params = [("identifier", f"urn:test:bulk|{value}")]
            matches = ctx.search.find(conn, resource_type="Patient", params=params, limit=2)
            assert [m.res_id for m in matches] == [stored[n].res_id], value


def test_expected_creates_take_their_row_ids_in_one_round_trip(ctx: Context) -> None:
    """A transaction that says how many resources it will create (``WriteTransaction.expect_creates``, as a
    transaction Bundle does) takes their row ids from PostgreSQL's sequence in one statement, not in
    ``RID_BLOCKS``' doubling steps; SQLite allocates them locally either way."""
    count = 300
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    event.listen(ctx.repo.engine, "before_cursor_execute", seen)
    try:
        with ctx.repo.write() as tx:
            tx.expect_creates(count)
            created = [tx.create(_patient(n)) for n in range(count)]
    finally:
        event.remove(ctx.repo.engine, "before_cursor_execute", seen)
    assert len({stored.rid for stored in created}) == count
    sequence_trips = [s for s in statements if "nextval" in s]
    assert len(sequence_trips) == (0 if ctx.repo.sqlite else 1)
