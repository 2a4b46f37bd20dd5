"""Outbox events of the CalAIM workflow (DESIGN.md choice 4): written in the transaction of the change,
consumed by the file and HL7 v2 adapters.

Topics (payloads are references and codes only, never names or other demographics):

- ``calaim.referral``: a referral was taken in and routed (its Task created). No consumer reads it (the
  county learns of a referral from its Task's Pending status event; a REF^I12 to the county for referrals
  that did not come from it is not part of issue 7), so it writes nothing.
- ``calaim.referral-status``: a referral Task's DHCS closed-loop status changed (REFERENCE.md §5).
- ``calaim.authorization``: an authorization was created, modified, reauthorized or terminated
  (the HN reconciliation file, the county RRI: REFERENCE.md §6, §7).
- ``calaim.service``: a provider documented a service with units. No consumer reads it today (the
  weekly ECM activity log is computed by ``$ecm-activity`` from the stored Procedures and Encounters), so
  it writes nothing; a consumer added here needs its reader (``tests/calaim/test_event_readers.py``).

Every event carries ``resource`` (``Type/id``) and ``version`` of the version that caused it; its dedupe
key is ``Type/id/_history/version``, so a rerun unit of work adds no second event.

Each topic fans out to one outbox queue per consumer (``queue(topic, consumer)``, e.g.
``calaim.authorization>files``): consumers deliver and complete their own rows, so the HN reconciliation
file and the county RRI each see every change exactly once, whatever the other one does. A queue is
written only for a consumer that reads it (outbox retention purges delivered rows only: a queue nobody
reads grows for ever); ``tests/calaim/test_event_readers.py`` checks ``CONSUMERS`` against the readers.
And an event is written only for a consumer that acts on it: the ``hl7v2`` consumer (the county's RRI)
gets the events of county referrals only (``gateway.calaim.county.is_county_referral``, decided here when
the event is written, from the referral as it is in the change's transaction), and the ``files`` consumer
(the HN reconciliation file) the ``calaim.authorization`` events of the plan's authorizations only: an
authorization the HN owns changes through the HN's own file, which is not sent back to it.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.calaim.county import County, is_county_referral
from gateway.errors import InternalError
from gateway.fhir.context import Context
from gateway.store.outbox import NewEvent, enqueue, enqueue_many
from gateway.store.repository import StoredResource
from gateway.types import JSONObject

REFERRAL = "calaim.referral"
REFERRAL_STATUS = "calaim.referral-status"
AUTHORIZATION = "calaim.authorization"
SERVICE = "calaim.service"

FILES = "files"
"""Consumer: the HN file exchange (adapters/files)."""
HL7V2 = "hl7v2"
"""Consumer: the county HL7 v2 interface (adapters/hl7v2); only the events of county referrals."""
HN_PARTY = "hn"
"""``responsibleParty`` of an authorization the member's HN owns: its events have no ``files`` row."""

CONSUMERS: dict[str, tuple[str, ...]] = {
    REFERRAL: (),
    REFERRAL_STATUS: (HL7V2,),
    AUTHORIZATION: (FILES, HL7V2),
    SERVICE: (),
}
"""Which consumers receive each topic; a topic's event is written once per consumer, so a topic without
consumers writes nothing. Only queues somebody reads: ``calaim.authorization>files`` (the HN
reconciliation file, adapters/files/exports.py) and the two ``>hl7v2`` queues (the county RRI,
adapters/hl7v2/outbound.py), the latter for county referrals only (``consumers``). The HN files need no
closed-loop status or service events: the ECM activity log reads the stored services through
``$ecm-activity``, and the statuses are the Task's versions; the county needs no intake event (its RRI
answers the Task's status events) (docs/calaim-workflow.md "Outbox topics")."""


def queues() -> list[str]:
    """Every outbox queue the workflow writes (``queue(topic, consumer)`` of ``CONSUMERS``)."""
    return [queue(topic, consumer) for topic, consumers in CONSUMERS.items() for consumer in consumers]


def wanted(topic: str) -> bool:
    """Whether ``topic`` has a consumer (else its events are not even built)."""
    return bool(CONSUMERS[topic])


def consumers(topic: str, *, county: bool, hn_owned: bool = False) -> tuple[str, ...]:
    """The consumers an event of ``topic`` is written for: ``CONSUMERS[topic]``, without ``hl7v2`` unless
    the event's referral is a county referral (``county``), and without ``files`` for a ``calaim.authorization``
    event of an authorization the member's HN owns (``hn_owned``: responsible party ``hn``; the
    reconciliation file carries the plan's changes only, an HN's own are not sent back to it). A pure function."""
    every = CONSUMERS[topic]
    if hn_owned and topic == AUTHORIZATION:
        every = tuple(c for c in every if c != FILES)
    return every if county or HL7V2 not in every else tuple(c for c in every if c != HL7V2)


def is_hn_owned(payload: JSONObject) -> bool:
    """Whether an event's payload is of an authorization the member's HN owns (``responsibleParty`` ``hn``)."""
    return payload.get("responsibleParty") == HN_PARTY


def queue(topic: str, consumer: str) -> str:
    """The outbox topic name of ``consumer``'s queue of ``topic`` events."""
    return f"{topic}>{consumer}"


def emit(ctx: Context, *, topic: str, stored: StoredResource, payload: JSONObject, referral: JSONObject | None) -> None:
    """Enqueue ``payload`` for ``topic`` in ``ctx``'s write transaction, keyed by the stored version.
    ``referral``: the event's referral as it is in the transaction, which the caller has at hand (None: the
    event has none, so it is no county referral's); it decides the ``hl7v2`` row (``consumers``)."""
    if ctx.tx is None:
        raise InternalError("outbox events are written inside the change's transaction")
    county = HL7V2 in CONSUMERS[topic] and is_county_referral(referral, County.of(ctx.settings))
    for event in events_of(topic, stored=stored, payload=payload, county=county):
        enqueue(ctx.tx.conn, topic=event.topic, payload=event.payload, dedupe_key=event.dedupe_key)


def events_of(topic: str, *, stored: StoredResource, payload: JSONObject, county: bool) -> list[NewEvent]:
    """The outbox rows ``emit`` writes for ``topic`` (one per consumer of ``consumers``), to enqueue later
    with ``emit_many``. ``county``: whether the event's referral is a county referral (its ``hl7v2`` row);
    an HN-owned authorization's event has no ``files`` row (``consumers``)."""
    targets = consumers(topic, county=county, hn_owned=is_hn_owned(payload))
    if not targets:
        return []
    key = f"{stored.res_type}/{stored.res_id}/_history/{stored.version_id}"
    body = {"resource": f"{stored.res_type}/{stored.res_id}", "version": stored.version_id, **payload}
    return [NewEvent(queue(topic, consumer), body, key) for consumer in targets]


def emit_many(ctx: Context, rows: Sequence[NewEvent]) -> None:
    """Enqueue ``rows`` (``events_of``), in order, in ``ctx``'s write transaction with one executemany
    (``outbox.enqueue_many``): the batched writes' events, the rows ``emit`` would write one by one."""
    if ctx.tx is None:
        raise InternalError("outbox events are written inside the change's transaction")
    enqueue_many(ctx.tx.conn, rows)
