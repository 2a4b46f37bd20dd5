"""FHIR date/dateTime/instant values as closed ranges of microseconds since the Unix epoch (UTC).

Every FHIR date has an implicit precision; ``2024`` means the whole year
(https://hl7.org/fhir/R4/search.html#date). A value becomes ``(low, high)`` with ``high`` the last
microsecond of its precision. Values without a time zone are taken as UTC (the server's zone).
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
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

    Raises ``DateFormatError`` for anything else (including impossible dates like 2023-02-30).
    """
    match = _DATE_RE.match(text.strip())
    if not match:
        raise DateFormatError(f"not a FHIR date/dateTime: {text!r}")
    g = match.groupdict()
    try:
        year = int(g["y"])
        if g["m"] is None:
            start = datetime(year, 1, 1, tzinfo=UTC)
            end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else None
            return _span(start, end)
        month = int(g["m"])
        if g["d"] is None:
            start = datetime(year, month, 1, tzinfo=UTC)
            days = calendar.monthrange(year, month)[1]
            return _span(start, start + timedelta(days=days) if (year, month) != (9999, 12) else None)
        day = int(g["d"])
        tz = _zone(g["tz"])
        if g["H"] is None:
            start = datetime(year, month, day, tzinfo=UTC)
            return _span(start, start + timedelta(days=1) if (year, month, day) != (9999, 12, 31) else None)
        hour, minute = int(g["H"]), int(g["M"] or 0)
        if g["M"] is None:
            raise DateFormatError(f"a time needs minutes: {text!r}")
        if g["S"] is None:
            start = datetime(year, month, day, hour, minute, tzinfo=tz)
            return _span(start, start + timedelta(minutes=1))
        second = int(g["S"])
        frac = g["f"]
        if frac is None:
            start = datetime(year, month, day, hour, minute, second, tzinfo=tz)
            return _span(start, start + timedelta(seconds=1))
        micro = int((frac + "000000")[:6])
        start = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        digits = min(len(frac), 6)
        return _span(start, start + timedelta(microseconds=10 ** (6 - digits)))
    except (ValueError, OverflowError) as exc:
        raise DateFormatError(f"not a valid date: {text!r} ({exc})") from None


@lru_cache(maxsize=512)
def _zone(text: str | None) -> tzinfo:
    if text is None or text == "Z":
        return UTC
    sign = 1 if text[0] == "+" else -1
    hours, minutes = int(text[1:3]), int(text[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _span(start: datetime, end: datetime | None) -> tuple[int, int]:
    low = to_micros(start)
    high = to_micros(end) - 1 if end is not None else MAX_MICROS
    return low, high


def instant_now() -> tuple[str, int]:
    """The current instant as FHIR text (millisecond precision, UTC ``Z``) and as microseconds.

    The text is what ``meta.lastUpdated`` carries; the micros are stored exactly as the text says, so
    ``_lastUpdated`` searches agree with what the client reads.
    """
    micros = time.time_ns() // 1000
    micros -= micros % 1000
    second, fraction = divmod(micros, 1_000_000)
    return f"{_second_text(second)}.{fraction // 1000:03d}Z", micros


@lru_cache(maxsize=64)
def _second_text(second: int) -> str:
    """``YYYY-MM-DDThh:mm:ss`` of a whole second since the epoch, UTC (every write in a second shares it)."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def format_instant(moment: datetime) -> str:
    """FHIR instant text with millisecond precision in UTC (``2024-05-01T12:00:00.123Z``)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
