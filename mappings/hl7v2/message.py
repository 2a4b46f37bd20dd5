"""Parse a decoded v2 message with hl7apy into a small read-only view the mappings read fields from.

hl7apy (https://crs4.github.io/hl7apy/) parses against the HL7 reference of the message's version
(MSH-12), which rejects unknown versions and unknown segment names; the view below then gives plain
strings by position (segment, field, repetition, component, subcomponent, all 1-based as in ERL), with
escape sequences resolved. Segment order and required fields are checked by the message profiles
(``mappings.hl7v2.profiles``), since hl7apy's tolerant mode accepts segments in any order.

hl7apy errors are translated here, in one place (DESIGN.md choice 6): an unsupported version is an AR
(0357 code 203), anything else it refuses is an AE with the location of the offending segment.

Cost (docs/hl7v2.md "Throughput"): hl7apy's look-ups of its HL7 reference are memoized
(``mappings.hl7v2.hl7apy_cache``, installed on import), and segments the message's profile does not read
(``profiles.READ_SEGMENTS``) are handed to hl7apy by name only, and fields hl7apy already accepted in the
same MSH context are not handed to it again (``mappings.hl7v2.verdicts``: its verdict on a field does not
depend on the other fields, nor on a value of a base datatype at a position where it accepted one); a
message of a context and segment names hl7apy accepted before is parsed by its segments alone
(``_parse_settled``: the ``Message`` of that context is not built again), and not at all when nothing is
left of it but its context (``verdicts.judged``: hl7apy judged every part of it before). In tolerant
mode hl7apy refuses a
non-MSH segment for its name only, never for the content of its fields (a field, component or value it
cannot type becomes an unknown or ST element), so its verdict on such a segment is the same; the fields
of every segment a mapping reads go through hl7apy's full parse (tests/hl7v2/test_hl7apy_cache.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException, InvalidName, UnsupportedVersion
from hl7apy.parser import get_message_info, parse_message, parse_segments

from mappings.hl7v2 import hl7apy_cache, verdicts
from mappings.hl7v2.er7 import SEGMENT_NAME, Delimiters, Header, split_segments, unescape
from mappings.hl7v2.errors import (
    DATA_TYPE_ERROR,
    SEGMENT_SEQUENCE,
    UNSUPPORTED_VERSION,
    Location,
    content_error,
    reject,
)

hl7apy_cache.install()

Repetition = tuple[tuple[str, ...], ...]
"""One field repetition: components, each a tuple of subcomponents (unescaped text)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment: its name, its sequence among segments of that name (1-based) and its fields.

    ``fields[n]`` is field n (for MSH, as numbered in the standard: MSH-1 is the field separator)."""

    name: str
    sequence: int
    fields: tuple[tuple[Repetition, ...], ...]

    def reps(self, field: int) -> tuple[Repetition, ...]:
        """The repetitions of a field (empty when absent)."""
        return self.fields[field] if 0 < field < len(self.fields) else ()

    def get(self, field: int, component: int = 1, subcomponent: int = 1, repetition: int = 1) -> str:
        """The text at a position ("" when absent)."""
        reps = self.reps(field)
        if repetition > len(reps):
            return ""
        components = reps[repetition - 1]
        if component > len(components):
            return ""
        subs = components[component - 1]
        return subs[subcomponent - 1] if subcomponent <= len(subs) else ""

    def where(self, field: int = 0, component: int = 0, repetition: int = 0) -> Location:
        """The ERL of a position in this segment."""
        return Location(self.name, self.sequence, field, repetition, component)


@dataclass(frozen=True, slots=True)
class V2Message:
    """A parsed message: its MSH header and its segments in order."""

    header: Header
    segments: tuple[Segment, ...]

    def all(self, name: str) -> list[Segment]:
        """Every segment called ``name``, in order."""
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        """The first segment called ``name``."""
        return next((s for s in self.segments if s.name == name), None)

    @property
    def names(self) -> list[str]:
        """The segment names in order."""
        return [s.name for s in self.segments]


def parse(text: str, header: Header, *, read: Collection[str] | None = None) -> V2Message:
    """Parse ``text`` (decoded with MSH-18) with hl7apy; ``V2Error`` (AR or AE) when it cannot be read.
    ``read``: the segments the message's profile reads (``profiles.READ_SEGMENTS``); None: every one."""
    lines = split_segments(text)
    counts: dict[str, int] = {}
    for line in lines:
        name = line[:3]
        counts[name] = counts.get(name, 0) + 1
        separator_ok = len(line) == 3 or (len(line) > 3 and line[3] == header.delimiters.field)
        if not SEGMENT_NAME.match(name) or not separator_ok:
            where = Location(name, counts[name]) if SEGMENT_NAME.match(name) else None
            position = lines.index(line) + 1
            raise content_error(SEGMENT_SEQUENCE, f"segment {position} is malformed (not NNN|...)", where)
    parse_with_hl7apy(lines, header, read=read)
    return V2Message(header, tuple(_segments(lines, header.delimiters)))


def parse_with_hl7apy(lines: list[str], header: Header, *, read: Collection[str] | None = None) -> None:
    """The hl7apy parse of a message's segments (``split_segments``); ``V2Error`` when hl7apy refuses it.
    Segments not in ``read`` (when given) are parsed by name only (module docstring); MSH always in full.
    bench/hl7v2.py measures this same call as the parse limit."""
    # Z-segments are site-defined (§2.8): hl7apy cannot know them; they are ignored by every profile.
    standard = [
        line if read is None or line[:3] in read or line[:3] == "MSH" else line[:3]
        for line in lines
        if not line.startswith("Z")
    ]
    # Fields hl7apy already accepted in the same MSH context are not parsed again (``verdicts``).
    context = verdicts.context_of(standard[0]) if standard else None
    handed = verdicts.hand(context, standard) if context is not None else standard
    try:
        if context is not None and verdicts.settled(context, handed):
            if not verdicts.judged(context, handed):  # else hl7apy judged all of it in its context before
                _parse_settled(handed, context)
        else:
            parse_message("\r".join(handed), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
    except UnsupportedVersion:
        raise reject(
            UNSUPPORTED_VERSION, "MSH-12 names a version hl7apy does not know", Location("MSH", 1, 12)
        ) from None
    except InvalidName as exc:
        name = str(exc).rsplit(" ", 1)[-1][:3]
        sequence = sum(1 for line in lines if line[:3] == name) or 1
        text = f"{name} is not a segment of HL7 v{header.version}"
        raise content_error(SEGMENT_SEQUENCE, text, Location(name, sequence)) from None
    except HL7apyException as exc:
        # hl7apy names the element it refused (class and name), never a value: safe to echo.
        raise content_error(DATA_TYPE_ERROR, f"hl7apy: {type(exc).__name__}: {str(exc)[:120]}") from None
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise content_error(DATA_TYPE_ERROR, f"the message cannot be parsed ({type(exc).__name__})") from None
    if context is not None:
        verdicts.remember(context, standard)


def _parse_settled(handed: list[str], context: verdicts.Context) -> None:
    """The segments of a message of a settled context (``verdicts.settled``), as ``parse_message`` parses
    them: hl7apy's ``parse_segments`` with the version and encoding characters hl7apy reads from the MSH,
    tolerant, without groups; the ``Message`` of the context, which hl7apy accepted before, not built."""
    encoding_chars, _, version = get_message_info("\r".join(handed))
    segments = [verdicts.bare(handed[0], context), *handed[1:]]
    parse_segments("\r".join(segments), version, encoding_chars, VALIDATION_LEVEL.TOLERANT, None, False)


def _segments(lines: list[str], d: Delimiters) -> list[Segment]:
    out: list[Segment] = []
    counts: dict[str, int] = {}
    for line in lines:
        name = line[:3]
        counts[name] = counts.get(name, 0) + 1
        raw_fields = line.split(d.field)
        if name == "MSH":
            # MSH-1 is the separator and MSH-2 the encoding characters: neither is split.
            raw_fields = ["MSH", d.field, *raw_fields[1:]]
            fields: list[tuple[Repetition, ...]] = [(), (((d.field,),),), (((raw_fields[2],),),)]
            fields += [_field(f, d) for f in raw_fields[3:]]
        else:
            fields = [(), *(_field(f, d) for f in raw_fields[1:])]
        out.append(Segment(name, counts[name], tuple(fields)))
    return out


def _field(text: str, d: Delimiters) -> tuple[Repetition, ...]:
    if not text:
        return ()
    plain = d.repetition not in text and d.component not in text and d.subcomponent not in text
    if plain and d.escape not in text:  # one value, nothing to resolve (most fields): what the splits give
        return (((text,),),)
    return tuple(
        tuple(tuple(unescape(sub, d) for sub in comp.split(d.subcomponent)) for comp in rep.split(d.component))
        for rep in text.split(d.repetition)
    )
