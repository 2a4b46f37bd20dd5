"""The provider's unselective first page (``Condition?_count=20``, issue 5) statement by statement.

A provider's narrowed page walks the type's rows in ``rid`` order and checks each against its narrowing
(docs/access-control.md "Narrowed searches without a selective criterion"): on the store of
``bench.smart_overhead`` it sees a quarter of the Conditions, so the walk checks ~4 rows per row it
returns. This bench times, on that store, the page statement the gateway runs (captured from ``dispatch``
with the sqlite3 trace callback, values inline) against other forms of the same page, each returning the
same rows (checked):

- ``none``: the page without a token (no narrowing);
- ``walk``: the provider's page as the gateway runs it;
- ``visible index``: the same ``WHERE`` (the whole narrowing still applied to every row), driven by a
  table of the rows each organization may see, ``(organization, res_type, rid)`` in index order, built
  here in the bench's copy of the store from ``idx_member`` and ``idx_reference`` (the design measured in
  docs/performance.md, SMART "Session 12"; the gateway has no such table);
- ``members``: the same ``WHERE`` driven by the organization's members' reference rows (no new table: a
  sort of every row of every member).

``python -m bench.smart_page_forms [--members 300] [--rounds 9] [--runs 500]``: µs per statement (thread
CPU, best and median of the rounds).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import event

from bench.smart_overhead import BASE, PROVIDERS, _verifier, issue, seed
from gateway.auth.access import patient_compartment
from gateway.auth.grant import Grant
from gateway.fhir.context import Context
from gateway.fhir.core import build_context, dispatch
from gateway.fhir.request import FhirRequest
from gateway.settings import Settings

VISIBLE = """
CREATE TABLE bench_visible (organization TEXT NOT NULL, res_type TEXT NOT NULL, rid INTEGER NOT NULL);
INSERT INTO bench_visible SELECT DISTINCT m.organization, t.res_type, t.rid
  FROM idx_member m JOIN idx_reference t ON t.target_type = 'Patient' AND t.target_id = m.patient;
CREATE UNIQUE INDEX ix_bench_visible ON bench_visible (organization, res_type, rid);
"""
"""Every (organization, type, rid) whose row points at a Patient some route makes a member of the
organization: a superset of what each organization sees of the compartment types."""


def capture(ctx: Context) -> list[str]:
    """From now on, every statement ``ctx``'s store runs (values inline), appended to the list returned."""
    seen: list[str] = []

    def traced(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.set_trace_callback(seen.append)

    event.listen(ctx.repo.engine, "connect", traced)
    ctx.repo.engine.dispose()  # pooled connections reconnect, traced
    return seen


def page_statement(ctx: Context, seen: list[str], grant: Grant | None) -> str:
    """The first-page statement of ``Condition?_count=20`` as ``grant`` (its values inline)."""
    seen.clear()
    answer = dispatch(ctx, FhirRequest("GET", "Condition", query=[("_count", "20")], base_url=BASE, grant=grant))
    if answer.status != 200:
        raise RuntimeError(f"search answered {answer.status}")
    pages = [s for s in seen if s.startswith("SELECT resource.rid") and "ORDER BY resource.rid" in s]
    if len(pages) != 1:
        raise RuntimeError(f"expected one page statement, saw {len(pages)}")
    return pages[0]


def forms(walk: str, organization: str) -> dict[str, str]:
    """The ``visible index`` and ``members`` forms of the provider's ``walk`` statement."""
    head, where = walk.split(" FROM resource WHERE ", 1)
    where, limit = where.rsplit(" ORDER BY resource.rid ASC LIMIT ", 1)
    org = organization.replace("'", "''")
    params = ", ".join(f"'{p}'" for p in patient_compartment()["Condition"])
    members = (
        f"SELECT DISTINCT t.rid FROM idx_member m CROSS JOIN idx_reference t ON t.res_type = 'Condition' "
        f"AND t.param IN ({params}) AND t.target_id = m.patient AND t.target_type = 'Patient' "
        f"WHERE m.organization = '{org}'"
    )
    visible = f"SELECT v.rid FROM bench_visible v WHERE v.organization = '{org}' AND v.res_type = 'Condition'"
    return {
        name: f"{head} FROM ({driver}) AS driven CROSS JOIN resource ON resource.rid = driven.rid "
        f"WHERE {where} ORDER BY driven.rid LIMIT {limit}"
        for name, driver in (("visible index", visible), ("members", members))
    }


def timed(db: sqlite3.Connection, statements: dict[str, str], rounds: int, runs: int) -> dict[str, list[float]]:
    """µs per run of each statement, ``rounds`` alternating rounds of ``runs``."""
    samples: dict[str, list[float]] = {name: [] for name in statements}
    for _ in range(rounds):
        for name, sql in statements.items():
            started = time.thread_time()
            for _ in range(runs):
                db.execute(sql).fetchall()
            samples[name].append((time.thread_time() - started) / runs * 1e6)
    return samples


def main(argv: list[str] | None = None) -> dict[str, list[int]]:
    """Run the bench; returns each form's page (its rids)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "gateway.db"
        settings = Settings(database_url=f"sqlite:///{path}", sqlite_synchronous="NORMAL", log_level="warning")
        ctx = build_context(settings)
        ctx.audit = None
        seed(ctx, args.members)
        provider = PROVIDERS[0]
        token = issue(ctx, settings, organization=provider, scope="system/*.rs")
        grant = _verifier(ctx, settings).verify(token, BASE)
        seen = capture(ctx)
        statements = {"none": page_statement(ctx, seen, None), "walk": page_statement(ctx, seen, grant)}
        ctx.repo.engine.dispose()
        db = sqlite3.connect(path)
        db.executescript(VISIBLE)
        statements.update(forms(statements["walk"], provider))
        pages = {name: [row[0] for row in db.execute(sql)] for name, sql in statements.items()}
        for name in ("visible index", "members"):
            if pages[name] != pages["walk"]:
                raise AssertionError(f"the {name} form returns other rows than the walk")
        samples = timed(db, statements, args.rounds, args.runs)
        db.close()
    print(f"{'form':14} {'best µs':>8} {'median':>8}  rows")
    for name, values in samples.items():
        print(f"{name:14} {min(values):8.1f} {statistics.median(values):8.1f}  {len(pages[name])}")
    return pages


if __name__ == "__main__":
    main()
