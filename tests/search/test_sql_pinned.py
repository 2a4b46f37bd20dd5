"""The SQL of representative searches, pinned: refactoring the search SQL builders must not change it.

Search SQL is built on the request path (``gateway/search/sql.py``, ``sqltext.py``, ``prepared.py``,
``paging.py``; docs/performance.md): a change to its text changes query plans and the SQLite
statement cache's keys. Every statement a few representative searches run, on both paths (the
prepared driver SQL and SQLAlchemy Core) and on both dialects, is recorded and compared with
``pinned_sql.json``. A deliberate change of the SQL regenerates the file
(``PIN_SQL_UPDATE=1 .venv/bin/pytest tests/search/test_sql_pinned.py``) and shows in its diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from sqlalchemy import ColumnElement, Engine, FromClause, event

from gateway.search import prepared
from gateway.search.engine import SearchEngine
from gateway.search.extract import extract_values
from gateway.search.registry import R4_SEARCH_PARAMETERS, load_bundles
from gateway.store.database import EngineOptions, make_engine
from gateway.store.repository import Repository
from gateway.types import JSONObject, QueryParams

BASE = "http://test.local/fhir"
PINNED = Path(__file__).with_name("pinned_sql.json")
Statement = tuple[str, str]
"""SQL text and the repr of its parameters."""

SEARCHES: list[tuple[str, str]] = [
    ("Patient", "identifier=urn:cin|V1,|V2&family=gar"),
    ("Patient", "family:exact=Garcia&gender:missing=false&_id:not=p2"),
    ("Patient", "name:text=ann&birthdate=ge2020-01-01&birthdate=lt2024-02-01&_count=2"),
    ("Patient", "family:contains=a_%&_lastUpdated=gt2020-01-01&_sort=-family&_count=1"),
    ("Patient", "_id=p1,p2&_sort=_id&_total=accurate"),
    ("Patient", "family:contains=a&_sort=-family,birthdate&_count=2"),
    ("Patient", "gender=female&_sort=-_id&_count=3"),
    ("Encounter", "subject.family=garcia&date=ge2024-03&length=gt5&_include=Encounter:subject"),
    ("Encounter", "length=10||min&status:not=planned&_summary=count"),
    ("Patient", "_has:Encounter:subject:status=finished&_revinclude=Encounter:subject&organization=o1"),
    ("Organization", "name=org&_revinclude=Patient:organization&_sort=name,_lastUpdated"),
]


def _narrowing(r: FromClause, types: Sequence[str] | None) -> ColumnElement[bool]:
    """A caller who may not see the resource ``hidden`` (compiled into every statement)."""
    return r.c.res_id != "hidden"


@pytest.fixture(scope="module")
def store(module_database_url: str) -> Iterator[tuple[Engine, SearchEngine, SearchEngine]]:
    registry = load_bundles([R4_SEARCH_PARAMETERS])
    engine = make_engine(module_database_url, EngineOptions(sqlite_synchronous="OFF"))
    repo = Repository(engine, indexer=lambda resource: extract_values(resource, registry))
    resources: list[JSONObject] = [
        {"resourceType": "Organization", "id": "o1", "name": "org one"},
        {"resourceType": "Organization", "id": "hidden", "name": "org hidden"},
        *(
            {
                "resourceType": "Patient",
                "id": f"p{n}",
                "name": [{"family": family, "given": ["Ann"]}],
                "identifier": [{"system": "urn:cin", "value": f"V{n}"}],
                "gender": "female",
                "birthDate": f"202{n}-01-0{n}",
                "managingOrganization": {"reference": "Organization/o1"},
            }
            for n, family in enumerate(["Garcia", "Gar_%a", "Smith", "Garza"], start=1)
        ),
        *(
            {
                "resourceType": "Encounter",
                "id": f"e{n}",
                "status": "finished" if n % 2 else "planned",
                "class": {"code": "AMB"},
                "subject": {"reference": f"Patient/p{n}"},
                "period": {"start": f"2024-03-0{n}"},
                "length": {"value": 10, "unit": "min"},
            }
            for n in range(1, 4)
        ),
    ]
    with repo.write() as tx:
        for body in resources:
            tx.create(body, res_id=str(body["id"]))
    options: dict[str, Any] = {"default_count": 5, "max_count": 50, "max_includes": 6}
    yield engine, SearchEngine(registry, **options), SearchEngine(registry, **options, prepared=False)
    engine.dispose()


@contextmanager
def _recording(engine: Engine) -> Iterator[list[Statement]]:
    """Every statement run inside: Core's through its cursor event, the prepared path's through
    ``prepared.run`` (wrapped, still run). Transaction control is left out."""
    seen: list[Statement] = []

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, repr(parameters)))

    real_run = prepared.run

    def run(conn: Any, sql: str, params: tuple[Any, ...]) -> list[Any]:
        seen.append((sql, repr(params)))
        return real_run(conn, sql, params)

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setattr(prepared, "run", run)
            yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


def _statements(engine: Engine, search: SearchEngine, res_type: str, query: str) -> list[Statement]:
    """Every statement of the search, of its second page when it has one, and of a conditional match."""
    params: QueryParams = parse_qsl(query, keep_blank_values=True)
    with _recording(engine) as seen, engine.connect() as conn:
        page = search.search(conn, resource_type=res_type, params=params, base_url=BASE, narrowing=_narrowing)
        following = [link["url"] for link in orjson.loads(page).get("link", []) if link["relation"] == "next"]
        if following:
            cursor = parse_qsl(urlsplit(following[0]).query)
            search.search(conn, resource_type=res_type, params=cursor, base_url=BASE, narrowing=_narrowing)
        plain = [(k, v) for k, v in params if not k.startswith("_") or k == "_id" or k.startswith("_has:")]
        search.find(conn, resource_type=res_type, params=plain, limit=2, narrowing=_narrowing)
    return [s for s in seen if not s[0].startswith(("BEGIN", "ROLLBACK", "COMMIT"))]


def test_search_sql_is_unchanged(store: tuple[Engine, SearchEngine, SearchEngine]) -> None:
    engine, prepared_search, core_search = store
    dialect = engine.dialect.name
    found: dict[str, list[list[str]]] = {}
    for res_type, query in SEARCHES:
        for path, search in (("prepared", prepared_search), ("core", core_search)):
            found[f"{dialect} {path} {res_type}?{query}"] = [
                list(s) for s in _statements(engine, search, res_type, query)
            ]
    pinned: dict[str, Any] = json.loads(PINNED.read_text()) if PINNED.exists() else {}
    if os.environ.get("PIN_SQL_UPDATE"):
        pinned.update(found)
        PINNED.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
    for key, statements in found.items():
        assert statements == pinned.get(key), key
