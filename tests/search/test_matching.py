"""The choices both search SQL builders share (gateway/search/matching.py): which criteria select rows,
which date criteria share an index row, and the upper bound of a prefix range
(https://hl7.org/fhir/R4/search.html). Their SQL is pinned by ``test_sql_pinned.py``."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway.search.matching import by_rid, semi_join, split_ranges, successor
from gateway.search.query import ChainCriterion, Condition, Criterion, SearchQuery, parse_query
from gateway.search.registry import Registry, default_registry
from gateway.search.values import RangeValue
from gateway.types import QueryParams


@pytest.fixture(scope="module")
def registry() -> Registry:
    return default_registry()


def _query(registry: Registry, resource_type: str, params: QueryParams) -> SearchQuery:
    return parse_query(
        registry, resource_type, params, base_url="http://test.local/fhir", strict=True, default_count=20, max_count=100
    )


def _codes(criteria: Sequence[Condition]) -> list[str]:
    return [c.code if isinstance(c, Criterion | ChainCriterion) else c.source_type for c in criteria]


def test_successor_is_the_least_string_above_every_extension() -> None:
    assert successor("gar") == "gas"
    assert successor("a\ud7ff") == "a\ue000"  # no surrogates in UTF-8 text
    assert successor("a\U0010ffff") == "b"
    assert successor("\U0010ffff") is None
    assert successor("") is None


def test_only_positive_criteria_on_index_rows_are_semi_joins(registry: Registry) -> None:
    params = [
        ("family", "gar"),
        ("gender:not", "male"),
        ("birthdate:missing", "true"),
        ("_lastUpdated", "gt2024-01-01"),
        ("_id", "p1"),
        ("organization.name", "org"),
    ]
    criteria = _query(registry, "Patient", params).criteria
    assert [semi_join(c) for c in criteria] == [True, False, False, False, False, True]
    assert by_rid(criteria[:1]) and by_rid([criteria[5]])
    assert not by_rid(criteria[1:4])
    assert not by_rid(criteria)  # an _id list is read by (res_type, res_id) instead


def test_single_valued_date_criteria_of_one_parameter_are_grouped(registry: Registry) -> None:
    params = [
        ("birthdate", "ge2020-01-01"),
        ("family", "gar"),
        ("birthdate", "lt2024-01-01"),
        ("birthdate", "2021,2022"),  # two values: a criterion of its own
        ("_lastUpdated", "gt2024-01-01"),
    ]
    others, groups = split_ranges(_query(registry, "Patient", params).criteria)
    assert _codes(others) == ["family", "birthdate", "_lastUpdated"]
    assert [_codes(group) for group in groups] == [["birthdate", "birthdate"]]
    assert [g.values[0].prefix for g in groups[0] if isinstance(g.values[0], RangeValue)] == ["ge", "lt"]
