"""The county message profiles (docs/hl7v2.md): which messages, versions and segment sequences the
gateway takes, which fields each requires, and the mapping settings the plan configures.

Segment sequences follow the v2.5.1 abstract message syntax of REF_I12, ADT_A01 (A01, A04, A08) and
ADT_A03 (chapter 11 §11.3.1, chapter 3 §3.3), narrowed to what the county sends: RF1 is required in a
REF^I12 (its service code is the referral), PV1 in an ADT. hl7apy's tolerant parse accepts segments in
any order, so the sequence is checked here, as a regular expression over the segment names (Z-segments,
site-defined, are allowed anywhere and ignored).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from mappings.hl7v2.errors import (
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE,
    UNSUPPORTED_EVENT,
    UNSUPPORTED_MESSAGE_TYPE,
    Location,
    Problem,
    V2Error,
    content_error,
    reject,
)
from mappings.hl7v2.message import V2Message

VERSIONS = ("2.5", "2.5.1")
"""MSH-12 versions the profiles are written for; others are rejected (AR 203)."""

REF_EVENTS = ("I12",)
ADT_EVENTS = ("A01", "A03", "A04", "A08")
SUPPORTED: dict[str, tuple[str, ...]] = {"REF": REF_EVENTS, "ADT": ADT_EVENTS}

_REF_SEQUENCE = re.compile(
    r"^MSH( SFT)* RF1( AUT( CTD)?)*( PRD( CTD)*)+ PID( NK1)*( GT1)*( IN1( IN2)?( IN3)?)*( ACC)?( DG1)*( DRG)*"
    r"( AL1)*( PR1( AUT( CTD)?)?)*( OBR( NTE)*( OBX( NTE)*)*)*( PV1( PV2)?)?( NTE)*$"
)
_ADT_SEQUENCE = re.compile(
    r"^MSH( SFT)* EVN PID( PD1)?( ROL)*( NK1)* PV1( PV2)?"
    r"( (ROL|DB1|OBX|AL1|DG1|DRG|PR1|GT1|IN1|IN2|IN3|ACC|UB1|UB2|PDA|NTE))*$"
)
SEQUENCES = {"REF": _REF_SEQUENCE, "ADT": _ADT_SEQUENCE}

READ_SEGMENTS: dict[str, frozenset[str]] = {
    "REF": frozenset({"MSH", "RF1", "AUT", "PRD", "PID", "IN1", "DG1", "PV1", "NTE"}),
    "ADT": frozenset({"MSH", "EVN", "PID", "PV1", "DG1"}),
}
"""Segments whose fields a mapping (``ref_i12``, ``adt``) or the checks below read, per message type (MSH-9.1).
hl7apy parses the others by name only (``mappings.hl7v2.message``); a mapping that starts reading one
must add it here (tests/hl7v2/test_hl7apy_cache.py maps messages with and without their content)."""

REQUIRED_FIELDS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "REF": (
        ("RF1", 3, "RF1-3 (referral type) carries the CalAIM service (coding system CALAIMSVC)"),
        ("PID", 3, "PID-3 (patient identifier list) carries the CIN (type MA) or the county MRN (type MR)"),
        ("PID", 5, "PID-5 (patient name) is required"),
        ("PRD", 1, "PRD-1 (provider role) is required"),
    ),
    "ADT": (
        ("PID", 3, "PID-3 (patient identifier list) carries the CIN (type MA) or the county MRN (type MR)"),
        ("PID", 5, "PID-5 (patient name) is required"),
        ("PV1", 2, "PV1-2 (patient class) is required"),
        ("PV1", 19, "PV1-19 (visit number) identifies the encounter"),
    ),
}
"""Fields the profiles require beyond the standard's (ERR 101 at the field when empty)."""


@dataclass(frozen=True)
class MappingConfig:
    """What the plan configures for the county interface (from Settings and profiles/<plan>/)."""

    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("America/Los_Angeles"))
    """Local times without an offset are in this zone (the plan's)."""
    county_organization: str = "county-hca-bhs"
    plan_organization: str = "calop"
    mrn_system: str = "https://fhir.calaim-gateway.org/sid/county-hca-bhs/mrn"
    referral_id_system: str = "https://fhir.calaim-gateway.org/sid/county-hca-bhs/referral-id"
    visit_id_system: str = "https://fhir.calaim-gateway.org/sid/county-hca-bhs/visit-number"
    organizations_by_npi: dict[str, str] = field(default_factory=dict)
    """NPI → Organization id of the plan's configured Organizations (PRD-7 → requester/performer)."""
    organization_names: dict[str, str] = field(default_factory=dict)
    plan_payer_ids: frozenset[str] = frozenset({"calop"})
    """IN1-3 values (case-insensitive) that name the plan: only those IN1 become a Coverage."""


def kind_of(message: V2Message) -> str:
    """``REF`` or ``ADT`` after checking MSH-9; AR 200/201 for what the profiles do not take."""
    header = message.header
    events = SUPPORTED.get(header.message_type)
    if events is None:
        text = f"MSH-9 message type {header.message_type[:8]!r} is not in the county profiles (REF, ADT)"
        raise reject(UNSUPPORTED_MESSAGE_TYPE, text, Location("MSH", 1, 9, 0, 1))
    if header.trigger_event not in events:
        text = f"MSH-9 event {header.trigger_event[:8]!r} is not supported for {header.message_type}"
        raise reject(UNSUPPORTED_EVENT, text, Location("MSH", 1, 9, 0, 2))
    return header.message_type


def check(message: V2Message, kind: str) -> None:
    """Segment sequence and required fields of the profile (AE 100 / 101, every problem listed)."""
    names = [n for n in message.names if not n.startswith("Z")]
    if not SEQUENCES[kind].match(" ".join(names)):
        raise content_error(SEGMENT_SEQUENCE, _sequence_text(kind, names), _first_misplaced(kind, names))
    problems: list[Problem] = []
    for name, number, text in REQUIRED_FIELDS[kind]:
        for segment in message.all(name):
            if not segment.reps(number) or not any(any(c[0] for c in rep) for rep in segment.reps(number)):
                problems.append(Problem(REQUIRED_FIELD_MISSING, text, segment.where(number)))
    if problems:
        raise V2Error("AE", problems)


def _sequence_text(kind: str, names: list[str]) -> str:
    expected = {"REF": "MSH RF1 [AUT] PRD... PID [IN1] [DG1] [PV1] [NTE]", "ADT": "MSH EVN PID PV1 [...]"}[kind]
    return f"segments are not in the {kind} profile's sequence ({expected})"


def _first_misplaced(kind: str, names: list[str]) -> Location:
    """The first segment whose prefix no longer fits the grammar (the ERR-2 of a sequence error)."""
    pattern = SEQUENCES[kind].pattern.rstrip("$")
    counts: dict[str, int] = {}
    for i, name in enumerate(names):
        counts[name] = counts.get(name, 0) + 1
        prefix = " ".join(names[: i + 1])
        if not _prefix_fits(pattern, prefix):
            return Location(name, counts[name])
    return Location(names[-1] if names else "MSH", counts.get(names[-1], 1) if names else 1)


def _prefix_fits(pattern: str, prefix: str) -> bool:
    # A prefix fits when some completion matches; trying every required tail is enough for these grammars.
    for tail in ("", " RF1 PRD PID", " PRD PID", " PID", " EVN PID PV1", " PID PV1", " PV1"):
        if re.match(pattern + "$", prefix + tail):
            return True
    return False
