"""Typed search values: escaping, prefixes and the value syntax of each parameter type.

Implements https://hl7.org/fhir/R4/search.html#escaping (``\\,`` ``\\|`` ``\\$`` ``\\\\``),
https://hl7.org/fhir/R4/search.html#prefix and the value forms of
https://hl7.org/fhir/R4/search.html#ptypes. Every failure is a ``BadRequest`` naming the parameter.

Dates become a ``RangeValue``: the closed interval the search value stands for (``2024-05`` is the
whole month, https://hl7.org/fhir/R4/search.html#date) and its prefix, compared with the interval
stored for the resource. ``ap`` widens it by 10% of the distance between the value and now, and at
least one day (the amount is the server's choice).

Numbers and quantities become a ``NumberValue``: the interval the resource's value must fall in.
https://hl7.org/fhir/R4/search.html#number gives ``eq``/``ne`` the implicit precision of the search
value (``100`` is [99.5, 100.5]) and makes the other prefixes exact (``gt100`` is above exactly 100);
``ap`` is within 10% of the value. The store keeps a resource's number as the interval of its own
precision, so its value is the midpoint of that interval; values within one part in 10^12 of the
search value count as equal to it, so float rounding never flips a boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from gateway.errors import BadRequest
from gateway.search.dates import DateFormatError, parse_range, to_micros
from gateway.search.fhirpath import split_reference
from gateway.search.normalize import fold

_HISTORY = re.compile(r"/_history/[^/]*$")
PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
DAY_MICROS = 86_400_000_000
_RELATIVE_TOLERANCE = Decimal("1e-12")
_TINY = 1e-300  # keeps gt/lt strict at zero, where the relative tolerance vanishes
_ESCAPABLE = ",|$\\"


@dataclass(frozen=True, slots=True)
class TokenValue:
    """``code``, ``system|code``, ``|code`` or ``system|`` (https://hl7.org/fhir/R4/search.html#token).

    ``system`` None matches any system, ``""`` matches values without a system; ``code`` None matches
    any code of ``system``.
    """

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class TextValue:
    """A string to compare: folded (case/accent-insensitive) unless the modifier asks for exactness."""

    text: str


@dataclass(frozen=True, slots=True)
class RangeValue:
    """A date as the closed interval ``[low, high]`` (microseconds) with its prefix."""

    prefix: str
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class NumberValue:
    """A number test: the resource's value lies in ``[low, high]`` (outside it when ``negated``)."""

    low: float
    high: float
    negated: bool = False


@dataclass(frozen=True, slots=True)
class QuantityValue:
    """``[prefix]number|system|code`` (https://hl7.org/fhir/R4/search.html#quantity).

    ``code`` None matches any unit; with ``system`` None the code matches either the coded unit or the
    human-readable unit (the ``number||code`` form).
    """

    amount: NumberValue
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """A reference (https://hl7.org/fhir/R4/search.html#reference): a resource of this server
    (``id``, with its ``type`` when known) or an absolute/canonical ``url`` elsewhere.

    ``base`` is this server's base: stored absolute references on it point at local resources too.
    """

    type: str | None
    id: str | None
    url: str | None
    base: str = ""


@dataclass(frozen=True, slots=True)
class MissingValue:
    """``:missing=true|false`` (https://hl7.org/fhir/R4/search.html#missing)."""

    missing: bool


Value = TokenValue | TextValue | RangeValue | NumberValue | QuantityValue | ReferenceValue | MissingValue


def split_unescaped(text: str, separator: str) -> list[str]:
    """Split ``text`` at each ``separator`` not preceded by an escaping backslash; escapes are kept."""
    if "\\" not in text:
        return text.split(separator)  # nothing escaped: the common case, without the loop per character
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            current.append(ch)
            current.append(next(chars, ""))
        elif ch == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    """Drop the backslash of ``\\,`` ``\\|`` ``\\$`` ``\\\\``; any other backslash is literal."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPABLE:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def split_prefix(text: str) -> tuple[str, str]:
    """The prefix (``eq`` when absent) and the rest of a date/number/quantity value."""
    head = text[:2]
    if head in PREFIXES:
        return head, text[2:]
    return "eq", text


def parse_missing(name: str, text: str) -> MissingValue:
    """The boolean of ``name:missing``."""
    if text not in ("true", "false"):
        raise BadRequest(f"Parameter '{name}': :missing takes true or false, not '{text}'")
    return MissingValue(text == "true")


def parse_token(text: str) -> TokenValue:
    """``code`` | ``system|code`` | ``|code`` | ``system|`` (escaped ``|`` stays in the code)."""
    parts = split_unescaped(text, "|")
    if len(parts) == 1:
        return TokenValue(None, unescape(parts[0]))
    system = unescape(parts[0])
    code = unescape("|".join(parts[1:]))
    return TokenValue(system, code or None)


def parse_string(text: str) -> TextValue:
    """A string searched case- and accent-insensitively."""
    return TextValue(fold(unescape(text)))


def parse_date(name: str, text: str, *, now_micros: int | None = None) -> RangeValue:
    """``[prefix]date`` as a range of microseconds (https://hl7.org/fhir/R4/search.html#date)."""
    prefix, rest = split_prefix(unescape(text))
    try:
        low, high = parse_range(rest)
    except DateFormatError:
        raise BadRequest(f"Parameter '{name}': '{text}' is not a valid date (yyyy-mm-ddThh:mm:ss[Z|+hh:mm])") from None
    if prefix == "ap":
        now = now_micros if now_micros is not None else to_micros(datetime.now(UTC))
        margin = max(DAY_MICROS, abs(now - low) // 10)
        low, high = low - margin, high + margin
    return RangeValue(prefix, low, high)


def parse_number(name: str, text: str) -> NumberValue:
    """``[prefix]number`` (https://hl7.org/fhir/R4/search.html#number)."""
    prefix, rest = split_prefix(unescape(text))
    try:
        number = Decimal(rest)
    except InvalidOperation:
        raise BadRequest(f"Parameter '{name}': '{text}' is not a number") from None
    if not number.is_finite():
        raise BadRequest(f"Parameter '{name}': '{text}' is not a finite number")
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)  # finite numbers have an int exponent
    half = Decimal(5).scaleb(exponent - 1)
    tolerance = abs(number) * _RELATIVE_TOLERANCE
    inf = float("inf")
    if prefix in ("eq", "ne"):
        low, high = float(number - half - tolerance), float(number + half + tolerance)
        return NumberValue(low, high, negated=prefix == "ne")
    if prefix == "ap":
        margin = max(abs(number) / 10, half)
        return NumberValue(float(number - margin), float(number + margin))
    if prefix in ("gt", "sa"):
        return NumberValue(float(number + tolerance) + _TINY, inf)
    if prefix in ("lt", "eb"):
        return NumberValue(-inf, float(number - tolerance) - _TINY)
    if prefix == "ge":
        return NumberValue(float(number - tolerance), inf)
    return NumberValue(-inf, float(number + tolerance))  # le


def parse_quantity(name: str, text: str) -> QuantityValue:
    """``[prefix]number|system|code``, ``[prefix]number||code`` or ``[prefix]number``."""
    parts = split_unescaped(text, "|")
    if len(parts) not in (1, 3):
        raise BadRequest(f"Parameter '{name}': quantity '{text}' must be number, number|system|code or number||code")
    amount = parse_number(name, parts[0])
    if len(parts) == 1:
        return QuantityValue(amount, None, None)
    system, code = unescape(parts[1]), unescape(parts[2])
    return QuantityValue(amount, system or None, code or None)


def parse_reference(name: str, text: str, *, base_url: str, target: str | None) -> ReferenceValue:
    """``id``, ``Type/id``, ``Type/id/_history/v``, ``[our base]/Type/id``, or any other absolute or
    canonical url (``|version`` dropped: versions of canonicals are not indexed)."""
    value = unescape(text)
    if not value:
        raise BadRequest(f"Parameter '{name}': empty reference")
    base = base_url.rstrip("/")
    parts = split_reference(value)
    if parts is not None:
        res_type, res_id, absolute = parts
        if absolute and not value.startswith(base + "/"):
            return ReferenceValue(None, None, _HISTORY.sub("", value), base)
        if target is not None and target != res_type:
            raise BadRequest(f"Parameter '{name}': '{value}' does not point to a {target}")
        return ReferenceValue(res_type, res_id, None, base)
    if ":" in value:
        return ReferenceValue(None, None, value.split("|", 1)[0], base)
    if "/" in value:
        raise BadRequest(f"Parameter '{name}': '{value}' is not an id, Type/id or an absolute url")
    return ReferenceValue(target, value, None, base)
