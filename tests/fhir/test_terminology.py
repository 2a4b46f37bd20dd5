"""ValueSet expansion for required bindings (https://hl7.org/fhir/R4/valueset.html): gateway/fhir/terminology.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.fhir.profiles import load_profile_set
from gateway.fhir.terminology import Terminology, TerminologyError, core_expansions
from gateway.types import JSONObject

IG = "https://test.example/fhir"
POF = f"{IG}/CodeSystem/test-pof"
PROFILES = load_profile_set(Path(__file__).parent / "profiles_fixtures")


def codes(url: str) -> set[str]:
    return set(PROFILES.expand(f"{IG}/ValueSet/{url}").codes)


def test_whole_code_system_with_its_hierarchy() -> None:
    assert codes("test-pof") == {"1", "1a", "1b", "2", "3"}
    assert (POF, "1a") in PROFILES.expand(f"{IG}/ValueSet/test-pof").pairs


def test_filters() -> None:
    assert codes("test-homeless-pof") == {"1", "1a", "1b"}  # is-a
    assert codes("test-adult-pof") == {"1", "1a", "2", "3"}  # boolean property =


def test_explicit_codes_of_an_external_system() -> None:
    assert codes("test-decision") == {"A1", "A2", "A3", "A4", "A6", "C"}


def test_import_and_exclude() -> None:
    assert codes("test-ecm-service") == {"G9008", "G9012"}


def test_versioned_and_core_value_sets() -> None:
    assert codes("test-pof|0.1.0") == {"1", "1a", "1b", "2", "3"}
    gender = PROFILES.expand("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1")
    assert gender.codes == {"male", "female", "other", "unknown"}


def _value_set(url: str, compose: JSONObject) -> JSONObject:
    return {"resourceType": "ValueSet", "url": url, "status": "draft", "compose": compose}


def _terminology(*value_sets: JSONObject, content: str = "complete") -> Terminology:
    code_system = {
        "resourceType": "CodeSystem",
        "url": "urn:cs",
        "content": content,
        "concept": [{"code": "a", "concept": [{"code": "b"}]}, {"code": "c"}],
    }
    return Terminology({"urn:cs": code_system}, {vs["url"]: vs for vs in value_sets}, core_expansions())


@pytest.mark.parametrize(
    ("compose", "message"),
    [
        ({"include": [{"system": "http://snomed.info/sct"}]}, "not defined here"),
        ({"include": [{"system": "urn:cs", "filter": [{"property": "concept", "op": "regex", "value": "a"}]}]},
         "not supported"),
        ({"include": [{"system": "urn:cs", "filter": [{"property": "concept", "op": "is-a", "value": "z"}]}]},
         "unknown code"),
        ({"include": [{"valueSet": ["urn:vs"]}]}, "imports itself"),
        ({"include": [{"valueSet": ["urn:other"]}]}, "unknown"),
        ({"include": [{}]}, "needs a system or a valueSet"),
        ({"include": "x"}, "must be a list"),
    ],
    ids=["external whole system", "unsupported filter", "filter on unknown code", "cycle", "unknown import",
         "empty include", "malformed"],
)  # fmt: skip
def test_what_cannot_be_expanded_is_an_error(compose: JSONObject, message: str) -> None:
    with pytest.raises(TerminologyError, match=message):
        _terminology(_value_set("urn:vs", compose)).expand("urn:vs")


def test_fragment_code_systems_are_not_expanded_whole() -> None:
    terminology = _terminology(_value_set("urn:vs", {"include": [{"system": "urn:cs"}]}), content="fragment")
    with pytest.raises(TerminologyError, match="'fragment'"):
        terminology.expand("urn:vs")


def test_descendants_and_not_a() -> None:
    terminology = _terminology(
        _value_set("urn:below", {"include": [{"system": "urn:cs", "filter": [
            {"property": "concept", "op": "descendent-of", "value": "a"}]}]}),
        _value_set("urn:others", {"include": [{"system": "urn:cs", "filter": [
            {"property": "concept", "op": "is-not-a", "value": "a"}]}]}),
    )  # fmt: skip
    assert terminology.expand("urn:below").codes == {"b"}
    assert terminology.expand("urn:others").codes == {"c"}


def test_expansion_instead_of_compose() -> None:
    value_set = {
        "resourceType": "ValueSet",
        "url": "urn:expanded",
        "expansion": {"contains": [{"system": "urn:x", "code": "1", "contains": [{"system": "urn:x", "code": "2"}]}]},
    }
    assert _terminology(value_set).expand("urn:expanded").codes == {"1", "2"}
