"""Seeded synthetic CalAIM data: members (Patient + Coverage) with a referral (ServiceRequest), the Task
that tracks it and an Encounter, all referencing each other. Never real member data.

Every "family" is five resources. ``family(rng, n)`` builds one with ``urn:uuid`` references for a
transaction Bundle; ``Generator`` turns a seed into families, Bundles, single-create bodies and the pools
of values the search benchmark queries with.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

Json = dict[str, Any]

CIN_SYSTEM = "urn:oid:2.16.840.1.113883.4.1.99.1"
"""Medi-Cal client index number (synthetic OID arc)."""
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.4.1.99.2.1"
REFERRAL_SYSTEM = "urn:oid:2.16.840.1.113883.4.1.99.3"
TASK_SYSTEM = "urn:oid:2.16.840.1.113883.4.1.99.4"
ENCOUNTER_SYSTEM = "urn:oid:2.16.840.1.113883.4.1.99.5"
TYPES_PER_FAMILY = ("Patient", "Coverage", "ServiceRequest", "Task", "Encounter")
FAMILY_SIZE = len(TYPES_PER_FAMILY)

FAMILIES = (
    "Garcia",
    "Hernandez",
    "Lopez",
    "Martinez",
    "Gonzalez",
    "Rodriguez",
    "Perez",
    "Sanchez",
    "Ramirez",
    "Torres",
    "Flores",
    "Rivera",
    "Gomez",
    "Diaz",
    "Nguyen",
    "Tran",
    "Le",
    "Pham",
    "Kim",
    "Park",
    "Lee",
    "Chen",
    "Wang",
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "White",
    "Harris",
    "Martin",
    "Thompson",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Adams",
    "Nelson",
    "Hill",
    "Campbell",
    "Mitchell",
    "Roberts",
    "Carter",
    "Phillips",
    "Evans",
    "Turner",
    "Parker",
    "Collins",
    "Edwards",
    "Stewart",
    "Morris",
    "Murphy",
    "Cook",
    "Rogers",
    "Morgan",
    "Peterson",
    "Cooper",
    "Reed",
    "Bailey",
    "Bell",
    "Kelly",
    "Howard",
    "Ward",
    "Cox",
    "Richardson",
    "Wood",
    "Watson",
)
GIVEN = (
    "Maria",
    "Jose",
    "Juan",
    "Luis",
    "Carlos",
    "Ana",
    "Rosa",
    "Sofia",
    "Camila",
    "Diego",
    "Miguel",
    "Elena",
    "Lucia",
    "Mateo",
    "Daniel",
    "Isabella",
    "Olivia",
    "Emma",
    "Liam",
    "Noah",
    "James",
    "Linh",
    "Minh",
    "Thanh",
    "Mai",
    "Hoa",
    "Jin",
    "Min",
    "Ji",
    "Wei",
    "Li",
    "Mei",
    "David",
    "Sarah",
    "Michael",
    "Jennifer",
    "Robert",
    "Linda",
    "William",
    "Elizabeth",
    "Patricia",
    "John",
    "Mary",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Karen",
    "Charles",
    "Nancy",
)
CITIES = (
    ("Santa Ana", "92701"),
    ("Anaheim", "92801"),
    ("Irvine", "92618"),
    ("Garden Grove", "92840"),
    ("Huntington Beach", "92648"),
    ("Orange", "92866"),
    ("Fullerton", "92831"),
    ("Costa Mesa", "92626"),
    ("Westminster", "92683"),
    ("Buena Park", "92620"),
)
STREETS = (
    "Main",
    "Bristol",
    "Harbor",
    "Beach",
    "Katella",
    "Chapman",
    "Lincoln",
    "Euclid",
    "Magnolia",
    "Brookhurst",
    "Edinger",
    "Warner",
)
PLANS = ("Organization/hn-calopt", "Organization/hn-kaiser", "Organization/hn-molina")
PROVIDERS = tuple(f"Organization/ecm-provider-{n}" for n in range(1, 41))
ECM_CODES = (
    ("G9008", "Coordinated care fee, physician coordinated care oversight services"),
    ("T1016", "Case management, each 15 minutes"),
    ("T2024", "Service assessment/plan of care development"),
    ("H0044", "Supported housing, per month"),
    ("T2041", "Supports brokerage, self-directed, per 15 minutes"),
)
TASK_STATUSES = ("requested", "received", "accepted", "in-progress", "completed", "rejected")
EPOCH = date(2023, 1, 1)
DAYS = 730
"""Service dates spread over two years from ``EPOCH``."""


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(frozen=True, slots=True)
class Family:
    """One member and the workflow around them: five resources and their ``urn:uuid`` fullUrls."""

    number: int
    full_urls: tuple[str, ...]
    resources: tuple[Json, ...]

    @property
    def cin(self) -> str:
        """The member's Medi-Cal CIN (the Patient identifier the searches use)."""
        return cin_of(self.number)


def cin_of(number: int) -> str:
    """The synthetic CIN of family ``number``: 9 characters, unique per family."""
    return f"9{number:07d}A"


def family(rng: random.Random, number: int) -> Family:
    """Build family ``number``: the Patient, its Coverage, a referral, its Task and an Encounter."""
    urls = tuple(f"urn:uuid:{_uuid(rng)}" for _ in TYPES_PER_FAMILY)
    pat, cov, sr = urls[0], urls[1], urls[2]
    last, first = rng.choice(FAMILIES), rng.choice(GIVEN)
    city, zip_code = rng.choice(CITIES)
    plan = rng.choice(PLANS)
    provider = rng.choice(PROVIDERS)
    service_day = EPOCH + timedelta(days=rng.randrange(DAYS))
    authored = f"{service_day.isoformat()}T{rng.randrange(8, 18):02d}:{rng.randrange(60):02d}:00-08:00"
    code, display = rng.choice(ECM_CODES)
    birth = date(1940, 1, 1) + timedelta(days=rng.randrange(365 * 65))
    patient: Json = {
        "resourceType": "Patient",
        "identifier": [
            {"use": "official", "system": CIN_SYSTEM, "value": cin_of(number)},
            {"system": MRN_SYSTEM, "value": f"MRN{rng.randrange(10**8):08d}"},
        ],
        "active": True,
        "name": [{"use": "official", "family": last, "given": [first, rng.choice(GIVEN)]}],
        "telecom": [{"system": "phone", "value": f"714-555-{rng.randrange(10000):04d}", "use": "mobile"}],
        "gender": rng.choice(("female", "male", "other", "unknown")),
        "birthDate": birth.isoformat(),
        "address": [
            {
                "use": "home",
                "line": [f"{rng.randrange(100, 9999)} {rng.choice(STREETS)} St"],
                "city": city,
                "state": "CA",
                "postalCode": zip_code,
            }
        ],
        "managingOrganization": {"reference": plan},
    }
    coverage: Json = {
        "resourceType": "Coverage",
        "identifier": [{"system": CIN_SYSTEM, "value": cin_of(number)}],
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "SUBSIDIZ"}]},
        "subscriberId": cin_of(number),
        "beneficiary": {"reference": pat},
        "relationship": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "code": "self"}]
        },
        "period": {"start": f"{EPOCH.year}-01-01", "end": f"{EPOCH.year + 2}-12-31"},
        "payor": [{"reference": plan}],
    }
    service_request: Json = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": REFERRAL_SYSTEM, "value": f"REF-{number:08d}"}],
        "status": rng.choice(("active", "completed", "active", "revoked")),
        "intent": "order",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005", "display": "Referral"}]}],
        "code": {
            "coding": [{"system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "code": code}],
            "text": display,
        },
        "subject": {"reference": pat},
        "authoredOn": authored,
        "requester": {"reference": plan},
        "performer": [{"reference": provider}],
        "insurance": [{"reference": cov}],
    }
    task: Json = {
        "resourceType": "Task",
        "identifier": [{"system": TASK_SYSTEM, "value": f"TASK-{number:08d}"}],
        "basedOn": [{"reference": sr}],
        "status": rng.choice(TASK_STATUSES),
        "intent": "order",
        "priority": "routine",
        "focus": {"reference": sr},
        "for": {"reference": pat},
        "authoredOn": authored,
        "lastModified": authored,
        "requester": {"reference": plan},
        "owner": {"reference": provider},
    }
    end_day = service_day + timedelta(days=rng.randrange(0, 3))
    encounter: Json = {
        "resourceType": "Encounter",
        "identifier": [{"system": ENCOUNTER_SYSTEM, "value": f"ENC-{number:08d}"}],
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "390906007", "display": "Follow-up"}]}],
        "subject": {"reference": pat},
        "basedOn": [{"reference": sr}],
        "period": {
            "start": f"{service_day.isoformat()}T09:00:00-08:00",
            "end": f"{end_day.isoformat()}T10:00:00-08:00",
        },
        "serviceProvider": {"reference": provider},
    }
    return Family(number, urls, (patient, coverage, service_request, task, encounter))


def transaction(families: list[Family]) -> Json:
    """A transaction Bundle that creates every resource of ``families`` (https://hl7.org/fhir/R4/http.html#transaction)."""
    entries = [
        {"fullUrl": url, "resource": res, "request": {"method": "POST", "url": res["resourceType"]}}
        for fam in families
        for url, res in zip(fam.full_urls, fam.resources, strict=True)
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def with_ids(fam: Family, ids: tuple[str, ...]) -> list[Json]:
    """The family's resources with ``urn:uuid`` references replaced by ``Type/id`` (as a transaction
    stores them); ``ids[k]`` is the id of resource ``k``."""
    mapping = {
        url: f"{res['resourceType']}/{rid}" for url, res, rid in zip(fam.full_urls, fam.resources, ids, strict=True)
    }
    return [_replace_refs(res, mapping) for res in fam.resources]


def _replace_refs(node: Any, mapping: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: mapping.get(v, v) if k == "reference" else _replace_refs(v, mapping) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_refs(v, mapping) for v in node]
    return node


@dataclass
class Generator:
    """Deterministic source of families: the same seed gives the same data on every machine."""

    seed: int = 20240601
    next_number: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def families(self, count: int) -> list[Family]:
        """The next ``count`` families."""
        out = [family(self.rng, self.next_number + k) for k in range(count)]
        self.next_number += count
        return out

    def bundles(self, resources: int, entries: int) -> list[Json]:
        """Transaction Bundles of ``entries`` entries (a multiple of 5) holding ``resources`` resources."""
        per_bundle = max(1, entries // FAMILY_SIZE)
        count = max(1, resources // (per_bundle * FAMILY_SIZE))
        return [transaction(self.families(per_bundle)) for _ in range(count)]

    def single_creates(self, count: int) -> list[tuple[str, Json]]:
        """``(type, resource)`` bodies for single creates: whole families, references as ``Type/id``
        to ids the server will not know (references are not resolved on create)."""
        out: list[tuple[str, Json]] = []
        while len(out) < count:
            for fam in self.families(1):
                ids = tuple(_uuid(self.rng) for _ in fam.resources)
                out.extend((res["resourceType"], res) for res in with_ids(fam, ids))
        return out[:count]
