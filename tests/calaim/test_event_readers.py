"""Every outbox queue the CalAIM workflow writes has a reader, and every reader's queue is written
(gateway/calaim/events.py ``CONSUMERS``; docs/calaim-workflow.md "Outbox topics").

Outbox retention purges delivered rows only (docs/outbox.md), so a queue nobody reads grows for ever:
``calaim.referral-status>files`` and ``calaim.service>files`` did until session 6, ``calaim.referral>hl7v2``
(read, but every row completed unsent) until session 7. ``READERS`` is the registry of the code that claims
outbox queues; a consumer added to ``CONSUMERS`` without its reader (or a reader of a queue nobody writes)
fails here. And the ``hl7v2`` reader sends only county referrals' events, so only those are written for it."""

from __future__ import annotations

from adapters.files import exports
from adapters.hl7v2 import outbound
from gateway.calaim import events
from gateway.store.repository import StoredResource

READERS: dict[str, frozenset[str]] = {
    "adapters/files/exports.py: the HN reconciliation file": frozenset({exports.QUEUE}),
    "adapters/hl7v2/outbound.py: the county's RRI messages": frozenset(outbound.QUEUES),
}
"""The queues each reader claims (``outbox.claim`` / ``OutboxWorker``)."""


def test_every_queue_written_has_a_reader() -> None:
    written = set(events.queues())
    read = set().union(*READERS.values())
    assert written - read == set(), "queues nobody reads: add their reader to READERS or drop the consumer"
    assert read - written == set(), "queues a reader waits on that the workflow never writes"
    assert len(written) == len(events.queues())  # no queue twice


def test_a_topic_without_consumers_builds_no_event() -> None:
    stored = StoredResource(1, "Procedure", "p1", 1, 0, False, b"{}")
    for topic in (events.SERVICE, events.REFERRAL):
        assert events.CONSUMERS[topic] == () and not events.wanted(topic)
        assert events.events_of(topic, stored=stored, payload={"units": 2}, county=True) == []
    (row,) = events.events_of(events.REFERRAL_STATUS, stored=stored, payload={"taskStatus": "accepted"}, county=True)
    assert (row.topic, row.dedupe_key) == ("calaim.referral-status>hl7v2", "Procedure/p1/_history/1")


def test_the_county_s_queues_get_county_referrals_events_only() -> None:
    """``hl7v2`` rows only for county referrals; the other consumers' rows whatever the referral."""
    stored = StoredResource(1, "CoverageEligibilityResponse", "a1", 2, 0, False, b"{}")
    assert events.events_of(events.REFERRAL_STATUS, stored=stored, payload={}, county=False) == []
    (row,) = events.events_of(events.AUTHORIZATION, stored=stored, payload={"kind": "initial"}, county=False)
    assert row.topic == "calaim.authorization>files" and row.payload["version"] == 2
    both = events.events_of(events.AUTHORIZATION, stored=stored, payload={"kind": "initial"}, county=True)
    assert [r.topic for r in both] == ["calaim.authorization>files", "calaim.authorization>hl7v2"]
    for topic in events.CONSUMERS:
        assert set(events.consumers(topic, county=True)) == set(events.CONSUMERS[topic])
        assert events.HL7V2 not in events.consumers(topic, county=False)
