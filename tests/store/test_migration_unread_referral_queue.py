"""Migration 0013 (gateway/store/migrations/versions/0013_unread_referral_queue.py) drops the outbox rows of
``calaim.referral>hl7v2`` (no reader since session 7), and only those, but never the newest row of the table
(ids are never handed out twice: it is marked delivered instead), on both dialects."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, insert, select

from gateway.store.migrate import _config
from gateway.store.schema import outbox

QUEUE = "calaim.referral>hl7v2"


def _rows(topics: list[str]) -> list[dict[str, object]]:
    return [
        {
            "topic": t,
            "dedupe_key": f"ServiceRequest/{n}/_history/1",
            "payload": b"{}",
            "created_at": 7,
            "available_at": 1,
        }
        for n, t in enumerate(topics)
    ]


def _upgraded(url: str, topics: list[str], target: str) -> list[tuple[object, ...]]:
    """The outbox's (topic, delivered_at) rows after ``topics`` were written at revision 0012 and the
    store was upgraded to ``target``."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(_config(conn), "0012")
        with engine.begin() as conn:
            conn.execute(insert(outbox), _rows(topics))
        with engine.begin() as conn:
            command.upgrade(_config(conn), target)
        with engine.connect() as conn:
            left = conn.execute(select(outbox.c.topic, outbox.c.delivered_at).order_by(outbox.c.id)).all()
    finally:
        engine.dispose()
    return [tuple(r) for r in left]


def test_rows_of_the_referral_queue_are_dropped_but_the_newest(empty_database_url: str) -> None:
    topics = [QUEUE, "calaim.referral-status>hl7v2", QUEUE, "calaim.authorization>files", QUEUE]
    assert _upgraded(empty_database_url, topics, "0013") == [
        ("calaim.referral-status>hl7v2", None),
        ("calaim.authorization>files", None),
        (QUEUE, 7),  # the newest row: kept, delivered (retention purges it once it is not the newest)
    ]


def test_nothing_else_is_touched(empty_database_url: str) -> None:
    topics = [QUEUE, "calaim.referral-status>hl7v2", "calaim.authorization>hl7v2"]
    assert _upgraded(empty_database_url, topics, "head") == [
        ("calaim.referral-status>hl7v2", None),
        ("calaim.authorization>hl7v2", None),
    ]
