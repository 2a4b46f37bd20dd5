"""Every outbox queue the CalAIM workflow writes has a reader, and every reader's queue is written
(gateway/calaim/events.py ``CONSUMERS``; docs/calaim-workflow.md "Outbox topics").

Outbox retention purges delivered rows only (docs/outbox.md), so a queue nobody reads grows for ever:
``calaim.referral-status>files`` and ``calaim.service>files`` did until session 6. ``READERS`` is the
registry of the code that claims outbox queues; a consumer added to ``CONSUMERS`` without its reader (or a
reader of a queue nobody writes) fails here."""

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
    assert events.CONSUMERS[events.SERVICE] == () and not events.wanted(events.SERVICE)
    assert events.events_of(events.SERVICE, stored=stored, payload={"units": 2}) == []
    (row,) = events.events_of(events.REFERRAL_STATUS, stored=stored, payload={"taskStatus": "accepted"})
    assert (row.topic, row.dedupe_key) == ("calaim.referral-status>hl7v2", "Procedure/p1/_history/1")
