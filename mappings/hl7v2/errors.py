"""The v2 error currency: what goes wrong with a message, where, and how the ACK says it.

HL7 v2.5.1 §2.14.5 (ERR segment): ERR-2 error location (ERL: segment id, segment sequence, field
position, field repetition, component, subcomponent), ERR-3 HL7 error code (table 0357), ERR-4 severity
(table 0516). The acknowledgement code follows §2.9.2 (original mode):

- ``AR`` (reject) for what the receiving application cannot take at all: a bad MSH, an unsupported
  message type, event, processing id, version or character set (0357 codes 200-203);
- ``AE`` (error) for content errors: a missing required field (101), a wrong data type (102), a value
  not in its table (103), segments out of order (100), a duplicate key (205), a business rule of the
  workflow (207 with the reason).

Every ``V2Error`` is safe to put in an ACK: its text names fields and rules, never values from the
message (no PHI in ACKs that end up in logs of either side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter

SEGMENT_SEQUENCE = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT = "201"
UNSUPPORTED_PROCESSING_ID = "202"
UNSUPPORTED_VERSION = "203"
UNKNOWN_KEY = "204"
DUPLICATE_KEY = "205"
RECORD_LOCKED = "206"
INTERNAL_ERROR = "207"

TABLE_0357 = {
    "0": "Message accepted",
    SEGMENT_SEQUENCE: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT: "Unsupported event code",
    UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    UNSUPPORTED_VERSION: "Unsupported version id",
    UNKNOWN_KEY: "Unknown key identifier",
    DUPLICATE_KEY: "Duplicate key identifier",
    RECORD_LOCKED: "Application record locked",
    INTERNAL_ERROR: "Application internal error",
}
"""HL7 table 0357 (message error condition codes) as used in ERR-3."""


@dataclass(frozen=True, slots=True)
class Location:
    """ERR-2 (ERL): where in the message; 0 means not applicable."""

    segment: str
    sequence: int = 1
    field: int = 0
    repetition: int = 0
    component: int = 0
    subcomponent: int = 0

    def parts(self) -> tuple[str, ...]:
        """The ERL components as text (trailing zeros dropped)."""
        values = [self.segment, str(self.sequence)]
        for value in (self.field, self.repetition, self.component, self.subcomponent):
            values.append(str(value) if value else "")
        while values and not values[-1]:
            values.pop()
        return tuple(values)

    def __str__(self) -> str:
        return "^".join(self.parts())

    def __reduce__(self) -> tuple[type[Location], tuple[str, int, int, int, int, int]]:
        """Pickled as its constructor call: a prepared message carries ~16 locations from the parse worker to
        the listener, and the ``__setstate__`` of a slotted dataclass (``dataclasses.fields`` and one
        ``object.__setattr__`` per field, in Python) cost more to unpickle than the rest of them."""
        return Location, _LOCATION_FIELDS(self)


_LOCATION_FIELDS = attrgetter("segment", "sequence", "field", "repetition", "component", "subcomponent")


@dataclass(frozen=True, slots=True)
class Problem:
    """One ERR segment: an error code of table 0357, where, and a PHI-free explanation."""

    code: str
    text: str
    location: Location | None = None
    severity: str = "E"


@dataclass
class V2Error(Exception):
    """A message that cannot be applied: ``ack_code`` AE or AR with one or more problems."""

    ack_code: str
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        Exception.__init__(self, self.summary)

    @property
    def summary(self) -> str:
        """A short PHI-free reason for logs and the message log: ``AE 101 PID^1^3``."""
        first = self.problems[0] if self.problems else None
        where = f" {first.location}" if first and first.location else ""
        return f"{self.ack_code} {first.code if first else ''}{where}".strip()


def reject(code: str, text: str, location: Location | None = None) -> V2Error:
    """An AR: the message cannot be processed at all."""
    return V2Error("AR", [Problem(code, text, location)])


def content_error(code: str, text: str, location: Location | None = None) -> V2Error:
    """An AE: the message's content is wrong."""
    return V2Error("AE", [Problem(code, text, location)])
