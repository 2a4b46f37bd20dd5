"""Migration 0011 (gateway/store/migrations/versions/0011_unread_outbox_queues.py) drops the outbox rows of
the queues nobody reads, and only those, on both dialects."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, insert, select

from gateway.store.migrate import _config, head_revision
from gateway.store.schema import outbox


def test_rows_of_unread_queues_are_dropped(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            command.upgrade(_config(conn), "0010")
        topics = ["calaim.referral-status>files", "calaim.authorization>files", "calaim.service>files"]
        topics += ["calaim.referral-status>hl7v2", "calaim.service>other"]
        rows = [
            {"topic": t, "dedupe_key": f"Task/{n}/_history/1", "payload": b"{}", "created_at": 1, "available_at": 1}
            for n, t in enumerate(topics)
        ]
        with engine.begin() as conn:
            conn.execute(insert(outbox), rows)
        with engine.begin() as conn:
            command.upgrade(_config(conn), "head")
        with engine.connect() as conn:
            left = [r.topic for r in conn.execute(select(outbox.c.topic).order_by(outbox.c.id))]
        assert left == ["calaim.authorization>files", "calaim.referral-status>hl7v2", "calaim.service>other"]
        assert head_revision() is not None
    finally:
        engine.dispose()


def test_the_newest_row_is_kept_delivered_so_no_outbox_id_is_handed_out_twice(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            command.upgrade(_config(conn), "0010")
        topics = ["calaim.service>files", "calaim.authorization>files", "calaim.referral-status>files"]
        rows = [
            {"topic": t, "dedupe_key": f"Task/{n}/_history/1", "payload": b"{}", "created_at": 7, "available_at": 1}
            for n, t in enumerate(topics)
        ]
        with engine.begin() as conn:
            conn.execute(insert(outbox), rows)
            newest = conn.execute(select(outbox.c.id).order_by(outbox.c.id.desc()).limit(1)).scalar_one()
        with engine.begin() as conn:
            command.upgrade(_config(conn), "0011")
        with engine.connect() as conn:
            left = conn.execute(select(outbox.c.id, outbox.c.topic, outbox.c.delivered_at).order_by(outbox.c.id)).all()
        assert [tuple(r)[1:] for r in left] == [
            ("calaim.authorization>files", None),
            ("calaim.referral-status>files", 7),  # the newest: kept, delivered (retention purges it later)
        ]
        assert left[-1].id == newest
    finally:
        engine.dispose()
