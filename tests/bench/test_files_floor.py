"""The store floor of ``bench.files`` (``bench.files_floor``): the rows a first import wrote, inserted raw
into a fresh store of the same schema, on both dialects."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from adapters.files.handlers import INBOUND
from adapters.files.importer import Importer
from bench.files import load_members, write_files
from bench.files_account import Line, account, pg_written, sqlite_written, table_text
from bench.files_floor import Rows, high_water, insert_floor, pg_high_water, pg_insert_floor, pg_rows, sqlite_rows
from gateway.calaim.policy import Policy
from gateway.fhir.core import build_context
from gateway.settings import Settings


def _import(url: str, book: Path) -> None:
    ctx = build_context(Settings(database_url=url))
    result = Importer(ctx, Policy.load(), INBOUND, chunk_rows=2).run(book, sender="hn-altamed")
    ctx.repo.engine.dispose()
    assert result.counts.applied == 6


def _check_counts(tables: dict[str, int], written: dict[str, Rows]) -> None:
    # What a first-import row writes: referral, Task, request, response (the Task in two versions), its
    # key, its ledger record; no outbox row (the HN's own authorization is not sent back to it, and the
    # referral is not the county's) (docs/files.md "What a first-import (ADD) row writes").
    assert (tables["resource"], tables["resource_version"]) == (24, 30)
    assert (tables["conditional_key"], tables["file_record"], tables["file_inbound"]) == (6, 6, 1)
    assert "outbox" not in tables
    types = {row[1] for row in written["resource"]}  # (rid, res_type, ...)
    assert types == {"ServiceRequest", "Task", "CoverageEligibilityRequest", "CoverageEligibilityResponse"}


def test_the_floor_inserts_exactly_the_rows_the_import_wrote(database_url: str, tmp_path: Path) -> None:
    files = write_files(tmp_path, 6, 1)
    load_members(database_url, 6)  # Patients, Coverages, Organizations: there before, not the import's
    pg = not database_url.startswith("sqlite")
    store = Path(make_url(database_url).database or "")
    marks = pg_high_water(database_url) if pg else high_water(store)
    if not pg:
        _import(database_url, files["book"])
        written = sqlite_rows(store, marks)
        floor = insert_floor(store, tmp_path / "floor.db", marks, chunks=3)
        copied = sqlite_rows(tmp_path / "floor.db", {})
    else:
        _import(database_url, files["book"])
        written = pg_rows(database_url, marks)
        target = str(make_url(database_url).set(database=f"{make_url(database_url).database}_floor"))
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {make_url(target).database}"))
        try:
            floor = pg_insert_floor(database_url, target, marks, chunks=3)
            copied = pg_rows(target, {})
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {make_url(target).database} WITH (FORCE)"))
            admin.dispose()
    _check_account(account(pg_written(database_url, marks) if pg else sqlite_written(store, marks), 6))
    copied = {t: rows for t, rows in copied.items() if t in written}  # the migrations' own rows aside
    assert floor["seconds"] > 0
    _check_counts(floor["tables"], written)
    # the same rows, table by table (their order among rows of one key is the database's on PostgreSQL)
    assert {t: sorted(rows, key=repr) for t, rows in copied.items()} == {
        t: sorted(rows, key=repr) for t, rows in written.items()
    }


def _check_account(lines: list[Line]) -> None:
    """``bench.files --account`` of the import: per file row, by table, type and parameter, with the index rows
    that repeat another parameter's, the text-only token rows and the Task's superseded version 1."""
    by = {(x.table, x.res_type, x.what): x for x in lines}
    # 45: the rows other rows of the resource repeat are not written (gateway/search/sources.py: ServiceRequest
    # ``service`` is ``code``'s rows, ServiceRequest and Task ``patient`` are ``subject``'s pointing at a Patient)
    assert sum(x.count for x in lines if x.table.startswith("idx_") and x.table != "idx_member") == 45
    assert not {("ServiceRequest", "service"), ("ServiceRequest", "patient"), ("Task", "patient")} & {
        (x.res_type, x.what) for x in lines if x.table.startswith("idx_")
    }
    assert by[("idx_reference", "ServiceRequest", "subject")].note == ""
    assert by[("idx_reference", "Task", "subject")].note == ""
    decision = by[("idx_token", "CoverageEligibilityResponse", "decision")]
    assert (decision.count, decision.note) == (2, "1 text only, 1 of them the text of a coded row")
    first, second = (
        by[("resource_version", "Task", "version 1 (POST)")],
        by[("resource_version", "Task", "version 2 (PUT)")],
    )
    assert (first.count, first.note, second.note) == (1, "1 superseded in the import", "")
    assert (
        not any(x.table == "outbox" for x in lines)
        and by[("file_record", "CoverageEligibilityResponse", "")].count == 1
    )
    assert "| idx_token | ServiceRequest | code | 1 |  |" in table_text(lines)
