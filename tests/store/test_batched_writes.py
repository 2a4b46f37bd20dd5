"""Batched writes of the repository (``WriteTransaction.update_many``, ``create_history``): the same
rows as the one-by-one writes they replace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from gateway.fhir.context import Context
from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.store.schema import INDEX_TABLES, resource_version


@pytest.fixture
def ctx(database_url: str) -> Iterator[Context]:
    context = build_context(Settings(database_url=database_url, auth_enabled=False, calaim_enabled=False))
    yield context
    context.repo.engine.dispose()


def _patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}], "identifier": [{"value": family}]}


def _index_rows(ctx: Context, rid: int) -> list[tuple[Any, ...]]:
    with ctx.repo.connect() as conn:
        rows: list[tuple[Any, ...]] = []
        for kind, table in sorted(INDEX_TABLES.items()):
            found = conn.execute(select(table).where(table.c.rid == rid)).all()
            rows += sorted((kind, *(v for k, v in r._mapping.items() if k != "rid")) for r in found)
        return rows


def _versions(ctx: Context, rid: int) -> list[tuple[int, str, bool]]:
    with ctx.repo.connect() as conn:
        query = select(resource_version.c.version_id, resource_version.c.method, resource_version.c.deleted)
        return [tuple(r) for r in conn.execute(query.where(resource_version.c.rid == rid).order_by("version_id"))]


def test_update_many_writes_what_updates_one_by_one_write(ctx: Context) -> None:
    with ctx.repo.write() as tx:
        first = [tx.create(_patient(f"Before{n}")) for n in range(6)]
    with ctx.repo.write() as tx:
        batched = tx.update_many([(_patient(f"After{n}"), first[n]) for n in range(3)])
        single = [tx.update(_patient(f"After{n}"), first[n]) for n in range(3, 6)]
    for stored in (*batched, *single):
        current = ctx.repo.read("Patient", stored.res_id)
        assert current is not None and current.version_id == 2 and current.body == stored.body
        assert _versions(ctx, stored.rid) == [(1, "POST", False), (2, "PUT", False)]
    shape = [[row[:3] for row in _index_rows(ctx, s.rid)] for s in (*batched, *single)]
    assert all(rows == shape[0] for rows in shape), "the same kinds of index rows for every update"
    for n, stored in enumerate((*batched, *single)):
        assert any(f"after{n}" in str(row).lower() for row in _index_rows(ctx, stored.rid))
        assert not any(f"before{n}" in str(row).lower() for row in _index_rows(ctx, stored.rid))
    with ctx.repo.write() as tx, pytest.raises(ValueError):
        tx.update_many([(_patient("X"), batched[0]), (_patient("Y"), batched[0])])


def test_create_history_is_a_create_then_updates(ctx: Context) -> None:
    with ctx.repo.write() as tx:
        written = tx.create_history(
            [(_patient("Oakley"), "POST"), (_patient("Brightwater"), "PUT"), (_patient("Charlesworth"), "PUT")]
        )
    assert [s.version_id for s in written] == [1, 2, 3]
    current = ctx.repo.read("Patient", written[0].res_id)
    assert current is not None and current.version_id == 3 and current.body == written[-1].body
    assert _versions(ctx, written[0].rid) == [(1, "POST", False), (2, "PUT", False), (3, "PUT", False)]
    for version in written:
        again = ctx.repo.vread("Patient", version.res_id, version.version_id)
        assert again is not None and again.body == version.body
    rows = str(_index_rows(ctx, written[0].rid)).lower()
    assert "charlesworth" in rows and "oakley" not in rows and "brightwater" not in rows, (
        "index rows of the current version only"
    )
