"""The cheaper use of hl7apy (mappings/hl7v2/hl7apy_cache.py, ``parse_with_hl7apy(read=...)``) gives hl7apy's
own answers: the same element trees and the same refusals with and without the memoized look-ups, and the
same verdict when segments the profile does not read are handed to hl7apy by name only."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import hl7apy
import hl7apy.core
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hl7apy.v2_5.segments import SEGMENTS as SEGMENTS_25
from hl7apy.v2_5_1.segments import SEGMENTS as SEGMENTS_251

from adapters.hl7v2.prepare import Preparer
from mappings.hl7v2 import hl7apy_cache
from mappings.hl7v2.er7 import read_header, split_segments
from mappings.hl7v2.errors import V2Error
from mappings.hl7v2.message import parse_with_hl7apy
from mappings.hl7v2.profiles import READ_SEGMENTS, MappingConfig
from tests.hl7v2.support import COUNTY_NPI, adt, ref_i12

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples" / "hl7v2"
MSH = "MSH|^~\\&|HCA-BHS|OCHCA|CALAIM-GATEWAY|CALOPTIMA|20250301101500||REF^I12^REF_I12|C-1|P|{version}"
ALPHABET = "ab19 .-^&~\\XYZ+0"


@pytest.fixture(autouse=True)
def _reinstalled() -> Iterator[None]:
    """Every test leaves the memoized look-ups installed, as the gateway runs."""
    yield
    hl7apy_cache.install()


def _value(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.3:
        return ""
    if roll < 0.5:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 14)))
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12)))


def _random_segments(seed: int, count: int, names: list[str]) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(names) + "|" + "|".join(_value(rng) for _ in range(rng.randint(1, 60))) for _ in range(count)]


def _corpus() -> list[str]:
    messages = [path.read_text().replace("\r\n", "\r").replace("\n", "\r") for path in sorted(EXAMPLES.glob("*.hl7"))]
    messages += [
        ref_i12("A1", mrn="MRN-1", family="Mu\\F\\oz&Pe~a"),
        ref_i12("A2", extra=("NK1|1|Testkin^Pat|SPO", "PV1|1|O|||||||||||||||||V-9")),
        ref_i12("A3", extra=("P1D|x",)),  # refused: not a segment
        ref_i12("A4", version="2.5"),
        ref_i12("A5", version="9.9"),  # refused: unsupported version
        adt("A6", "A03", discharge="20250312"),
        ref_i12("A7").replace("^~\\&", "^~\\&#", 1),  # refused: five encoding characters before v2.7
    ]
    names = [*sorted(n for n in SEGMENTS_251 if n != "MSH" and len(n) == 3), "ZZ1", "AB1", "XXX"]
    for seed in range(4):
        lines = _random_segments(seed, 40, names)
        messages += ["\r".join([MSH.format(version="2.5.1"), line]) for line in lines]
    return messages


def _outcome(message: str) -> str:
    """hl7apy's answer to a message: its tree back in ER7, or the exception it raised."""
    try:
        parsed = parse_message(message, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
    except Exception as exc:  # the comparison is of hl7apy's own refusals, whatever they are
        return f"{type(exc).__name__}: {exc}"
    return str(parsed.to_er7()) + "|" + "|".join(repr(child) for child in parsed.children)


def test_memoized_lookups_give_hl7apy_own_trees_and_refusals() -> None:
    corpus = _corpus()
    hl7apy_cache.uninstall()
    assert not hl7apy_cache.installed()
    plain = [_outcome(message) for message in corpus]
    assert hl7apy_cache.install() and hl7apy_cache.installed()
    cached = [_outcome(message) for message in corpus]
    cached_again = [_outcome(message) for message in corpus]  # from warm caches
    assert cached == plain and cached_again == plain
    refused = [outcome for outcome in plain if outcome.startswith(("InvalidName", "UnsupportedVersion", "Invalid"))]
    assert len(refused) >= 3  # the corpus exercises hl7apy's refusals, not only its successes


def test_install_is_idempotent_and_uninstall_restores_hl7apy() -> None:
    hl7apy_cache.uninstall()
    original_load, original_base = hl7apy.load_library, hl7apy.core.is_base_datatype
    original_attrs = hl7apy.core.Element.cls_attrs
    assert isinstance(original_attrs, list)
    assert hl7apy_cache.install() and hl7apy_cache.install()
    assert hl7apy.load_library is not original_load and hl7apy.core.is_base_datatype is not original_base
    assert isinstance(hl7apy.core.Element.cls_attrs, frozenset)
    assert hl7apy.load_library("2.5.1") is original_load("2.5.1")
    with pytest.raises(hl7apy.exceptions.UnsupportedVersion):
        hl7apy.load_library("9.9")  # never remembered: raises every time
    hl7apy_cache.uninstall()
    assert hl7apy.load_library is original_load and hl7apy.core.is_base_datatype is original_base
    restored: object = hl7apy.core.Element.cls_attrs
    assert restored is original_attrs


@pytest.mark.parametrize("version", ["2.5", "2.5.1"])
def test_hl7apy_refuses_a_segment_for_its_name_only(version: str) -> None:
    """The ground for parsing unread segments by name: whatever their fields hold, hl7apy's tolerant parse of
    every standard segment of the versions the profiles take succeeds, and an unknown name fails either way."""
    names = sorted(n for n in (SEGMENTS_25 if version == "2.5" else SEGMENTS_251) if n != "MSH" and len(n) == 3)
    lines = _random_segments(7, 4 * len(names), names) + [f"{name}|" for name in names]
    header = read_header(MSH.format(version=version).encode())
    for line in lines:
        parse_with_hl7apy([MSH.format(version=version), line], header)  # no refusal
    for unknown in ("P1D|1^2&3|x", "ABC|~~|\\X41\\"):
        for read in (None, frozenset({"MSH"})):
            with pytest.raises(V2Error) as refused:
                parse_with_hl7apy([MSH.format(version=version), unknown], header, read=read)
            assert refused.value.problems[0].location is not None
            assert str(refused.value.problems[0].location).startswith(unknown[:3])


def test_unread_segments_by_name_keep_every_answer() -> None:
    """Prepared messages (Bundle or error) are the same whether hl7apy sees unread segments whole or by name."""
    preparer = Preparer("P", 1 << 20, MappingConfig(organizations_by_npi={COUNTY_NPI: "county-hca-bhs"}))
    kin = "NK1|1|Testkin^Pat^^^^^L|SPO^Spouse^HL70063\rGT1|1||Testmember^Alex\rIN1|"
    visit = "PV1|1|O|||||||||||||||||V-9\rPV2|||^Crisis\rNTE|1|"
    messages = [
        ref_i12("U1").replace("\rNTE|1|", "\r" + visit, 1),
        ref_i12("U2", extra=("OBX|1|ST|1^x||text",)),  # OBX after NTE: sequence error (AE 100)
        ref_i12("U3", extra=("P1D|x",)),  # unknown segment: AE 100 from hl7apy
        ref_i12("U4").replace("\rIN1|", "\r" + kin, 1).replace("Health\r", "Health\rIN2|1|123-45-6789\r", 1),
        adt("U5") + "OBX|1|NM|8867-4^Heart rate^LN||72|/min\rAL1|1||^Penicillin\rROL|1|AD|AT|Doc^Test\r",
        adt("U6") + "UB1|1\rXYZ|1\r",  # unknown segment in an unread position
    ]
    for text in messages:
        raw = text.encode()
        header = read_header(raw)
        assert header.message_type in READ_SEGMENTS
        prepared = preparer.prepare(raw)
        lines = split_segments(text)
        try:
            parse_with_hl7apy(lines, header, read=None)
            whole: str | None = None
        except V2Error as error:
            whole = error.summary
        try:
            parse_with_hl7apy(lines, header, read=READ_SEGMENTS[header.message_type])
            by_name: str | None = None
        except V2Error as error:
            by_name = error.summary
        assert by_name == whole, text
        if whole is not None:
            assert prepared.error is not None and prepared.error.summary == whole
    assert [preparer.prepare(t.encode()).error is None for t in messages] == [True, False, False, True, True, False]
