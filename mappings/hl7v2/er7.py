"""ER7 (pipe-and-hat) text: encoding characters, escapes, segments, and the MSH read before full parsing.

HL7 v2.5.1 chapter 2 §2.5 (message construction rules) and §2.7 (escape sequences). This module is the
only place that splits raw text; ``mappings.hl7v2.message`` parses with hl7apy and uses it to expose the
fields, and the ACK/RRI builders use ``escape`` and ``join`` to write them.

The MSH is read here on its own (``read_header``) because the answer to a message depends on it before
anything else can be trusted: the charset to decode with (MSH-18), who to answer (MSH-3/4), the control
id to echo (MSH-10), and whether the sender wants enhanced acknowledgements (MSH-15/16). Every charset
the gateway accepts is a superset of ASCII, so the MSH segment can be read from the raw bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

SEGMENT_END = "\r"
DEFAULT_ENCODING = "^~\\&"
SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")


@dataclass(frozen=True, slots=True)
class Delimiters:
    """MSH-1 and MSH-2: field, component, repetition, escape, subcomponent separators."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def msh2(self) -> str:
        """The encoding characters as written in MSH-2."""
        return f"{self.component}{self.repetition}{self.escape}{self.subcomponent}"

    def __reduce__(self) -> tuple[type[Delimiters], tuple[str, ...]]:
        """Pickled as its constructor call (``Header.__reduce__``)."""
        return Delimiters, _DELIMITER_FIELDS(self)


_DELIMITER_FIELDS = attrgetter("field", "component", "repetition", "escape", "subcomponent")


STANDARD = Delimiters()


class HeaderError(ValueError):
    """The MSH cannot be read: the message is rejected (AR) without further parsing."""

    def __init__(self, text: str, field: int = 0) -> None:
        super().__init__(text)
        self.text = text
        self.field = field


@dataclass(frozen=True, slots=True)
class Header:
    """The MSH fields the transport and the acknowledgement need (HL7 v2.5.1 §2.14.9)."""

    delimiters: Delimiters
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str  # MSH-9.1
    trigger_event: str  # MSH-9.2
    structure: str  # MSH-9.3
    control_id: str  # MSH-10
    processing_id: str  # MSH-11.1
    version: str  # MSH-12.1
    accept_ack_type: str  # MSH-15 (table 0155), "" when absent
    application_ack_type: str  # MSH-16 (table 0155), "" when absent
    charset: str  # MSH-18 first repetition, "" when absent
    charset_repeats: bool  # MSH-18 named more than one character set

    @property
    def sender(self) -> str:
        """The sender's key in the message log: MSH-3 and MSH-4, first components."""
        return f"{self.sending_application}|{self.sending_facility}"

    @property
    def enhanced(self) -> bool:
        """Enhanced acknowledgement mode: the sender filled MSH-15 or MSH-16 (HL7 v2.5.1 §2.9.3)."""
        return bool(self.accept_ack_type or self.application_ack_type)

    def __reduce__(self) -> tuple[type[Header], tuple[Any, ...]]:
        """Pickled as its constructor call: every prepared message carries its header from the parse worker
        to the listener (adapters/hl7v2/parsepool.py), and the ``__setstate__`` of a slotted dataclass
        (``dataclasses.fields`` and one ``object.__setattr__`` per field, in Python) is slower."""
        return Header, _HEADER_FIELDS(self)


_HEADER_FIELDS = attrgetter(*(name for name in Header.__dataclass_fields__))


def read_header(raw: bytes) -> Header:
    """The MSH of a raw message (bytes), without decoding the rest; ``HeaderError`` when unusable."""
    head = raw.lstrip(b"\r\n")
    end = len(head)
    for terminator in (b"\r", b"\n"):
        found = head.find(terminator)
        if found != -1:
            end = min(end, found)
    line = head[:end].decode("latin-1")
    if not line.startswith("MSH") or len(line) < 8:
        raise HeaderError("the message does not start with an MSH segment")
    field_sep = line[3]
    if field_sep.isalnum() or field_sep in " \r\n":
        raise HeaderError("MSH-1 (field separator) is not a separator character", 1)
    encoding = line[4:].split(field_sep, 1)[0]
    if len(encoding) < 4 or len(set(encoding[:4]) | {field_sep}) != 5:
        raise HeaderError("MSH-2 (encoding characters) must name four distinct separators", 2)
    delimiters = Delimiters(field_sep, encoding[0], encoding[1], encoding[2], encoding[3])
    # fields[n] is MSH-n: MSH-1 is the separator itself, MSH-2 the encoding characters.
    fields = ["MSH", field_sep, *line[4:].split(field_sep)]

    def field(n: int) -> str:
        return fields[n] if n < len(fields) else ""

    def first(n: int, component: int = 1) -> str:
        value = field(n).split(delimiters.repetition)[0]
        parts = value.split(delimiters.component)
        return unescape(parts[component - 1], delimiters) if component <= len(parts) else ""

    charsets = [c for c in field(18).split(delimiters.repetition) if c]
    return Header(
        delimiters=delimiters,
        sending_application=first(3),
        sending_facility=first(4),
        receiving_application=first(5),
        receiving_facility=first(6),
        message_type=first(9, 1),
        trigger_event=first(9, 2),
        structure=first(9, 3),
        control_id=first(10),
        processing_id=first(11),
        version=first(12),
        accept_ack_type=first(15),
        application_ack_type=first(16),
        charset=charsets[0] if charsets else "",
        charset_repeats=len(charsets) > 1,
    )


def split_segments(text: str) -> list[str]:
    """The segments of a message: CR is the terminator; LF and CRLF are tolerated, empty lines dropped."""
    return [line for line in re.split(r"\r\n|\r|\n", text) if line]


_ESCAPES = {"F": "field", "S": "component", "T": "subcomponent", "R": "repetition", "E": "escape"}


def unescape(value: str, delimiters: Delimiters = STANDARD) -> str:
    """Resolve the escape sequences of §2.7: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ and \\Xhh..\\ (hex bytes, read
    as latin-1); formatting escapes (\\H\\, \\N\\, \\.br\\ ...) become nothing, or a newline for .br."""
    esc = delimiters.escape
    if esc not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        end = value.find(esc, i + 1) if char == esc else -1
        if end == -1:
            out.append(char)
            i += 1
            continue
        sequence = value[i + 1 : end]
        if sequence in _ESCAPES:
            out.append(getattr(delimiters, _ESCAPES[sequence]))
        elif sequence.startswith("X") and len(sequence) % 2 == 1:
            try:
                out.append(bytes.fromhex(sequence[1:]).decode("latin-1"))
            except ValueError:
                out.append(value[i : end + 1])
        elif sequence in (".br", "N"):
            out.append("\n" if sequence == ".br" else "")
        elif not sequence:
            out.append(esc + esc)
        # other formatting escapes carry no text
        i = end + 1
    return "".join(out)


def escape(value: str, delimiters: Delimiters = STANDARD) -> str:
    """Escape the separators in a text value (§2.7); CR/LF become \\.br\\ so they cannot end a segment."""
    d = delimiters
    if (  # most values hold none of these (~40 per ACK): no replacement to build or run
        d.escape not in value
        and d.field not in value
        and d.component not in value
        and d.subcomponent not in value
        and d.repetition not in value
        and "\r" not in value
        and "\n" not in value
    ):
        return value
    replacements = (
        (d.escape, f"{d.escape}E{d.escape}"),
        (d.field, f"{d.escape}F{d.escape}"),
        (d.component, f"{d.escape}S{d.escape}"),
        (d.subcomponent, f"{d.escape}T{d.escape}"),
        (d.repetition, f"{d.escape}R{d.escape}"),
    )
    for plain, escaped in replacements:
        value = value.replace(plain, escaped)
    return value.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{d.escape}.br{d.escape}")


Component = str | tuple[str, ...]
"""A component: text, or its subcomponents."""
Field = str | tuple[Component, ...] | list["Field"]
"""A field: text, its components, or a list of repetitions."""


def render_field(value: Field, d: Delimiters = STANDARD) -> str:
    """One field in ER7: repetitions (list) of components (tuple) of subcomponents (tuple); text is escaped."""
    if isinstance(value, list):
        return d.repetition.join(render_field(rep, d) for rep in value)
    if isinstance(value, tuple):
        return d.component.join(
            d.subcomponent.join(escape(s, d) for s in comp) if isinstance(comp, tuple) else escape(comp, d)
            for comp in value
        ).rstrip(d.component)
    return escape(value, d)


def segment(name: str, *fields: Field, d: Delimiters = STANDARD) -> str:
    """A segment in ER7 (trailing empty fields dropped). For MSH, ``fields`` start at MSH-3."""
    rendered = [render_field(f, d) for f in fields]
    while rendered and not rendered[-1]:
        rendered.pop()
    if name == "MSH":
        return d.field.join(["MSH", d.msh2, *rendered])
    return d.field.join([name, *rendered])


def message(segments: list[str]) -> str:
    """Segments joined into a message (each ended by CR)."""
    return "".join(s + SEGMENT_END for s in segments)
