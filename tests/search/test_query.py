"""Parsing of search queries into typed expressions (https://hl7.org/fhir/R4/search.html)."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.search.dates import parse_range
from gateway.search.query import ChainCriterion, Criterion, HasCriterion, Include, SearchQuery, SortKey, parse_query
from gateway.search.registry import Registry, default_registry
from gateway.search.values import (
    DAY_MICROS,
    MissingValue,
    NumberValue,
    QuantityValue,
    RangeValue,
    ReferenceValue,
    TextValue,
    TokenValue,
    parse_date,
    parse_number,
    split_unescaped,
    unescape,
)
from gateway.types import QueryParams

BASE = "http://example.org/fhir"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return default_registry()


def parse(registry: Registry, resource_type: str | None, params: QueryParams, *, strict: bool = False) -> SearchQuery:
    return parse_query(registry, resource_type, params, base_url=BASE, strict=strict, default_count=20, max_count=100)


def only(query: SearchQuery) -> Criterion:
    assert len(query.criteria) == 1
    criterion = query.criteria[0]
    assert isinstance(criterion, Criterion)
    return criterion


# -- escaping (https://hl7.org/fhir/R4/search.html#escaping) -----------------------------------------


def test_split_keeps_escaped_separators() -> None:
    assert split_unescaped(r"a,b\,c,d", ",") == ["a", r"b\,c", "d"]
    assert split_unescaped(r"a\\,b", ",") == [r"a\\", "b"]
    assert unescape(r"b\,c \| \$ \\ \x") == r"b,c | $ \ \x"


def test_or_values_and_escaped_comma(registry: Registry) -> None:
    criterion = only(parse(registry, "Patient", [("name", r"smith,jones\,jr")]))
    assert criterion.values == (TextValue("smith"), TextValue("jones,jr"))


def test_escaped_pipe_stays_in_token_code(registry: Registry) -> None:
    criterion = only(parse(registry, "Patient", [("identifier", r"urn:sys|A\|1")]))
    assert criterion.values == (TokenValue("urn:sys", "A|1"),)


# -- tokens -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("female", TokenValue(None, "female")),
        (
            "http://hl7.org/fhir/administrative-gender|female",
            TokenValue("http://hl7.org/fhir/administrative-gender", "female"),
        ),
        ("|female", TokenValue("", "female")),
        ("http://hl7.org/fhir/administrative-gender|", TokenValue("http://hl7.org/fhir/administrative-gender", None)),
    ],
)
def test_token_forms(registry: Registry, text: str, expected: TokenValue) -> None:
    assert only(parse(registry, "Patient", [("gender", text)])).values == (expected,)


def test_token_modifiers(registry: Registry) -> None:
    assert only(parse(registry, "Patient", [("gender:not", "male")])).negated
    text = only(parse(registry, "Patient", [("identifier:text", "Medi-Cal")]))
    assert text.values == (TextValue("medi-cal"),)
    missing = only(parse(registry, "Patient", [("gender:missing", "true")]))
    assert missing.values == (MissingValue(True),) and missing.negated
    assert not only(parse(registry, "Patient", [("gender:missing", "false")])).negated


# -- strings, uris --------------------------------------------------------------------------------------


def test_string_is_folded_unless_exact(registry: Registry) -> None:
    assert only(parse(registry, "Patient", [("name", "MÜLLER")])).values == (TextValue("muller"),)
    assert only(parse(registry, "Patient", [("name:exact", "Müller")])).values == (TextValue("Müller"),)
    assert only(parse(registry, "Patient", [("name:contains", "ll")])).modifier == "contains"


def test_uri_modifiers(registry: Registry) -> None:
    below = only(parse(registry, "Patient", [("_profile:below", "http://x.org/fhir/")]))
    assert below.kind == "uri" and below.modifier == "below" and below.values == (TextValue("http://x.org/fhir/"),)


# -- dates, numbers, quantities (https://hl7.org/fhir/R4/search.html#prefix) ---------------------------


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"])
def test_date_prefixes(prefix: str) -> None:
    assert parse_date("date", f"{prefix}2024-05") == RangeValue(prefix, *parse_range("2024-05"))


def test_date_without_prefix_is_eq() -> None:
    assert parse_date("date", "2024") == RangeValue("eq", *parse_range("2024"))


def test_ap_date_widens_by_a_tenth_of_the_distance_to_now_at_least_a_day() -> None:
    low, high = parse_range("2024-05-01")
    near = parse_date("date", "ap2024-05-01", now_micros=low + DAY_MICROS)
    assert (near.low, near.high) == (low - DAY_MICROS, high + DAY_MICROS)
    far = parse_date("date", "ap2024-05-01", now_micros=low + 100 * DAY_MICROS)
    assert (far.low, far.high) == (low - 10 * DAY_MICROS, high + 10 * DAY_MICROS)


def test_number_precision_and_prefixes() -> None:
    eq = parse_number("n", "100")
    assert eq.low == pytest.approx(99.5) and eq.high == pytest.approx(100.5) and not eq.negated
    assert parse_number("n", "ne100").negated
    precise = parse_number("n", "100.00")
    assert precise.low == pytest.approx(99.995) and precise.high == pytest.approx(100.005)
    assert parse_number("n", "1e2").low == pytest.approx(50)
    gt = parse_number("n", "gt100")
    assert gt.low > 100 and gt.high == float("inf")
    le = parse_number("n", "le100")
    assert le.low == float("-inf") and le.high >= 100
    ap = parse_number("n", "ap100")
    assert ap.low == pytest.approx(90) and ap.high == pytest.approx(110)


def test_quantity_forms(registry: Registry) -> None:
    full = only(parse(registry, "Encounter", [("length", "le5.4|http://unitsofmeasure.org|min")])).values[0]
    assert isinstance(full, QuantityValue)
    assert (full.system, full.code) == ("http://unitsofmeasure.org", "min")
    assert full.amount == parse_number("length", "le5.4")
    unit_only = only(parse(registry, "Encounter", [("length", "5.4||min")])).values[0]
    assert isinstance(unit_only, QuantityValue) and (unit_only.system, unit_only.code) == (None, "min")
    bare = only(parse(registry, "Encounter", [("length", "5.4")])).values[0]
    assert isinstance(bare, QuantityValue) and bare.code is None and isinstance(bare.amount, NumberValue)


# -- references (https://hl7.org/fhir/R4/search.html#reference) ---------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123", ReferenceValue(None, "123", None, BASE)),
        ("Patient/123", ReferenceValue("Patient", "123", None, BASE)),
        ("Patient/123/_history/2", ReferenceValue("Patient", "123", None, BASE)),
        (f"{BASE}/Patient/123", ReferenceValue("Patient", "123", None, BASE)),
        ("http://other.org/fhir/Patient/9", ReferenceValue(None, None, "http://other.org/fhir/Patient/9", BASE)),
        (
            "http://acme.org/fhir/ActivityDefinition/x|2.0",
            ReferenceValue(None, None, "http://acme.org/fhir/ActivityDefinition/x", BASE),
        ),
    ],
)
def test_reference_forms(registry: Registry, text: str, expected: ReferenceValue) -> None:
    # Task.owner has several target types, so a bare id stays untyped.
    assert only(parse(registry, "Task", [("owner", text)])).values == (expected,)


def test_reference_type_modifier_and_single_target(registry: Registry) -> None:
    typed = only(parse(registry, "Task", [("owner:Practitioner", "7")]))
    assert typed.target_type == "Practitioner" and typed.values == (ReferenceValue("Practitioner", "7", None, BASE),)
    # Patient.organization targets only Organization: a bare id is typed from it.
    single = only(parse(registry, "Patient", [("organization", "7")]))
    assert single.values == (ReferenceValue("Organization", "7", None, BASE),)
    with pytest.raises(BadRequest, match="does not point to a Practitioner"):
        parse(registry, "Task", [("owner:Practitioner", "Organization/7")])


def test_reference_identifier_modifier(registry: Registry) -> None:
    criterion = only(parse(registry, "Encounter", [("subject:identifier", "urn:sys|A1")]))
    assert criterion.values == (TokenValue("urn:sys", "A1"),)


# -- chains and _has ---------------------------------------------------------------------------------


def test_chain_uses_every_target_with_the_parameter(registry: Registry) -> None:
    query = parse(registry, "Task", [("owner.name", "smith")])
    chain = query.criteria[0]
    assert isinstance(chain, ChainCriterion)
    targets = {target for target, _ in chain.targets}
    assert {"Patient", "Practitioner", "Organization"} <= targets
    assert "PractitionerRole" not in targets  # an owner type without a name parameter


def test_chain_with_type_modifier(registry: Registry) -> None:
    chain = parse(registry, "Encounter", [("subject:Patient.identifier", "urn:sys|A1")]).criteria[0]
    assert isinstance(chain, ChainCriterion)
    assert [(t, c.values) for t, c in chain.targets] == [("Patient", (TokenValue("urn:sys", "A1"),))]


def test_has(registry: Registry) -> None:
    has = parse(registry, "Patient", [("_has:Encounter:subject:status", "finished")]).criteria[0]
    assert isinstance(has, HasCriterion)
    assert (has.source_type, has.ref_code, has.inner.code) == ("Encounter", "subject", "status")


# -- result parameters --------------------------------------------------------------------------------


def test_result_parameters(registry: Registry) -> None:
    query = parse(
        registry,
        "Encounter",
        [
            ("_count", "500"),
            ("_sort", "-date,_id"),
            ("_include", "Encounter:subject:Patient"),
            ("_include:iterate", "Patient:organization"),
            ("_revinclude", "Provenance:target"),
            ("_summary", "data"),
            ("_total", "accurate"),
            ("_elements", "status, subject"),
            ("_format", "json"),
        ],
    )
    assert query.count == 100  # clamped to max_count
    assert query.sort == (SortKey("date", "date", True), SortKey("_id", "_id", False))
    assert query.includes == (
        Include("Encounter", "subject", "Patient", False),
        Include("Patient", "organization", None, True),
    )
    assert query.revincludes == (Include("Provenance", "target", None, False),)
    assert (query.summary, query.total, query.elements) == ("data", "accurate", ("status", "subject"))
    assert ("_format", "json") in query.used


def test_wildcard_include(registry: Registry) -> None:
    assert parse(registry, "Encounter", [("_include", "*")]).includes == (Include(None, None, None, False),)


def test_system_search_types(registry: Registry) -> None:
    query = parse(registry, None, [("_type", "Patient,Encounter"), ("_id", "a,b")])
    assert query.types == ("Patient", "Encounter")
    assert only(query).values == (TokenValue(None, "a"), TokenValue(None, "b"))
    assert len(parse(registry, None, [("_lastUpdated", "gt2024")]).types) > 10


def test_empty_values_are_ignored(registry: Registry) -> None:
    query = parse(registry, "Patient", [("name", ""), ("gender", "female")])
    assert [c.code for c in query.criteria if isinstance(c, Criterion)] == ["gender"]


# -- unknown parameters: lenient vs strict (https://hl7.org/fhir/R4/search.html#errors) ---------------


def test_unknown_parameter_lenient_and_strict(registry: Registry) -> None:
    query = parse(registry, "Patient", [("foo", "1"), ("gender", "male")])
    assert query.ignored == ("foo",)
    assert ("foo", "1") not in query.used
    with pytest.raises(BadRequest, match="'foo'"):
        parse(registry, "Patient", [("foo", "1")], strict=True)
    # A chain through an unknown parameter is unknown too.
    assert parse(registry, "Encounter", [("subject.nonsense", "x")]).ignored == ("subject.nonsense",)


# -- 400s ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "params", "message"),
    [
        ("Patient", [("name:below", "x")], "name:below"),
        ("Patient", [("gender:exact", "x")], "gender:exact"),
        ("Patient", [("birthdate:exact", "2000")], "birthdate:exact"),
        ("Patient", [("birthdate", "xx2000")], "birthdate"),
        ("Patient", [("birthdate", "2000-13-01")], "birthdate"),
        ("Patient", [("birthdate", "ge")], "birthdate"),
        ("Encounter", [("length", "abc")], "length"),
        ("Encounter", [("length", "5|x")], "length"),
        ("Patient", [("_count", "-1")], "_count"),
        ("Patient", [("_count", "ten")], "_count"),
        ("Patient", [("_count", "1"), ("_count", "2")], "_count"),
        ("Patient", [("_sort", "nonsense")], "_sort"),
        ("Patient", [("_sort", "organization")], "_sort"),
        ("Patient", [("_summary", "maybe")], "_summary"),
        ("Patient", [("_total", "all")], "_total"),
        ("Patient", [("_include", "Patient")], "_include"),
        ("Patient", [("_include", "Patient:name")], "_include"),
        ("Patient", [("_include:deep", "Patient:organization")], "_include"),
        ("Patient", [("gender:missing", "maybe")], "gender"),
        ("Encounter", [("subject.organization.name", "x")], "one level"),
        ("Patient", [("_has:Encounter:subject:_has:Task:focus:status", "x")], "nested"),
        ("Patient", [("_text", "x")], "_text"),
        ("Patient", [("_type", "Patient")], None),  # not unknown-safe: strict below
        ("Patient", [("name.family", "x")], "chained"),
        (None, [("_type", "Nonsense")], "_type"),
    ],
)
def test_bad_requests(registry: Registry, resource_type: str | None, params: QueryParams, message: str | None) -> None:
    if message is None:
        with pytest.raises(BadRequest):
            parse(registry, resource_type, params, strict=True)
        return
    with pytest.raises(BadRequest) as caught:
        parse(registry, resource_type, params)
    assert message in caught.value.message


def test_composite_parameters_are_not_supported() -> None:
    registry = Registry()
    registry.add(
        {
            "resourceType": "SearchParameter",
            "code": "name-birthdate",
            "type": "composite",
            "base": ["Patient"],
            "expression": "Patient",
        }
    )
    with pytest.raises(BadRequest, match="not supported"):
        parse(registry, "Patient", [("name-birthdate", "smith$2000")])
