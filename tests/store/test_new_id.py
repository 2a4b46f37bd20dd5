"""Server-assigned ids (gateway/store/ids.py ``new_id``): time-ordered version 7 UUIDs in canonical form
(RFC 9562 section 5.7), valid FHIR ids (https://hl7.org/fhir/R4/datatypes.html#id)."""

from __future__ import annotations

import re
import time
import uuid

from gateway.store.ids import new_id

FHIR_ID = re.compile(r"[A-Za-z0-9\-\.]{1,64}")


def test_ids_are_canonical_version_7_uuids_of_the_current_millisecond() -> None:
    for _ in range(2000):
        before = time.time_ns() // 1_000_000
        text = new_id()
        after = time.time_ns() // 1_000_000
        parsed = uuid.UUID(text)
        assert str(parsed) == text, "canonical lower-case form"
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert FHIR_ID.fullmatch(text)
        assert before <= parsed.int >> 80 <= after + 1, "unix_ts_ms (one step of headroom for a burst)"


def test_ids_increase_in_creation_order_as_text_and_never_repeat() -> None:
    ids = [new_id() for _ in range(50_000)]
    assert ids == sorted(ids), "later ids sort later, so b-trees keyed by id grow at their right edge"
    assert len(set(ids)) == len(ids)
    assert len({uuid.UUID(text).int >> 64 for text in ids}) == len(ids), "the 60-bit stamp alone increases"


def test_every_random_bit_varies() -> None:
    ids = [uuid.UUID(new_id()).int for _ in range(2000)]
    varying = 0
    for value in ids:
        varying |= value ^ ids[0]
    random_bits = (1 << 62) - 1
    assert varying & random_bits == random_bits
