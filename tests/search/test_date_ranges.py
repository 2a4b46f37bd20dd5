"""Date-range searches scanned per span class (``gateway/search/date_ranges.py``, ``gateway/store/date_spans.py``).

- The class ranges are sound: a stored range meeting a conjunction of prefixed values always lies in the
  range computed for its class (random ranges: instants, days, months, years, long and open-ended
  periods, periods whose start follows their end), and their open ends depend only on the prefixes.
- The database computes the same span class as ``date_spans.span_class`` (the generated column).
- End to end on SQLite and PostgreSQL: random date searches (every bounding prefix alone, combined by AND
  on one parameter, ORed values, ``ne``) on resources with random dates and periods, several rows per
  resource among them, find exactly the resources a brute-force evaluation of the prefixes over the
  stored ``(low, high)`` rows finds, on both search paths; and the statements read the span-class index.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from gateway.search import date_ranges
from gateway.search.dates import MAX_MICROS, MIN_MICROS, parse_range
from gateway.search.engine import SearchEngine
from gateway.search.extract import extract_values
from gateway.search.query import parse_query
from gateway.search.registry import R4_SEARCH_PARAMETERS, load_bundles
from gateway.search.values import RangeValue
from gateway.store.database import EngineOptions, make_engine
from gateway.store.date_spans import SPAN_BOUNDS, SPAN_CLASSES, TOP_CLASS, span_class
from gateway.store.repository import Repository
from gateway.types import JSONObject

BOUNDING = ("eq", "gt", "lt", "ge", "le", "sa", "eb", "ap")
PREFIXES = (*BOUNDING, "ne")
SEARCHED = ("eq", "gt", "lt", "ge", "le", "sa", "eb", "ne")
"""End to end without ``ap``: its range is widened by the distance to now (the property test covers it)."""
BOUNDED = SEARCHED[:-1]
START = datetime(1990, 1, 1, tzinfo=UTC)


def holds(prefix: str, ql: int, qh: int, low: int, high: int) -> bool:
    """Brute force: the prefix's test of a stored ``[low, high]`` against the searched ``[ql, qh]``
    (https://hl7.org/fhir/R4/search.html#prefix, as ``sql._range`` reads it)."""
    if prefix == "eq":
        return ql <= low <= qh and high <= qh
    if prefix == "ne":
        return low < ql or high > qh
    if prefix == "gt":
        return high > qh
    if prefix == "lt":
        return low < ql
    if prefix == "ge":
        return high > qh or low >= ql
    if prefix == "le":
        return (low < ql or high <= qh) and low <= qh
    if prefix == "sa":
        return low > qh
    if prefix == "eb":
        return high < ql and low < ql
    assert prefix == "ap"
    return low <= qh and high >= ql


# -- random dates ------------------------------------------------------------------------------------------


def random_text(rng: random.Random) -> str:
    """A FHIR date, dateTime or instant of a random precision between 1990 and 2040."""
    moment = START + timedelta(seconds=rng.randrange(50 * 365 * 86_400))
    precision = rng.random()
    if precision < 0.1:
        return f"{moment.year}"
    if precision < 0.2:
        return moment.strftime("%Y-%m")
    if precision < 0.55:
        return moment.strftime("%Y-%m-%d")
    if precision < 0.7:
        return moment.strftime("%Y-%m-%dT%H:%MZ")
    if precision < 0.85:
        return moment.strftime("%Y-%m-%dT%H:%M:%S-08:00")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{rng.randrange(1000):03d}Z"


def near(rng: random.Random, base: str, *, scale: timedelta) -> str:
    """A dateTime at most ``scale`` after ``base``'s start (short and long periods)."""
    low, _ = parse_range(base)
    later = datetime.fromtimestamp(low / 1e6, tz=UTC) + scale * rng.random()
    return later.strftime("%Y-%m-%dT%H:%M:%SZ")


def random_period(rng: random.Random) -> JSONObject:
    """A Period: short, long, very long, open at either end, or (rarely) ending before it starts."""
    start = random_text(rng)
    shape = rng.random()
    if shape < 0.15:
        return {"start": start}
    if shape < 0.25:
        return {"end": start}
    if shape < 0.3:
        return {"start": random_text(rng), "end": random_text(rng)}  # any order: some end before they start
    scale = rng.choice([timedelta(minutes=50), timedelta(hours=30), timedelta(days=40), timedelta(days=4000)])
    scale = timedelta(days=365 * 60) if shape > 0.95 else scale
    return {"start": start, "end": near(rng, start, scale=scale)}


def random_stored(rng: random.Random) -> tuple[int, int]:
    """A stored ``(low, high)``: the range of a random date, or of a random period."""
    shape = rng.random()
    if shape < 0.5:
        return parse_range(random_text(rng))
    low = parse_range(random_text(rng))[0] if shape < 0.9 else MIN_MICROS
    high = parse_range(random_text(rng))[1] if rng.random() < 0.8 else MAX_MICROS
    return (low, high) if rng.random() < 0.95 else (high, low)


def random_value(rng: random.Random, prefixes: Sequence[str] = PREFIXES) -> RangeValue:
    low, high = parse_range(random_text(rng))
    prefix = rng.choice(prefixes)
    if prefix == "ap":  # as parse_date widens it (the margin depends on now: any width will do here)
        margin = rng.choice([86_400_000_000, rng.randrange(10**15)])
        low, high = low - margin, high + margin
    return RangeValue(prefix, low, high)


# -- the class ranges, without a database ------------------------------------------------------------------


def test_span_classes_partition_spans() -> None:
    assert list(SPAN_BOUNDS) == sorted(SPAN_BOUNDS)
    assert span_class(0, 0) == 0 and span_class(5, 0) == 0  # instants; a period ending before its start
    assert span_class(*parse_range("2024-05-01T10:00:00Z")) == 0
    assert span_class(*parse_range("2024-05-01T10:00Z")) == 1
    assert span_class(*parse_range("2024-05-01")) == 3
    assert span_class(parse_range("2024-05-01T09:00:00Z")[0], parse_range("2024-05-02T09:00:00Z")[1]) == 3
    assert span_class(*parse_range("2024-05")) == 5
    assert span_class(*parse_range("2024")) == 6
    assert span_class(0, MAX_MICROS) == span_class(MIN_MICROS, 0) == TOP_CLASS
    for k, bound in enumerate(SPAN_BOUNDS):
        assert span_class(0, bound) == k
        assert span_class(0, bound + 1) == k + 1


def edge_rows(rng: random.Random, values: Sequence[RangeValue]) -> list[tuple[int, int]]:
    """Stored ranges at the edges: spans at the ends of each class, placed so that a start or an end
    falls on, just before or just after an end of a searched range."""
    points = [int(p) + d for v in values for p in (v.low, v.high) for d in (-1, 0, 1)]
    spans = [-1, 0]
    for k, bound in enumerate(SPAN_BOUNDS):
        spans += [bound - 1, bound, bound + 1, rng.randint(SPAN_BOUNDS[k - 1] if k else 0, bound)]
    spans += [MAX_MICROS - MIN_MICROS, rng.randrange(SPAN_BOUNDS[-1], 10**17)]
    rows = []
    for _ in range(60):
        point, span = rng.choice(points), rng.choice(spans)
        rows.append((point, point + span) if rng.random() < 0.5 else (point - span, point))
    return rows


def test_class_ranges_contain_every_match() -> None:
    """Property: whatever the stored range and the prefixes, a match lies inside its class's range."""
    rng = random.Random(11)
    stored = [random_stored(rng) for _ in range(300)]
    checked = 0
    for _ in range(1500):
        values = [random_value(rng) for _ in range(rng.choice([1, 1, 2, 3]))]
        found = date_ranges.bounds(values)
        ranges = date_ranges.class_ranges(found)
        assert bool(ranges) == any(v.prefix != "ne" for v in values)
        if not ranges:
            continue
        assert [scan.span_class for scan in ranges] == list(SPAN_CLASSES)
        for low, high in stored + edge_rows(rng, values):
            if not all(holds(v.prefix, int(v.low), int(v.high), low, high) for v in values):
                continue
            scan = ranges[span_class(low, high)]
            assert scan.low_min is None or low >= scan.low_min, (values, low, high)
            assert scan.low_max is None or low <= scan.low_max, (values, low, high)
            checked += 1
    assert checked > 10_000


def test_class_ranges_are_tight() -> None:
    """Each bound is the least implied one: a match of the class sits on it (so no scan reads more),
    unless the class cannot hold a match at all."""
    ql, qh = parse_range("2024-03-01")
    for prefix in BOUNDING:
        value = RangeValue(prefix, ql, qh)
        for scan in date_ranges.class_ranges(date_ranges.bounds([value])):
            k = scan.span_class
            if None not in (scan.low_min, scan.low_max) and scan.low_min > scan.low_max:  # type: ignore[operator]
                continue  # no row of the class can match (a day's eq and spans of more than a day)
            spans = [SPAN_BOUNDS[k - 1] + 1 if k else -5, SPAN_BOUNDS[k] if k < TOP_CLASS else 10**17]
            if scan.low_min is not None:
                assert any(holds(prefix, ql, qh, scan.low_min, scan.low_min + s) for s in spans), (prefix, k)
            if scan.low_max is not None:
                assert any(holds(prefix, ql, qh, scan.low_max, scan.low_max + s) for s in spans), (prefix, k)


def test_open_ends_depend_on_the_prefixes_only() -> None:
    """The SQL text of a query shape does not depend on its values (one prepared statement per shape)."""
    rng = random.Random(5)
    for _ in range(300):
        prefixes = [rng.choice(BOUNDING) for _ in range(rng.choice([1, 2, 3]))]
        shapes = set()
        for _ in range(4):
            values = [random_value(rng, [p]) for p in prefixes]
            ranges = date_ranges.class_ranges(date_ranges.bounds(values))
            shapes.add(tuple((s.low_min is None, s.low_max is None) for s in ranges))
        assert len(shapes) == 1, prefixes


def test_a_one_week_window_reads_near_its_matches() -> None:
    """``ge A & lt A+7d`` (days): in each class below the last, the start lies between B and the class's
    longest span before the end of day A, but never before A itself."""
    start, day_end = parse_range("2024-03-01")
    end, _ = parse_range("2024-03-08")
    values = [RangeValue("ge", *parse_range("2024-03-01")), RangeValue("lt", *parse_range("2024-03-08"))]
    ranges = date_ranges.class_ranges(date_ranges.bounds(values))
    for scan in ranges:
        assert scan.low_max == end - 1
        if scan.span_class < TOP_CLASS:
            assert scan.low_min == min(start, day_end + 1 - SPAN_BOUNDS[scan.span_class])
        else:
            assert scan.low_min is None
    assert [scan.low_min == start for scan in ranges] == [True, True, True, False, False, False, False, False, False]


# -- end to end --------------------------------------------------------------------------------------------


@dataclass
class Store:
    repo: Repository
    engines: tuple[SearchEngine, SearchEngine]


@pytest.fixture(scope="module")
def store(module_database_url: str) -> Iterator[Store]:
    registry = load_bundles([R4_SEARCH_PARAMETERS])
    engine = make_engine(module_database_url, EngineOptions(sqlite_synchronous="OFF"))
    repo = Repository(engine, indexer=lambda resource: extract_values(resource, registry))
    rng = random.Random(17)
    with repo.write() as tx:
        for _ in range(250):
            visit: JSONObject = {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}
            if rng.random() < 0.95:
                visit["period"] = random_period(rng)
            tx.create(visit)
        for _ in range(120):
            request: JSONObject = {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": "Patient/p"},
                "authoredOn": random_text(rng),
            }
            if rng.random() < 0.5:  # several index rows per resource
                events = [random_text(rng) for _ in range(rng.randint(1, 3))]
                request["occurrenceTiming"] = {"event": events, "repeat": {"boundsPeriod": random_period(rng)}}
            else:
                request["occurrencePeriod"] = random_period(rng)
            tx.create(request)
    options: dict[str, Any] = {"default_count": 5, "max_count": 1000, "max_includes": 6}
    yield Store(repo, (SearchEngine(registry, **options), SearchEngine(registry, **options, prepared=False)))
    engine.dispose()


def _rows(store: Store, res_type: str, param: str) -> dict[str, list[tuple[int, int]]]:
    """Every stored ``(low, high)`` of ``param``, by resource id."""
    sql = text(
        "SELECT resource.res_id, idx_date.low, idx_date.high, idx_date.span_class FROM idx_date "
        "JOIN resource ON resource.rid = idx_date.rid WHERE idx_date.res_type = :t AND idx_date.param = :p"
    )
    rows: dict[str, list[tuple[int, int]]] = {}
    with store.repo.connect() as conn:
        for res_id, low, high, stored_class in conn.execute(sql, {"t": res_type, "p": param}):
            assert stored_class == span_class(low, high)  # the generated column agrees
            rows.setdefault(res_id, []).append((low, high))
    return rows


def _query(rng: random.Random) -> list[tuple[str, list[str]]]:
    """(prefix + date) texts per criterion: single-valued ones are ANDed on one row, a list is ORed."""
    shape = rng.random()
    if shape < 0.45:  # a window, or several bounds on one row
        return [(rng.choice(BOUNDED), [random_text(rng)]) for _ in range(rng.choice([1, 2, 2, 3]))]
    if shape < 0.6:  # a narrow window: the bench's shape
        start = random_text(rng)
        return [("ge", [start]), (rng.choice(["lt", "le"]), [near(rng, start, scale=timedelta(days=9))])]
    if shape < 0.85:  # ORed values, maybe with an unbounded one
        return [("", [rng.choice(SEARCHED) + random_text(rng) for _ in range(rng.choice([2, 3]))])]
    return [(rng.choice(SEARCHED), [random_text(rng)]), ("", [rng.choice(BOUNDED) + random_text(rng)] * 2)]


def _expected(rows: dict[str, list[tuple[int, int]]], query: list[tuple[str, list[str]]]) -> set[str]:
    """Brute force over the stored rows, with the engine's reading of AND/OR: the single-valued criteria
    of the parameter on one row, each multi-valued criterion on a row of its own."""
    single = [(prefix, *parse_range(texts[0])) for prefix, texts in query if prefix]
    ored = [[(t[:2], *parse_range(t[2:])) for t in texts] for prefix, texts in query if not prefix]
    found = set()
    for res_id, stored in rows.items():
        if single and not any(all(holds(p, ql, qh, lo, hi) for p, ql, qh in single) for lo, hi in stored):
            continue
        if all(any(holds(p, ql, qh, lo, hi) for p, ql, qh in group for lo, hi in stored) for group in ored):
            found.add(res_id)
    return found


@pytest.mark.parametrize(("res_type", "param"), [("Encounter", "date"), ("ServiceRequest", "occurrence")])
def test_random_date_searches_match_brute_force(store: Store, res_type: str, param: str) -> None:
    rows = _rows(store, res_type, param)
    assert any(hi == MAX_MICROS for r in rows.values() for _, hi in r)  # open-ended periods are there
    assert any(len(r) > 1 for r in rows.values()) or res_type == "Encounter"
    rng = random.Random(len(param))
    found_some = 0
    for _ in range(150):
        query = _query(rng)
        params = [(param, (prefix + texts[0]) if prefix else ",".join(texts)) for prefix, texts in query]
        expected = _expected(rows, query)
        for engine in store.engines:
            with store.repo.connect() as conn:
                got = {m.res_id for m in engine.find(conn, resource_type=res_type, params=params, limit=1000)}
            assert got == expected, (engine.prepared, params)
        found_some += 0 < len(expected) < len(rows)
    assert found_some > 50


def test_narrow_windows_on_dates_and_instants(store: Store) -> None:
    """Windows of a minute to a day, where the class bounds cut the scan most, on dateTimes and Periods."""
    rng = random.Random(3)
    rows = _rows(store, "ServiceRequest", "authored")
    for _ in range(60):
        start = random_text(rng)
        window = rng.choice([timedelta(minutes=1), timedelta(hours=2), timedelta(days=1)])
        query = [("ge", [start]), ("lt", [near(rng, start, scale=window)])]
        params = [("authored", prefix + texts[0]) for prefix, texts in query]
        for engine in store.engines:
            with store.repo.connect() as conn:
                got = {m.res_id for m in engine.find(conn, resource_type="ServiceRequest", params=params, limit=1000)}
            assert got == _expected(rows, query)


def test_the_statement_reads_the_span_class_index(store: Store) -> None:
    """The plan of a one-week window: the classes' ranges joined to ``ix_date_span``, a range scan each."""
    engine = store.engines[0]
    params = [("date", "ge2024-03-01"), ("date", "lt2024-03-08")]
    with store.repo.connect() as conn:
        builder = engine.statements.builder(conn, ("Encounter",), None)
        query = parse_query(
            engine.registry, "Encounter", params, base_url="", strict=True, default_count=5, max_count=10
        )
        where, values = builder.where(query.criteria)[-1]
        sql = f"SELECT resource.rid FROM resource WHERE {where}"
        if conn.dialect.name == "sqlite":
            plan = [str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", values)]
            scans = [step for step in plan if "idx_date" in step]
            assert scans == [
                "SEARCH idx_date USING COVERING INDEX ix_date_span "
                "(res_type=? AND param=? AND span_class=? AND low>? AND low<?)"
            ], plan
        else:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a tiny table: show the plan of a big one
            plan = [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}", values)]
            text_plan = "\n".join(plan)
            assert "Values Scan" in text_plan and "ix_date_span" in text_plan, text_plan
            assert 'span_class = "*VALUES*".column1' in text_plan and 'low >= "*VALUES*".column2' in text_plan
