"""Server-assigned logical ids (https://hl7.org/fhir/R4/resource.html#id): time-ordered UUIDs.

An id is a version 7 UUID (RFC 9562 section 5.7) in its canonical lower-case text form, a valid FHIR id
(``[A-Za-z0-9\\-\\.]{1,64}``): 48 bits of Unix milliseconds, then 12 bits of sub-millisecond time
(RFC 9562 section 6.2, method 3), then 62 random bits. Ids made later sort later, as text and as numbers.

Why time-ordered and not random (version 4): every b-tree keyed by an id (the ``(type, id)`` key of
current resources, the ``(type, id, version)`` key of history, and the reference index rows that point at
resources made together, such as the members of one transaction Bundle) then grows at its right edge,
instead of at a random leaf of a tree larger than the page cache. On a 150,000-resource SQLite store the
raw insert of the ingest benchmark's Bundles ran 2x faster with these ids (docs/performance.md, session 7).

What an id tells: the moment it was made, to the millisecond (the same as version 1's
``meta.lastUpdated``). It is not a secret and never an access token: 62 random bits keep ids from being
guessed in bulk, and every read is authorized on its own (docs/access-control.md).
"""

from __future__ import annotations

import os
import time

_SUBMILLI_STEPS = 4096
"""rand_a holds the fraction of the millisecond in 1/4096 steps (244 ns), RFC 9562 section 6.2 method 3."""

_last_stamp = 0
"""The last 60-bit (milliseconds, fraction) stamp handed out: a stamp never goes backwards in a process."""


def new_id() -> str:
    """A new server-assigned id: a version 7 UUID whose first 60 bits never decrease within the process.

    Two calls within one 244 ns step (or after the clock stepped back) take the last stamp plus one, so
    ids of one process are strictly increasing; threads racing here may share a stamp, which the 62
    random bits keep unique. ``os.urandom`` as in ``uuid.uuid4``, formatted directly (a transaction takes
    one id per created entry)."""
    global _last_stamp
    nanos = time.time_ns()
    stamp = (nanos // 1_000_000) * _SUBMILLI_STEPS + (nanos % 1_000_000) * _SUBMILLI_STEPS // 1_000_000
    if stamp <= _last_stamp:
        stamp = _last_stamp + 1
    _last_stamp = stamp
    millis, fraction = divmod(stamp, _SUBMILLI_STEPS)
    random = int.from_bytes(os.urandom(8), "big")
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76  # version 7
        | fraction << 64
        | 0b10 << 62  # variant 10xx (RFC 9562 section 4.1)
        | random & 0x3FFF_FFFF_FFFF_FFFF
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
