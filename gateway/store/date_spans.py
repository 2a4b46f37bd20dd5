"""Span classes of stored date ranges: what lets a date-range search scan only near its matches.

A stored date is the closed range ``[low, high]`` of microseconds its precision covers
(``gateway/search/dates.py``; https://hl7.org/fhir/R4/search.html#date). A search on the *end* of the
stored range (``high >= A``: the prefixes ``ge``, ``gt``, ``ap``) says nothing about where its *start*
lies, so an index ordered by ``low`` could only be scanned from the first row of the parameter
(docs/performance.md, finding 4). Every ``idx_date`` row therefore carries its **span class**: the
least ``k`` with ``high - low <= SPAN_BOUNDS[k]``, or ``TOP_CLASS`` for longer spans (open-ended
periods among them). Within class ``k``:

- ``high >= A`` implies ``low >= A - SPAN_BOUNDS[k]`` (for ``k < TOP_CLASS``);
- ``high <= B`` implies ``low <= B - SPAN_BOUNDS[k - 1] - 1`` (for ``k > 0``: the span is longer than
  the previous class allows).

So the index ``(res_type, param, span_class, low, ...)`` answers a bounded search with one short range
scan per class (``gateway/search/date_ranges.py``). The class is a generated column computed by the
database from the row itself (``SPAN_CLASS_SQL``), so it is exact whatever writes the row and needs no
upkeep on update or delete. The bounds follow the precisions of FHIR dates (a second, a minute, an hour, a
day, a month, a year) plus a second, so a whole unit written to the second (``T09:00:00`` to ``T10:00:00``
covers an hour and 999,999 µs) stays in the class of its unit; between two classes the scan reads at most
the rows whose spans lie between the two bounds' worth of start times (docs/architecture.md "Search").
"""

from __future__ import annotations

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

SPAN_BOUNDS: tuple[int, ...] = tuple(
    unit + SECOND for unit in (0, MINUTE, HOUR, DAY, 7 * DAY, 31 * DAY, 366 * DAY, 3653 * DAY)
)
"""The longest span (``high - low``, µs) of each class but the last; increasing."""

TOP_CLASS = len(SPAN_BOUNDS)
"""The class of spans longer than every bound (periods of more than ten years, open-ended ones)."""

SPAN_CLASSES: tuple[int, ...] = tuple(range(TOP_CLASS + 1))
"""Every class, in order."""


def span_class(low: int, high: int) -> int:
    """The class of the stored range ``[low, high]`` (what ``SPAN_CLASS_SQL`` computes)."""
    span = high - low
    for k, bound in enumerate(SPAN_BOUNDS):
        if span <= bound:
            return k
    return TOP_CLASS


def span_class_sql(low: str = "low", high: str = "high") -> str:
    """The SQL expression of the span class of a row (the same on SQLite and PostgreSQL)."""
    cases = " ".join(f"WHEN {high} - {low} <= {bound} THEN {k}" for k, bound in enumerate(SPAN_BOUNDS))
    return f"CASE {cases} ELSE {TOP_CLASS} END"


SPAN_CLASS_SQL = span_class_sql()
"""The generated column ``idx_date.span_class``."""
