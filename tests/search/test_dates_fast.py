"""``parse_range`` computes with integers (``gateway/search/dates.py``); it must give exactly what the
``datetime``-based computation it replaced gives (kept here as the reference): the same ``(low, high)``
for every FHIR date, dateTime and instant, and a ``DateFormatError`` for exactly the same texts."""

from __future__ import annotations

import calendar
import random
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest

from gateway.search.dates import _DATE_RE, MAX_MICROS, DateFormatError, instant_text, parse_range, to_micros


def _reference(text: str) -> tuple[int, int]:
    """The computation with ``datetime`` objects (sessions 1-7)."""
    match = _DATE_RE.match(text.strip())
    if not match:
        raise DateFormatError(text)
    g = match.groupdict()

    def span(start: datetime, end: datetime | None) -> tuple[int, int]:
        return to_micros(start), (to_micros(end) - 1 if end is not None else MAX_MICROS)

    def zone(value: str | None) -> tzinfo:
        if value is None or value == "Z":
            return UTC
        sign = 1 if value[0] == "+" else -1
        return timezone(sign * timedelta(hours=int(value[1:3]), minutes=int(value[4:6])))

    try:
        year = int(g["y"])
        if g["m"] is None:
            return span(datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else None)
        month = int(g["m"])
        if g["d"] is None:
            start = datetime(year, month, 1, tzinfo=UTC)
            days = calendar.monthrange(year, month)[1]
            return span(start, start + timedelta(days=days) if (year, month) != (9999, 12) else None)
        day = int(g["d"])
        tz = zone(g["tz"])
        if g["H"] is None:
            start = datetime(year, month, day, tzinfo=UTC)
            return span(start, start + timedelta(days=1) if (year, month, day) != (9999, 12, 31) else None)
        if g["M"] is None:
            raise DateFormatError(text)
        hour, minute = int(g["H"]), int(g["M"])
        if g["S"] is None:
            start = datetime(year, month, day, hour, minute, tzinfo=tz)
            return span(start, start + timedelta(minutes=1))
        second, frac = int(g["S"]), g["f"]
        if frac is None:
            start = datetime(year, month, day, hour, minute, second, tzinfo=tz)
            return span(start, start + timedelta(seconds=1))
        start = datetime(year, month, day, hour, minute, second, int((frac + "000000")[:6]), tzinfo=tz)
        return span(start, start + timedelta(microseconds=10 ** (6 - min(len(frac), 6))))
    except (ValueError, OverflowError):
        raise DateFormatError(text) from None


def _outcome(parse: object, text: str) -> tuple[int, int] | str:
    try:
        return parse(text)  # type: ignore[operator, no-any-return]
    except DateFormatError:
        return "error"


EDGES = [
    "0000",
    "0001",
    "9999",
    "0001-01",
    "9999-12",
    "0000-01-01",
    "0001-01-01",
    "9999-12-31",
    "2024-02-29",
    "2023-02-29",
    "1900-02-29",
    "2000-02-29",
    "2024-04-31",
    "2024-13-01",
    "2024-00-10",
    "2024-01-00",
    "2024-01-32",
    "2024-06-15T24:00:00Z",
    "2024-06-15T23:60:00Z",
    "2024-06-15T23:59:60Z",
    "2024-06-15T23:59:59.999999999Z",
    "2024-06-15T10:00",
    "2024-06-15T10:00Z",
    "2024-06-15T10Z",
    "2024-06-15T10:00:00+23:59",
    "2024-06-15T10:00:00-23:59",
    "2024-06-15T10:00:00+24:00",
    "2024-06-15T10:00:00+05:99",
    "2024-06-15T10:00:00-00:00",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:58Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59.99999Z",
    "9999-12-31T23:59Z",
    "9999-12-31T23:58Z",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00-14:00",
    " 2024-06-15 ",
    "2024-6-15",
    "24-06-15",
    "2024-06-15T10:00:00.Z",
    "2024-06-15T10:00:00.1",
    "2024-06-15T10:00:00,5Z",
    "",
    "abcd",
    "2024-06-15T10:00:00+0500",
]


@pytest.mark.parametrize("text", EDGES)
def test_the_edges_parse_as_before(text: str) -> None:
    assert _outcome(parse_range, text) == _outcome(_reference, text)


def test_random_texts_parse_as_before() -> None:
    rng = random.Random(20261124)
    for _ in range(20_000):
        parts = [f"{rng.choice([rng.randint(0, 9999), rng.randint(1900, 2100)]):04d}"]
        if rng.random() < 0.9:
            parts.append(f"-{rng.randint(0, 13):02d}")
            if rng.random() < 0.9:
                parts.append(f"-{rng.randint(0, 32):02d}")
                if rng.random() < 0.7:
                    parts.append(f"T{rng.randint(0, 24):02d}")
                    if rng.random() < 0.95:
                        parts.append(f":{rng.randint(0, 60):02d}")
                        if rng.random() < 0.8:
                            parts.append(f":{rng.randint(0, 60):02d}")
                            if rng.random() < 0.6:
                                parts.append("." + "".join(str(rng.randint(0, 9)) for _ in range(rng.randint(1, 9))))
                    zone = rng.random()
                    if zone < 0.4:
                        parts.append("Z")
                    elif zone < 0.8:
                        parts.append(f"{rng.choice('+-')}{rng.randint(0, 25):02d}:{rng.randint(0, 99):02d}")
        text = "".join(parts)
        assert _outcome(parse_range, text) == _outcome(_reference, text), text


def test_instant_text_is_the_datetime_formatting() -> None:
    """``instant_text`` (each Bundle entry's ``lastModified``) against ``datetime.strftime``, from the epoch
    to 9999, at millisecond edges and at random, and round-tripping through ``parse_range``."""
    rng = random.Random(20261124)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    samples = [
        0,
        999,
        1000,
        999_999,
        1_000_000,
        1_732_406_400_123_456,
        to_micros(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ]
    samples += [rng.randrange(0, to_micros(datetime(9999, 12, 31, tzinfo=UTC))) for _ in range(5000)]
    for micros in samples:
        moment = epoch + timedelta(microseconds=micros)
        expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        assert instant_text(micros) == expected, micros
        assert parse_range(expected)[0] == micros - micros % 1000
