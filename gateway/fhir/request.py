"""Plain request and response objects of the FHIR core.

A route in the web layer, a batch/transaction entry, an HL7 v2 message handler and a file row
all become a ``FhirRequest``; the core answers with a ``FhirResponse`` (DESIGN.md: the FHIR core
does not know FastAPI).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from gateway.auth.grant import Grant
from gateway.fhir.model_pool import Judgement
from gateway.search.dates import from_micros
from gateway.store.repository import StoredResource
from gateway.types import JSONObject, QueryParams

FHIR_JSON = "application/fhir+json"


@dataclass
class FhirRequest:
    """One FHIR interaction request, relative to the FHIR base (https://hl7.org/fhir/R4/http.html)."""

    method: str
    path: str
    """Path below the base without leading slash: ``Patient/123/_history/2``; "" is the base itself."""
    query: QueryParams = field(default_factory=list)
    headers: Mapping[str, str] = field(default_factory=dict)
    """Request headers with lower-case names."""
    body: bytes | None = None
    resource: JSONObject | None = None
    """The already parsed body (bundle entries), used instead of ``body`` when set."""
    base_url: str = ""
    assigned_id: str | None = None
    """A transaction's pre-assigned id for a create (so ``urn:uuid`` references can point at it)."""
    condition_resolved: bool = False
    """A transaction already ran this create's If-None-Exist search (only the key is still claimed)."""
    model_checked: bool = False
    """The R4B model pass of ``resource`` was judged elsewhere to add nothing to the rest of validation (the
    HL7 v2 parse workers: adapters/hl7v2/prevalidate.py); the interaction runs the rest only."""
    judgement: Judgement | None = None
    """Validation and index rows of ``resource`` computed elsewhere (a transaction's ``model_pool``): the
    interaction answers with its errors instead of validating, and stores its rows when the content is
    still the judged one."""
    client_address: str | None = None
    """The caller's network address (for the audit trail), set by the web front door."""
    grant: Grant | None = None
    """The caller's access (SMART token); ``None``: the gateway itself (adapters, workflow), unrestricted.
    The web front door always sets it when authorization is enforced."""

    def header(self, name: str) -> str | None:
        """A header value by lower-case name."""
        return self.headers.get(name)

    def prefer(self, key: str) -> str | None:
        """A token of the Prefer header (RFC 7240), e.g. ``prefer("return")`` → ``minimal``."""
        raw = self.headers.get("prefer")
        if not raw:
            return None
        for part in raw.split(","):
            name, _, value = part.strip().partition("=")
            if name.strip().lower() == key:
                return value.strip().strip('"')
        return None


@dataclass
class FhirResponse:
    """The core's answer: status, headers and the body bytes (already FHIR JSON)."""

    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = FHIR_JSON
    stored: StoredResource | None = None
    """The version a write produced or a read served (used for transaction-response entries)."""


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(micros: int) -> str:
    """An HTTP-date (RFC 7231 §7.1.1.1, IMF-fixdate: ``Sun, 06 Nov 1994 08:49:37 GMT``) for Last-Modified;
    English names whatever the locale, as the RFC requires. The resolution is a second: remembered per
    second (formatting costs as much as the rest of a read's headers)."""
    return _http_date_of_second(micros // 1_000_000)


@lru_cache(maxsize=4096)
def _http_date_of_second(second: int) -> str:
    t = from_micros(second * 1_000_000)
    return (
        f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} "
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} GMT"
    )
