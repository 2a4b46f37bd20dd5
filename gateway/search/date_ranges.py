"""The index ranges a date search scans: per span class, the interval its rows' ``low`` must lie in.

A date criterion (https://hl7.org/fhir/R4/search.html#date, prefixes #prefix) compares the stored range
``[low, high]`` with the searched one. The comparisons on ``low`` bound a scan of the value index
``(res_type, param, span_class, low, ...)`` directly; those on ``high`` bound it through the span class
of the row (``gateway/store/date_spans.py``): in class ``k``, ``high >= A`` implies ``low >= A -
SPAN_BOUNDS[k]`` and ``high <= B`` implies ``low <= B - SPAN_BOUNDS[k-1] - 1``. So ``date=geA&date=ltB``
reads, per class, the rows starting in ``[A - bound, B)``: the matches and the rows of the same class
that end just before ``A``, instead of every row starting before ``B`` (docs/performance.md finding 4).

These bounds are *implied* by the criterion: the SQL keeps the criterion's own condition as well, so
they never change a result, only what the database reads. Which bounds exist depends on the prefixes
alone, never on the values, so the SQL text of a query shape stays the same (``sqltext.py``).

What each prefix implies for a matching row (``ql``/``qh``: the searched range; ``sql._range``);
"either" bounds are disjunctions, which still bound ``low`` within a class (by the looser side):

=======  ========================================  ==============================================
prefix   condition                                 bounds kept
=======  ========================================  ==============================================
eq       ``low >= ql, low <= qh, high <= qh``      low in [ql, qh]; high <= qh
ne       ``low < ql or high > qh``                 none (the scan is not bounded)
gt       ``high > qh``                             high >= qh + 1
lt       ``low < ql``                              low <= ql - 1
ge       ``high > qh or low >= ql``                either low >= ql or high >= qh + 1
le       ``(low < ql or high <= qh), low <= qh``   low <= qh; either low <= ql - 1 or high <= qh
sa       ``low > qh``                              low >= qh + 1
eb       ``high < ql, low < ql``                   low <= ql - 1; high <= ql - 1
ap       ``low <= qh, high >= ql``                 low <= qh; high >= ql
=======  ========================================  ==============================================

In class ``k`` (``S_k = SPAN_BOUNDS[k]``), "either ``low >= a`` or ``high >= b``" gives ``low >= min(a,
b - S_k)`` and "either ``low <= a`` or ``high <= b``" gives ``low <= max(a, b - S_(k-1) - 1)``; a bound on
``high`` alone is the case without ``a``. The last class has no longest span (no bound from ``high >=``),
the first no shortest one (spans may even be negative: a period ending before it starts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from gateway.search.values import RangeValue
from gateway.store.date_spans import SPAN_BOUNDS, SPAN_CLASSES, TOP_CLASS

Either: TypeAlias = tuple[int | None, int]
"""``(a, b)``: ``low >= a or high >= b`` (``reach``), ``low <= a or high <= b`` (``under``); ``a`` None:
the bound on ``high`` alone."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """What every row meeting a conjunction of date values satisfies."""

    low_min: int | None = None
    low_max: int | None = None
    reach: tuple[Either, ...] = ()
    """Lower bounds on the end: ``low >= a or high >= b`` each."""
    under: tuple[Either, ...] = ()
    """Upper bounds on the end: ``low <= a or high <= b`` each."""

    @property
    def bounded(self) -> bool:
        """True when some class gets a range narrower than all of its rows."""
        return self.low_min is not None or self.low_max is not None or bool(self.reach or self.under)


@dataclass(frozen=True, slots=True)
class ClassRange:
    """The rows of one span class to read: ``low`` in ``[low_min, low_max]`` (None: open on that side)."""

    span_class: int
    low_min: int | None
    low_max: int | None


def bounds(values: Sequence[RangeValue]) -> Bounds:
    """The bounds implied by ``values`` all holding for one stored range (AND).

    Stored bounds are integers, so strict comparisons become inclusive ones (``low < x`` is ``low <=
    ceil(x) - 1``) and fractional search values are rounded outwards: the bounds never exclude a match."""
    low_min: list[int] = []
    low_max: list[int] = []
    reach: list[Either] = []
    under: list[Either] = []
    for value in values:
        prefix = value.prefix
        below_ql = math.ceil(value.low) - 1  # x < ql
        from_ql = math.ceil(value.low)  # x >= ql
        to_qh = math.floor(value.high)  # x <= qh
        above_qh = math.floor(value.high) + 1  # x > qh
        if prefix == "eq":
            low_min.append(from_ql)
            low_max.append(to_qh)
            under.append((None, to_qh))
        elif prefix == "gt":
            reach.append((None, above_qh))
        elif prefix == "lt":
            low_max.append(below_ql)
        elif prefix == "ge":
            reach.append((from_ql, above_qh))
        elif prefix == "le":
            low_max.append(to_qh)
            under.append((below_ql, to_qh))
        elif prefix == "sa":
            low_min.append(above_qh)
        elif prefix == "eb":
            low_max.append(below_ql)
            under.append((None, below_ql))
        elif prefix == "ap":
            low_max.append(to_qh)
            reach.append((None, from_ql))
        # ne: nothing bounds it
    return Bounds(max(low_min, default=None), min(low_max, default=None), tuple(reach), tuple(under))


def class_ranges(found: Bounds) -> list[ClassRange]:
    """Per span class, the ``low`` interval its matching rows lie in (empty when ``found`` bounds nothing).

    Which ends are open depends only on which bounds exist, never on their values."""
    if not found.bounded:
        return []
    ranges: list[ClassRange] = []
    for k in SPAN_CLASSES:
        lows = [found.low_min] if found.low_min is not None else []
        if k < TOP_CLASS:  # high >= b, and the span is at most S_k
            lows += [b - SPAN_BOUNDS[k] if a is None else min(a, b - SPAN_BOUNDS[k]) for a, b in found.reach]
        highs = [found.low_max] if found.low_max is not None else []
        if k > 0:  # high <= b, and the span is more than S_(k-1)
            shortest = SPAN_BOUNDS[k - 1] + 1
            highs += [b - shortest if a is None else max(a, b - shortest) for a, b in found.under]
        ranges.append(ClassRange(k, max(lows) if lows else None, min(highs) if highs else None))
    return ranges
