"""The result of a message map: a FHIR transaction Bundle plus where each part came from.

``sources`` maps FHIR element paths (``ServiceRequest.code``, ``Patient``) to the ERR-2 location of the
v2 field they were mapped from, so that a refusal of the FHIR core or the CalAIM workflow (an
OperationOutcome ``expression``) becomes an ERR segment pointing at the v2 field (docs/hl7v2.md).

Full URLs are ``urn:uuid`` values derived from the message's sender, control id and the entry's role
(UUID v5): the same message always maps to the same Bundle, which keeps the maps pure.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from mappings.hl7v2.datatypes import JSON
from mappings.hl7v2.errors import Location
from mappings.hl7v2.message import V2Message

_NAMESPACE = uuid.UUID("6f1c2b9e-3a57-4c1e-9a0b-5d2e8f7a1c30")


@dataclass
class Mapped:
    """A transaction Bundle (entries in dependency order) and the v2 sources of its elements."""

    bundle: JSON
    sources: dict[str, Location] = field(default_factory=dict)
    entry_sources: dict[str, Location] = field(default_factory=dict)
    """The segment each entry (by full URL) was mapped from: where an entry's refusal is reported."""
    transitional_care: str | None = None
    """For ADT A01/A03/A04: the trigger event; the adapter adds the transitional-care Task when the member
    is enrolled in ECM (that needs the store)."""

    def source_of(self, expression: str) -> Location | None:
        """The v2 location of the longest mapped prefix of a FHIR expression (``ServiceRequest.code.coding[0]``)."""
        best: tuple[int, Location] | None = None
        for path, location in self.sources.items():
            if (expression == path or expression.startswith(path + ".") or expression.startswith(path + "[")) and (
                best is None or len(path) > best[0]
            ):
                best = (len(path), location)
        return best[1] if best else None


def full_url(message: V2Message, role: str) -> str:
    """The deterministic ``urn:uuid`` of one entry of the message's Bundle."""
    header = message.header
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{header.sender}|{header.control_id}|{role}')}"


def entry(url: str, resource: JSON, method: str, target: str, *, if_none_exist: str | None = None) -> JSON:
    """One transaction entry (https://hl7.org/fhir/R4/bundle.html#transaction)."""
    request: JSON = {"method": method, "url": target}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": url, "resource": resource, "request": request}


def transaction(entries: list[JSON]) -> JSON:
    """A transaction Bundle of ``entries``."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
