"""Server-assigned ids (gateway/store/repository.py ``new_id``): random version-4 UUIDs in canonical form,
valid FHIR ids (https://hl7.org/fhir/R4/datatypes.html#id)."""

from __future__ import annotations

import re
import uuid

from gateway.store.repository import new_id

FHIR_ID = re.compile(r"[A-Za-z0-9\-\.]{1,64}")


def test_ids_are_canonical_version_4_uuids() -> None:
    for _ in range(2000):
        text = new_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text, "canonical lower-case form"
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert FHIR_ID.fullmatch(text)


def test_ids_do_not_repeat_and_every_random_bit_varies() -> None:
    ids = [uuid.UUID(new_id()).int for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    fixed = (0xF << 76) | (0x3 << 62)  # the version nibble and the variant bits
    varying = 0
    for value in ids[:2000]:
        varying |= value ^ ids[0]
    assert varying == ((1 << 128) - 1) & ~fixed
