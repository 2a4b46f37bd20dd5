"""Last-Modified dates (RFC 7231 §7.1.1.1): the gateway's formatter agrees with the standard library's."""

from __future__ import annotations

import random
from email.utils import format_datetime

from gateway.fhir.request import http_date
from gateway.search.dates import from_micros


def test_http_date_equals_email_utils_over_random_instants() -> None:
    rng = random.Random(7)
    for micros in [0, 951_782_400_000_000, *(rng.randint(0, 4_102_444_800_000_000) for _ in range(20_000))]:
        assert http_date(micros) == format_datetime(from_micros(micros), usegmt=True)
