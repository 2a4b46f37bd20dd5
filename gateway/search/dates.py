"""FHIR date/dateTime/instant values as closed ranges of microseconds since the Unix epoch (UTC).

Every FHIR date has an implicit precision; ``2024`` means the whole year
(https://hl7.org/fhir/R4/search.html#date). A value becomes ``(low, high)`` with ``high`` the last
microsecond of its precision. Values without a time zone are taken as UTC (the server's zone).
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_MICROS = -62135596800_000000  # 0001-01-01T00:00:00Z
MAX_MICROS = 253402300799_999999  # 9999-12-31T23:59:59.999999Z

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class DateFormatError(ValueError):
    """The text is not a FHIR date, dateTime or instant."""


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime of ``micros``."""
    return EPOCH + timedelta(microseconds=micros)


def parse_range(text: str) -> tuple[int, int]:
    """``(low, high)`` microseconds covered by a FHIR date/dateTime/instant ``text``.

    Raises ``DateFormatError`` for anything else (including impossible dates like 2023-02-30, and a time
    whose precision would end past year 9999 in its own zone, as Python's ``datetime`` would). Plain
    integer arithmetic on the proleptic Gregorian calendar (``_days``), a few times faster than building
    ``datetime`` objects, with the same answers (tests/search/test_dates_fast.py compares them).
    """
    return _day_range(text) if len(text) == 10 else _parse_range(text)


@lru_cache(maxsize=4096)
def _day_range(text: str) -> tuple[int, int]:
    """``_parse_range`` of a ten-character text (``YYYY-MM-DD``), remembered: there are few days, and many
    writes name the same ones (an HN file's service dates, the first of a month)."""
    return _parse_range(text)


def _parse_range(text: str) -> tuple[int, int]:
    stripped = text.strip()
    match = _DATE_RE.match(stripped)
    if not match:
        raise DateFormatError(f"not a FHIR date/dateTime: {text!r}")
    y, m, d, hour_text, minute_text, second_text, frac, zone = match.groups()
    year = int(y)
    if year < 1:
        raise DateFormatError(f"not a valid date: {text!r} (year 0 is out of range)")
    if m is None:
        return _DAY * _days(year, 1, 1), (_DAY * _days(year + 1, 1, 1) - 1 if year < 9999 else MAX_MICROS)
    month = int(m)
    if not 1 <= month <= 12:
        raise DateFormatError(f"not a valid date: {text!r} (month must be in 1..12)")
    if d is None:
        last = (year, month) == (9999, 12)
        following = _DAY * _days(year + month // 12, month % 12 + 1, 1) - 1 if not last else MAX_MICROS
        return _DAY * _days(year, month, 1), following
    if hour_text is None:
        return _day(text, year, month, int(d))
    midnight = _midnight(stripped[:10])  # the pattern matched: stripped starts with YYYY-MM-DD
    if midnight is None:
        raise DateFormatError(f"not a valid date: {text!r} (day is out of range for month)")
    if zone is None or zone == "Z":
        offset = 0
    else:
        minutes = int(zone[1:3]) * 60 + int(zone[4:6])
        if minutes >= 24 * 60:
            raise DateFormatError(f"not a valid date: {text!r} (offset must be less than a day)")
        offset = (minutes if zone[0] == "+" else -minutes) * 60_000_000
    if minute_text is None:
        raise DateFormatError(f"a time needs minutes: {text!r}")
    hour, minute = int(hour_text), int(minute_text)
    second = int(second_text) if second_text is not None else 0
    if hour > 23 or minute > 59 or second > 59:
        raise DateFormatError(f"not a valid date: {text!r} (time out of range)")
    local = midnight + ((hour * 60 + minute) * 60 + second) * 1_000_000
    if second_text is None:
        span = 60_000_000
    elif frac is None:
        span = 1_000_000
    else:
        local += int((frac + "000000")[:6])
        span = 10 ** (6 - min(len(frac), 6))
    if local + span >= _LOCAL_END:
        raise DateFormatError(f"not a valid date: {text!r} (date value out of range)")
    return local - offset, local - offset + span - 1


@lru_cache(maxsize=1024)
def _midnight(day_text: str) -> int | None:
    """The first microsecond of ``YYYY-MM-DD`` (year and month already checked), None if the month has no
    such day; remembered, as the writes of a day share it."""
    try:
        return _day(day_text, int(day_text[:4]), int(day_text[5:7]), int(day_text[8:10]))[0]
    except DateFormatError:
        return None


def _day(text: str, year: int, month: int, day: int) -> tuple[int, int]:
    """The range of the valid day ``year-month-day`` (``text`` for the error)."""
    if not 1 <= day <= (_MONTH_DAYS[month] if month != 2 or not calendar.isleap(year) else 29):
        raise DateFormatError(f"not a valid date: {text!r} (day is out of range for month)")
    midnight = _DAY * _days(year, month, day)
    return midnight, (midnight + _DAY - 1 if (year, month, day) != (9999, 12, 31) else MAX_MICROS)


_DAY = 86_400_000_000
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
"""Days of each month (1-12) in a common year; February of a leap year has 29."""
_LOCAL_END = 253402300800_000000
"""10000-01-01T00:00:00 as local microseconds: a span reaching it overflows ``datetime``."""


def _days(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant, "chrono-Compatible Low-Level Date
    Algorithms", ``days_from_civil``)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146097 + year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year - 719468


def instant_now() -> tuple[str, int]:
    """The current instant as FHIR text (millisecond precision, UTC ``Z``) and as microseconds.

    The text is what ``meta.lastUpdated`` carries; the micros are stored exactly as the text says, so
    ``_lastUpdated`` searches agree with what the client reads.
    """
    micros = time.time_ns() // 1000
    micros -= micros % 1000
    return instant_text(micros), micros


def instant_text(micros: int) -> str:
    """FHIR instant text, millisecond precision, UTC, of ``micros`` since the epoch
    (``2024-05-01T12:00:00.123Z``), without a datetime: a transaction's response gives every entry its
    ``lastModified`` (http.html#transaction-response)."""
    second, fraction = divmod(micros, 1_000_000)
    return f"{_second_text(second)}.{fraction // 1000:03d}Z"


@lru_cache(maxsize=64)
def _second_text(second: int) -> str:
    """``YYYY-MM-DDThh:mm:ss`` of a whole second since the epoch, UTC (every write in a second shares it)."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
