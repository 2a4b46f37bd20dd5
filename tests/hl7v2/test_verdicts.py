"""The verdict memo (mappings/hl7v2/verdicts.py) gives hl7apy's own answers: ``parse_with_hl7apy`` accepts
and refuses the same messages, with the same errors, with and without it, cold and warm, on a corpus whose
messages share fields and segments (as county traffic does) and include every refusal the gateway relies
on; refusals are never remembered; the memo stays within its bound."""

from __future__ import annotations

import random
from collections.abc import Iterator

import hl7apy
import hl7apy.core
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.factories import datatype_factory
from hl7apy.v2_5_1.segments import SEGMENTS as SEGMENTS_251

from bench.hl7v2 import ref_i12 as bench_ref_i12
from mappings.hl7v2 import profiles, verdicts
from mappings.hl7v2.er7 import read_header, split_segments
from mappings.hl7v2.errors import V2Error
from mappings.hl7v2.message import parse_with_hl7apy
from tests.hl7v2.test_hl7apy_cache import _corpus

POOL = ["", "1", "ab^cd", "X~Y", "Test&Sub^2", "20250301", "\\F\\x", "a\\E\\b", "~", "^^^", "123456789012", "Z^&~"]


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    verdicts.clear()
    verdicts.enabled = True
    yield
    verdicts.clear()
    verdicts.enabled = True


def _shared_fields(seed: int, count: int) -> list[str]:
    """Messages drawn from a small pool of field values, segment names (some unknown) and MSH contexts, so
    that fields recur in other segments, positions, versions and message types."""
    rng = random.Random(seed)
    names = [*sorted(n for n in SEGMENTS_251 if n != "MSH" and len(n) == 3)[:40], "PID", "DG1", "P1D", "AB1"]
    out = []
    for n in range(count):
        version = rng.choice(("2.5", "2.5.1", "2.5.1", "9.9"))
        kind = rng.choice(("REF^I12^REF_I12", "ADT^A01^ADT_A01", "ADT^A01"))
        msh = f"MSH|^~\\&|{rng.choice(POOL)}|OCHCA|GW|PLAN|2025030110{n % 60:02d}||{kind}|C-{n}|P|{version}"
        lines = [msh]
        for _ in range(rng.randint(1, 6)):
            lines.append(rng.choice(names) + "|" + "|".join(rng.choice(POOL) for _ in range(rng.randint(1, 14))))
        out.append("\r".join(lines))
    return out


def _verdict(text: str, read: frozenset[str] | None) -> str | None:
    lines = split_segments(text)
    try:
        parse_with_hl7apy(lines, read_header(text.encode()), read=read)
    except V2Error as error:
        return repr([(p.code, p.text, str(p.location)) for p in error.problems]) + error.ack_code
    return None


def _same_verdicts_memo_or_not(corpus: list[str], read: frozenset[str] | None, *, seed: int) -> list[str | None]:
    """The verdicts of ``corpus`` with the memos off; asserts the memos give the same, cold (in order) and
    warm (in a shuffled order)."""
    verdicts.enabled = False
    plain = [_verdict(text, read) for text in corpus]
    verdicts.enabled = True
    cold = [_verdict(text, read) for text in corpus]
    shuffled = list(range(len(corpus)))
    random.Random(seed).shuffle(shuffled)
    warm = {i: _verdict(corpus[i], read) for i in shuffled}
    assert cold == plain
    assert [warm[i] for i in range(len(corpus))] == plain
    return plain


@pytest.mark.parametrize("read", [None, profiles.READ_SEGMENTS["REF"]])
def test_the_memo_gives_hl7apy_own_verdicts(read: frozenset[str] | None) -> None:
    corpus = _corpus() + _shared_fields(1, 150) + [bench_ref_i12(n, "V").decode() for n in range(40)]
    corpus += [text.replace("Testmember", "Te\\S\\stmember") for text in corpus[-5:]]
    plain = _same_verdicts_memo_or_not(corpus, read, seed=3)
    assert verdicts.stats.hits > 1000 and verdicts.stats.hit_rate > 0.3  # the memo answered most fields
    assert verdicts.stats.settled > 100  # and most warm messages were parsed by their segments alone
    refused = [v for v in plain if v is not None]
    assert len(refused) > 20 and len(refused) < len(corpus) - 50  # both verdicts are exercised


COMPONENTS = ["", " ", "A", "MEDI-CAL", "OCHCA", "MA", "MR", "x&y", "&z", "\\F\\", "a\\S\\b", "20250301",
              "20250301120000+1500", "202503011200-1300", "20250301+9900", "1.5", "Santa Ana", "CA", "92701", "L",
              "\u00e9t\u00e9", "12345678901234567890", "a" * 300, "2.5.1", "NPI", "I10", "F20.9"]  # fmt: skip
"""Component values shared by the composite fields of ``_shared_components`` (dates with offsets, subcomponents,
escapes, long values)."""
COMPOSITES = {
    "MSH": (6, 9, 10, 3, 4),  # as split: MSH-7 (TS), MSH-10 (ST), MSH-11 (PT), MSH-4/5 (HD)
    "RF1": (1, 3, 6, 7),
    "PID": (3, 5, 7, 11, 13, 29),
    "PRD": (2, 3, 7),
    "DG1": (3, 5),
    "IN1": (2, 3, 12),
    "AUT": (4, 5, 8),
    "NTE": (3,),
    "OBX": (2, 5),  # OBX-5 varies
    "AB1": (1, 2),  # not a segment: refused
}


def _shared_components(seed: int, count: int, separators: str = "^~\\&") -> list[str]:
    """Messages whose composite fields (and base, varies and unknown ones) are drawn component by component
    from ``COMPONENTS``, 1-25 components (beyond a datatype's last one too) and 1-3 repetitions, so that
    every component recurs at its position in other combinations; with ``separators`` as MSH-2."""
    rng = random.Random(seed)
    component, repetition = separators[0], separators[1]

    def field() -> str:
        reps = []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            parts = [rng.choice(COMPONENTS) for _ in range(rng.choice((1, 2, 3, 5, 6, 9, 25)))]
            reps.append(component.join(part.replace("^", component) for part in parts))
        return repetition.join(reps)

    out = []
    for n in range(count):
        version = rng.choice(("2.5", "2.5.1", "2.5.1"))
        lines = [f"MSH|{separators}|HCA|OCHCA|GW|PLAN|20250301||REF{component}I12{component}REF_I12|K-{n}|P|{version}"]
        names = [name for name in sorted(COMPOSITES) if name != "AB1" or rng.random() < 0.3]
        for name in rng.sample(names, rng.randint(2, 6)):
            if name == "MSH":
                fields = lines[0].split("|")
                for position in COMPOSITES["MSH"]:
                    if position not in (8, 9) and rng.random() < 0.5:
                        fields[position] = field()
                lines[0] = "|".join(fields)
                continue
            fields = [""] * (max(COMPOSITES[name]) + 1)
            for position in COMPOSITES[name]:
                if rng.random() < 0.8:
                    fields[position] = field()
            lines.append(name + "|" + "|".join(fields[1:]))
        out.append("\r".join(lines))
    return out


@pytest.mark.parametrize("separators", ["^~\\&", "$~\\&"])
def test_the_component_memo_gives_hl7apy_own_verdicts(separators: str) -> None:
    """Components seen accepted at a position are not handed again: same verdicts as hl7apy whole, cold and
    warm in any order, with the component memo answering most components of the fields not answered whole."""
    corpus = _shared_components(5, 300, separators)
    plain = _same_verdicts_memo_or_not(corpus, None, seed=8)
    refused = [v for v in plain if v is not None]
    assert 10 < len(refused) < len(corpus) - 100  # both verdicts are exercised
    assert verdicts.stats.components > 2000, verdicts.stats
    assert any(shape is None for shape in verdicts._shapes.values())  # base, varies or unknown: handed whole
    assert any(shape for shape in verdicts._shapes.values())


def test_composite_fields_are_handed_with_their_new_components_only() -> None:
    """After message 1, message 2's new identifiers, name, street, referral id, control id, note, birth date
    and send time are values of base datatypes at positions where hl7apy accepted one (``VALUE``): none is
    handed, so only its MSH is (the context); a component holding subcomponents is still handed."""
    first, second = bench_ref_i12(1, "P").decode(), bench_ref_i12(2, "P").decode()
    assert _verdict(first, None) is None
    context = verdicts.context_of(split_segments(second)[0])
    assert context is not None
    before = verdicts.stats.components
    handed = verdicts.hand(context, split_segments(second))
    assert [line[:3] for line in handed] == ["MSH"]
    assert [field for n, field in enumerate(handed[0].split("|")) if field and n not in (0, 1, 8, 11)] == []
    assert verdicts.stats.components >= before + 8
    sub = second.replace("^^^MEDI-CAL^MA", "&x^^^MEDI-CAL^MA", 1)  # CX-1 now holds two subcomponents
    handed = verdicts.hand(context, split_segments(sub))
    assert handed[1].split("|")[3] == "90000002A&x^^^^"


def test_single_values_are_known_from_hl7apy_own_reference() -> None:
    """``_shape`` reads, per position, which components hold one value of a base datatype when they hold no
    subcomponent separator (hl7apy's own parse of a probe, ``_leaf``): a name's family name (``FN_1``, ST),
    an identifier's authority (``HD_1``, IS), a time (``TS_1``, DTM), a composite's first part (XPN-9, a
    CE: ``CE_1``, ST); a base field (MSH-10, ST; NTE-3, FT; PID-1, SI) is known as such; an unknown
    position is not."""
    context = verdicts.context_of(bench_ref_i12(1, "T").decode().split("\r")[0])
    assert context is not None
    name, identifiers = verdicts._shape(context, "PID", 5), verdicts._shape(context, "PID", 3)
    born = verdicts._shape(context, "PID", 7)
    assert name is not None and identifiers is not None and born is not None
    assert name.single == name.components == frozenset(range(1, 15))
    assert identifiers.single == identifiers.components == frozenset(range(1, 11))
    assert born.single == born.components == {1, 2}
    reference = hl7apy.core.Field("PID_5", version="2.5.1").structure_by_name
    assert [verdicts._leaf(f"XPN_{i}", "2.5.1", reference[f"XPN_{i}"]["ref"]) for i in (1, 9, 12)] == [
        "ST",
        "ST",
        "DTM",
    ]
    for segment, position in (("MSH", 9), ("NTE", 3), ("PID", 1)):
        shape = verdicts._shape(context, segment, position)
        assert shape is not None and shape.base and not shape.components
    assert verdicts._shape(context, "PID", 99) is None  # no such field: handed whole


BASE_VALUES = ["", " ", "\xa0", "x", "2025", "202503", "20250301", "20250231", "2025030112", "202503011230",
               "20250301123045", "20250301123045.1", "20250301123045.1234", "20250301123045.12345",
               "20250301+1500", "20250301-1300", "20250301+1460", "20250301+0000", "2025+0100+0100", "12+0300",
               "1204-0400", "120434.1234+1400", "25:61", "-0", "+1", "1e999999999", "NaN", "sNaN", "Infinity",
               "1" * 5000, "\u0663\u0660\u0662\u0665", "\uff12\uff10\uff12\uff15", "\\X0B\\", "a" * 300]  # fmt: skip
"""Values of every base datatype's troubles: impossible dates, offsets and fractions out of range, numbers in
every form, non-ASCII digits, long values."""


def test_hl7apy_builds_any_value_of_a_base_datatype_in_tolerant_mode() -> None:
    """The premise of ``VALUE`` (module docstring of mappings/hl7v2/verdicts.py): in tolerant mode hl7apy's
    datatype factory raises on no value of any base datatype of the versions the gateway takes (a value its
    datatype refuses becomes an ST), so its verdict on one value never depends on the text."""
    rng = random.Random(4)
    alphabet = "0123456789" * 3 + "+-.eE :\\&^~xZ\u0663\uff11\xa0"
    values = BASE_VALUES + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))) for _ in range(3000)]
    for version in profiles.VERSIONS:
        base = sorted(hl7apy.load_library(version).get_base_datatypes())
        assert {"ST", "DT", "DTM", "TM", "NM", "SI"} <= set(base)
        for datatype in base:
            for value in values:
                datatype_factory(datatype, value, version, VALIDATION_LEVEL.TOLERANT)


def test_a_refusal_is_never_remembered() -> None:
    text = bench_ref_i12(1, "R").decode()
    refused = text.replace("\rIN1|", "\rP1D|1|x\rIN1|")
    assert _verdict(text, None) is None
    first = _verdict(refused, None)
    assert first is not None and "P1D" in first
    assert _verdict(refused, None) == first
    assert not any(key[1] == "P1D" for key in verdicts._accepted)


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdicts, "LIMIT", 50)
    for n in range(30):
        assert _verdict(bench_ref_i12(n, "B").decode(), None) is None
    assert len(verdicts._accepted) == 50


def test_the_context_is_kept_whole() -> None:
    """MSH-2, MSH-9 and MSH-12 are never emptied, whatever was seen: they are what hl7apy reads first."""
    text = bench_ref_i12(1, "C").decode()
    msh = split_segments(text)[0]
    context = verdicts.context_of(msh)
    assert context is not None
    verdicts.remember(context, split_segments(text))
    handed = verdicts.hand(context, split_segments(bench_ref_i12(2, "C").decode()))
    fields = handed[0].split("|")
    assert (fields[1], fields[8], fields[11]) == ("^~\\&", "REF^I12^REF_I12", "2.5.1")
    assert fields[2] == ""  # MSH-3 seen before
    assert fields[6] == fields[9] == ""  # MSH-7 and MSH-10 new, but one value each where hl7apy accepted one
    assert any(line.startswith("IN1") for line in split_segments(text))
    assert not any(line.startswith("IN1") for line in handed)  # every field of the IN1 was seen: left out


def test_a_settled_context_parses_only_the_new_fields() -> None:
    """After one accepted message of a context, a message of that context whose segment names were all
    accepted in it is settled: hl7apy gets its new fields only, MSH-9 and MSH-12 emptied too; a new
    segment name, or another context (MSH-12 here), is not settled (``parse_message`` judges it whole)."""
    first, second = bench_ref_i12(1, "S").decode(), bench_ref_i12(2, "S").decode()
    context = verdicts.context_of(split_segments(second)[0])
    assert context is not None
    assert not verdicts.settled(context, verdicts.hand(context, split_segments(second)))
    assert _verdict(first, None) is None
    handed = verdicts.hand(context, split_segments(second))
    assert verdicts.settled(context, handed)
    assert verdicts.bare(handed[0], context).split("|")[8:12] == ["", "", "", ""]
    unseen = second.replace("\rIN1|", "\rGT1|1\rIN1|")
    assert not verdicts.settled(context, verdicts.hand(context, split_segments(unseen)))
    other = verdicts.context_of(split_segments(second.replace("|2.5.1|", "|2.5|", 1))[0])
    assert other is not None and other != context
    assert not verdicts.settled(other, verdicts.hand(other, split_segments(second)))
    settled = verdicts.stats.settled
    assert _verdict(second, None) is None and _verdict(unseen, None) is None
    assert verdicts.stats.settled == settled + 1  # ``second`` only
