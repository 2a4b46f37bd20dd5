"""The claim step 1 rests on (adapters/hl7v2/prevalidate.py): on what our mappings build from messages the
screen accepts, the R4B model pass finds nothing the R4 walk does not find at the same element, except
strings made only of ``ODD_SPACE``; so a resource without those characters validates the same with and
without the model (the same issues, hence the same 422 and AE).

Evidence: a generated corpus of REF^I12 and ADT messages whose fields and components are replaced by
hostile content (control characters raw and as ``\\Xhh\\`` escapes, odd Unicode whitespace, extreme and
impossible dates and offsets, long values, repetitions, separators and escapes, non-ASCII digits), run
through step 1 (hl7apy, the profile check, the maps); every mapped resource is validated both ways. A
future mapping change that lets through something only the model refuses fails here.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any

import orjson
import pytest
from pydantic import Field, TypeAdapter, ValidationError

from adapters.hl7v2.config import mapping_config
from adapters.hl7v2.prepare import Preparer
from adapters.hl7v2.prevalidate import ODD_SPACE, model_verdicts, needs_model
from gateway.calaim.policy import Policy
from gateway.fhir.validation import model_issues, validate_resource
from gateway.settings import Settings
from tests.hl7v2 import support

CONTROL = "".join(chr(c) for c in range(32) if c != 13) + "\x7f\x80\x9f"
DATES = [
    "00010101", "99991231", "20240230", "20240229", "19000229", "2024", "202402", "20241301", "2025030124",
    "20250301235959.1234+1400", "20250301120000-1400", "20250301120000+2400", "20250301120000+9999",
    "20250301246060", "20250301120000.99999", "\u0662\u0660\u0662\u0665\u0660\u0663\u0660\u0661", "2025-03-01",
]  # fmt: skip
ODD_TEXT = [
    "a  b", " a", "a ", "a\tb", "\\F\\", "\\S\\", "\\T\\", "\\R\\", "\\E\\", "\\.br\\", "\\H\\x\\N\\", "\\X\\",
    "\\XZZ\\", "http://x y", "urn:x", "HL70001", "I10", "\\X0B0C\\", "\\XA0\\", "\\X85\\", "x\\X00\\y",
]  # fmt: skip
NUMBERS = ["0", "00", "\u00b2", "\u0661\u0662", "99999999999999999999999", "-1", "1.5", "1e5", "NaN", "9" * 40]


def _hostile(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.15:
        return "".join(rng.choice(ODD_SPACE) for _ in range(rng.randrange(1, 4)))
    if kind < 0.25:
        return "".join(rng.choice(CONTROL) for _ in range(rng.randrange(1, 4)))
    if kind < 0.32:
        codes = (0x0B, 0x0C, 0x85, 0xA0, 0x00, 0x1C, 0x09, 0x0A, 0x20)
        return "\\X" + "".join(f"{rng.choice(codes):02X}" for _ in range(rng.randrange(1, 3))) + "\\"
    if kind < 0.40:
        return rng.choice(DATES)
    if kind < 0.47:
        return rng.choice(["a" * rng.choice([65, 300, 5000]), "x " * 2000, "\u00e9" * 100, "\U0001f600" * 50])
    if kind < 0.55:
        return rng.choice(ODD_TEXT)
    if kind < 0.62:
        reps = ["A", "B^^^MEDI-CAL^MA", "M^^^OCHCA^MR", " ", "\xa0", "C^^^OCHCA^MR"]
        return "~".join(rng.choice(reps) for _ in range(rng.randrange(2, 6)))
    if kind < 0.70:
        return "".join(rng.choice("^&~ab \xa0\x0b") for _ in range(rng.randrange(1, 8)))
    if kind < 0.78:
        return rng.choice(NUMBERS)
    return "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(1, 6)))


def _mutate(rng: random.Random, text: str) -> str:
    """``text`` with 1-3 fields (or one component of them) of its non-MSH segments replaced."""
    segments = text.rstrip("\r").split("\r")
    for _ in range(rng.randrange(1, 4)):
        index = rng.randrange(1, len(segments))
        fields = segments[index].split("|")
        position = rng.randrange(1, len(fields) + 2)
        fields += [""] * (position + 1 - len(fields))
        if rng.random() < 0.5 and fields[position]:
            components = fields[position].split("^")
            components[rng.randrange(len(components))] = _hostile(rng)
            fields[position] = "^".join(components)
        else:
            fields[position] = _hostile(rng)
        segments[index] = "|".join(fields)
    return "\r".join(segments) + "\r"


def _corpus(seed: int, count: int) -> Iterator[str]:
    rng = random.Random(seed)
    bases = (
        lambda k: support.ref_i12(f"H{k}", mrn=f"M{k}", extra=("DG1|2||F41.1^Anxiety^I10||20241201|F",)),
        lambda k: support.adt(f"A{k}"),
        lambda k: support.adt(f"D{k}", "A03", discharge="20250311120000"),
    )
    for k in range(count):
        yield _mutate(rng, rng.choice(bases)(k))


@pytest.fixture(scope="module")
def preparer() -> Preparer:
    settings = Settings(database_url="sqlite:///:memory:", auth_enabled=False)
    policy = Policy.load(settings.calaim_plan_dir)
    return Preparer(settings.hl7v2_processing_id, settings.mllp_max_message_bytes, mapping_config(settings, policy))


def _bodies(bundle: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each POST or PUT body of a mapped Bundle as its interaction judges it (a create without its id)."""
    for entry in bundle["entry"]:
        if entry["request"]["method"] in ("POST", "PUT"):
            yield {k: v for k, v in entry["resource"].items() if k != "id" or entry["request"]["method"] == "PUT"}


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


@pytest.mark.parametrize("seed", [20261124, 7])
def test_without_odd_spaces_the_model_adds_nothing_to_the_walk(preparer: Preparer, seed: int) -> None:
    seen: Counter[str] = Counter()
    for text in _corpus(seed, 700):
        prepared = preparer.prepare(text.encode())
        if prepared.mapped is None:
            seen["refused by the screen"] += 1
            continue
        seen["mapped"] += 1
        for body in _bodies(prepared.mapped.bundle):
            rtype = body["resourceType"]
            walk = validate_resource(body, resource_type=rtype, with_model=False)
            full = validate_resource(body, resource_type=rtype, with_model=True)
            found = model_issues(body, rtype)
            flagged = needs_model(body)
            seen["resources"] += 1
            seen["the walk refuses"] += bool(walk)
            if not flagged:
                assert full == walk, (rtype, [i.diagnostics for i in full])
                assert found is not None and (walk or not found)
            elif full != walk:
                seen["only the model refuses (flagged)"] += 1
    assert seen["mapped"] > 300 and seen["refused by the screen"] > 50, seen
    assert seen["the walk refuses"] > 5 and seen["only the model refuses (flagged)"] > 5, seen


def test_odd_space_is_what_the_model_calls_whitespace_but_the_walk_does_not() -> None:
    """``ODD_SPACE`` is exactly the characters the model's pattern check reads as ``\\s`` (pydantic's Rust
    regex) other than space, tab, CR and LF."""
    space: TypeAdapter[str] = TypeAdapter(Annotated[str, Field(pattern=r"^\s$")])
    found = set()
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        try:
            space.validate_python(chr(code))
        except ValidationError:
            continue
        found.add(chr(code))
    assert found - set(" \t\r\n") == set(ODD_SPACE)
    for char in ODD_SPACE:  # and each is refused by the model alone, as a string made of it
        body = {"resourceType": "Patient", "name": [{"family": char * 2}]}
        assert validate_resource(body, with_model=False) == [] and model_issues(body, "Patient")


def test_needs_model_finds_odd_spaces_anywhere() -> None:
    rng = random.Random(3)
    alphabet = ["a", " ", "\\", "f", "\t", "\n", '"', "\u00e9", "\x01", *ODD_SPACE]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 5)))
        body: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": "x", "given": [text]}]}
        if rng.random() < 0.2:
            body = {"resourceType": "Patient", text or "k": 1}
        odd = any(char in ODD_SPACE for value in _strings(body) for char in value)
        assert needs_model(body) is odd or (not odd and b"\\\\f" in orjson.dumps(body)), repr(text)


def test_model_verdicts_run_the_model_only_where_it_may_differ() -> None:
    entries = [
        {"resource": {"resourceType": "Patient", "id": "x"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "name": [{"family": "\xa0"}]}, "request": {"method": "POST"}},
        {"resource": {"resourceType": "Patient", "name": [{"family": "a\xa0b"}]}, "request": {"method": "POST"}},
        {"resource": {"resourceType": "Patient", "active": "no"}, "request": {"method": "POST"}},
        {"resource": {"resourceType": "Coverage", "status": 10**30}, "request": {"method": "POST"}},
        {"request": {"method": "GET", "url": "Patient?identifier=x"}},
    ]
    verdicts = model_verdicts({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    # the NBSP family only the model refuses; "active": "no" the walk refuses (verdict True: the walk alone
    # answers the same 422); an integer orjson cannot write is validated in full; a GET has no body
    assert verdicts == (True, False, True, True, False, False)


def test_step_1_answers_every_message_of_the_corpus(preparer: Preparer) -> None:
    """No message makes step 1 raise (a raise ends the parse worker): what the screen or the maps cannot
    take is an AE, with the plan decided for the REF^I12s too."""
    settings = Settings(database_url="sqlite:///:memory:", auth_enabled=False)
    policy = Policy.load(settings.calaim_plan_dir)
    planning = Preparer(
        preparer.processing_id, preparer.max_message_bytes, preparer.config, validate_models=True, policy=policy
    )
    for text in _corpus(11, 300):
        prepared = planning.prepare(text.encode())
        assert (prepared.mapped is None) == (prepared.error is not None)
    huge = support.ref_i12("BIG").replace("|||24", "|||" + "9" * 30).encode()
    prepared = planning.prepare(huge)
    assert prepared.error is None and prepared.plan is None and prepared.planned
    short = support.adt("SHORT").replace("|F\r", "|F\r\x1b\r").encode()
    answer = planning.prepare(short)
    assert answer.error is not None and answer.error.problems[0].code == "100"
