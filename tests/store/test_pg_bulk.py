"""``pg_bulk.rewrite_current`` (gateway/store/pg_bulk.py): on PostgreSQL, the current rows of several
resources replaced in one statement, with the effect of the repository's per-resource rewrite (index rows
and conditional keys of those rids gone, ``resource`` rows updated, nothing else touched)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import Connection, select

from gateway.fhir.context import Context
from gateway.store.pg_bulk import Rewrite, rewrite_current
from gateway.store.schema import INDEX_TABLES, conditional_key, resource
from tests.conftest import patient


def _index_rids(conn: Connection) -> dict[str, list[int]]:
    """The rids holding rows in each index table and in ``conditional_key``."""
    tables = {**INDEX_TABLES, "conditional_key": conditional_key}
    return {name: sorted(r.rid for r in conn.execute(select(t.c.rid))) for name, t in tables.items()}


def _resource_row(conn: Connection, rid: int) -> tuple[Any, ...]:
    c = resource.c
    row = conn.execute(select(c.version_id, c.last_updated, c.deleted, c.body).where(c.rid == rid)).one()
    return tuple(row)


def test_rewrite_current_drops_index_rows_and_updates_rows(ctx: Context) -> None:
    with ctx.repo.write() as tx:
        stored = [tx.create(patient(cin=f"9100000{n}A")) for n in range(3)]
        tx.flush()
        assert tx.claim_conditional_key("Patient", "key-0", stored[0].rid)
        assert tx.claim_conditional_key("Patient", "key-2", stored[2].rid)
    rids = [s.rid for s in stored]
    with ctx.repo.connect() as conn:
        before = _index_rids(conn)
    assert all(rids[2] in found for found in before.values() if found)
    if ctx.repo.engine.dialect.name != "postgresql":
        with ctx.repo.write() as tx, pytest.raises(ValueError):
            rewrite_current(tx.conn, [Rewrite(rids[0], 2, 1, False, b"{}")])
        return
    new_body = orjson.dumps({"resourceType": "Patient", "id": stored[0].res_id})
    rows = [
        Rewrite(rids[1], 2, 1_700_000_000_000_001, True, None),  # a delete: no body
        Rewrite(rids[0], 2, 1_700_000_000_000_000, False, new_body),
        Rewrite(max(rids) + 1000, 5, 1, False, b"{}"),  # no such resource: nothing happens
    ]
    with ctx.repo.write() as tx:
        assert rewrite_current(tx.conn, rows) == 2
        assert rewrite_current(tx.conn, []) == 0
    with ctx.repo.connect() as conn:
        after = _index_rids(conn)
        assert after == {name: [r for r in found if r not in rids[:2]] for name, found in before.items()}
        assert _resource_row(conn, rids[0]) == (2, 1_700_000_000_000_000, False, new_body)
        assert _resource_row(conn, rids[1]) == (2, 1_700_000_000_000_001, True, None)
        assert _resource_row(conn, rids[2])[0] == 1


def test_rewrite_current_rolls_back_with_the_transaction(ctx: Context) -> None:
    if ctx.repo.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only (SQLite runs the repository's statements in process)")
    with ctx.repo.write() as tx:
        stored = tx.create(patient())
    with ctx.repo.connect() as conn:
        before = (_index_rids(conn), _resource_row(conn, stored.rid))
    with pytest.raises(RuntimeError), ctx.repo.write() as tx:
        rewrite_current(tx.conn, [Rewrite(stored.rid, 2, 1, False, b"{}")])
        raise RuntimeError("the unit of work fails after the rewrite")
    with ctx.repo.connect() as conn:
        assert (_index_rids(conn), _resource_row(conn, stored.rid)) == before
